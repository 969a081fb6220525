"""db.scoped_session: a session object captured at import that always means the
session of the current request or app context."""

from __future__ import annotations

import threading

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import Session
from flask_session_orm import SessionORM

from .conftest import Base
from .conftest import Item
from .conftest import checked_out
from .conftest import count_items


def test_is_a_scoped_session_captured_before_init_app() -> None:
    """It is a real scoped_session, the same object every time, available before
    init_app and outside any context."""
    db = SessionORM()
    captured = db.scoped_session
    assert isinstance(captured, orm.scoped_session)
    assert db.scoped_session is captured
    # Flask-Admin 2 takes an object whose 'session' is the session as a db.
    assert captured.session is captured
    assert SessionORM().scoped_session is not captured


def test_outside_any_context() -> None:
    """Using it outside any context raises an error that says what it stands for."""
    db = SessionORM()
    with pytest.raises(RuntimeError, match="'db.scoped_session' was used outside"):
        db.scoped_session.add(object())
    with pytest.raises(RuntimeError, match="outside of an application context"):
        db.scoped_session()


def test_app_not_registered(app: flask.Flask) -> None:
    """In the context of an app this db was not registered on, the error says so."""
    db = SessionORM()
    with pytest.raises(RuntimeError, match="Did you forget to call 'db.init_app"):
        db.scoped_session()


def test_each_request_its_own_session(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """In each request it is that request's db.session, committed as usual."""
    captured = db.scoped_session
    seen: list[tuple[orm.Session, orm.Session]] = []

    @app.post("/<name>")
    def create(name: str) -> str:
        seen.append((captured(), db.session))
        captured.add(Item(name=name))
        return "ok"

    client = app.test_client()
    assert client.post("/a").status_code == 200
    assert client.post("/b").status_code == 200
    assert [a is b for a, b in seen] == [True, True]
    assert seen[0][0] is not seen[1][0]
    assert count_items(db, app) == 2
    assert checked_out(db, app) == 0


def test_error_response_rolls_back(app: flask.Flask, db: SessionORM) -> None:
    """Work done through it in a request answered with an error is rolled back."""

    @app.post("/")
    def create() -> tuple[str, int]:
        db.scoped_session.add(Item(name="x"))
        db.scoped_session.flush()
        return "no", 400

    assert app.test_client().post("/").status_code == 400
    assert count_items(db, app) == 0


def test_app_context_session(app: flask.Flask, db: SessionORM) -> None:
    """In an app context it is that context's session, committed explicitly."""
    with app.app_context():
        assert db.scoped_session() is db.session
        db.scoped_session.add(Item(name="x"))
        db.scoped_session.commit()
    assert count_items(db, app) == 1


def test_threads_get_their_own_sessions(app: flask.Flask, db: SessionORM) -> None:
    """Concurrent requests in threads never share a session through it."""
    barrier = threading.Barrier(4, timeout=10)
    seen: list[int] = []

    @app.post("/<name>")
    def create(name: str) -> str:
        session = db.scoped_session()
        barrier.wait()
        seen.append(id(session))
        db.scoped_session.add(Item(name=name))
        barrier.wait()
        return "ok"

    statuses: list[int] = []

    def post(name: str) -> None:
        statuses.append(app.test_client().post(f"/{name}").status_code)

    threads = [threading.Thread(target=post, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 4
    assert len(set(seen)) == 4
    assert count_items(db, app) == 4
    assert checked_out(db, app) == 0


def test_remove_closes_the_current_session(app: flask.Flask, db: SessionORM) -> None:
    """remove() closes the context's session: uncommitted work is gone, the
    connection is back in the pool, and the session works afterwards."""
    with app.app_context():
        db.scoped_session.add(Item(name="lost"))
        db.scoped_session.flush()
        assert checked_out(db, app) == 1
        db.scoped_session.remove()
        assert checked_out(db, app) == 0
        assert db.session.get_transaction() is None
        db.scoped_session.add(Item(name="kept"))
        db.scoped_session.commit()
        # A table lock held by the closed transaction would block this.
        db.drop_all(Base)
        db.create_all(Base)
    assert count_items(db, app) == 0


def test_remove_in_request_then_commit(app: flask.Flask, db: SessionORM) -> None:
    """In a request, remove() discards the work before it; the request commits
    what comes after."""

    @app.post("/")
    def create() -> str:
        db.scoped_session.add(Item(name="lost"))
        db.scoped_session.remove()
        db.scoped_session.add(Item(name="kept"))
        return "ok"

    assert app.test_client().post("/").status_code == 200
    with app.app_context():
        assert db.session.scalars(sa.select(Item.name)).all() == ["kept"]


def test_remove_outside_any_context() -> None:
    """remove() outside any context does nothing."""
    db = SessionORM()
    db.scoped_session.remove()
    with pytest.raises(RuntimeError, match="outside of an application context"):
        db.scoped_session()


def test_configure_and_arguments_are_refused(app: flask.Flask, db: SessionORM) -> None:
    """configure(), and calling it with arguments, name the config that applies."""
    with pytest.raises(RuntimeError, match="'SESSION_ORM_SESSION_OPTIONS'"):
        db.scoped_session.configure(autoflush=False)
    with pytest.raises(RuntimeError, match="'SESSION_ORM_SESSION_OPTIONS'"):
        db.scoped_session.session_factory.configure(autoflush=False)
    with app.app_context():
        with pytest.raises(RuntimeError, match="takes no arguments"):
            db.scoped_session(autoflush=False)


def test_session_factory_makes_independent_sessions(
    app: flask.Flask, db: SessionORM
) -> None:
    """session_factory() makes a new session of the current app, not db.session."""
    with app.app_context(), db.scoped_session.session_factory() as session:
        assert isinstance(session, Session)
        assert session is not db.session
        assert session.get_bind() is db.engine


def test_listen_at_import_reaches_every_session(
    app: flask.Flask, db: SessionORM
) -> None:
    """event.listen(db.scoped_session, ...) at import applies to the sessions of
    requests, app contexts and db.sessionmaker."""
    committed: list[orm.Session] = []

    def after_commit(session: orm.Session) -> None:
        committed.append(session)

    sa.event.listen(db.scoped_session, "after_commit", after_commit)
    try:

        @app.post("/")
        def create() -> str:
            db.session.add(Item(name="request"))
            committed.append(db.session)
            return "ok"

        assert app.test_client().post("/").status_code == 200
        with app.app_context():
            db.session.add(Item(name="context"))
            db.session.commit()
            with db.sessionmaker.begin() as session:
                session.add(Item(name="maker"))
    finally:
        sa.event.remove(db.scoped_session, "after_commit", after_commit)
    assert len(committed) == 4
    assert committed[0] is committed[1]
    assert count_items(db, app) == 3


def test_query_property(app: flask.Flask, db: SessionORM) -> None:
    """query_property() gives a legacy Model.query on the current session."""
    Item.query = db.scoped_session.query_property()  # type: ignore[attr-defined]
    try:
        with app.app_context():
            db.session.add(Item(name="x"))
            db.session.flush()
            found = Item.query.filter_by(name="x").one()  # type: ignore[attr-defined]
            assert db.object_session(found) is db.session
    finally:
        del Item.query  # type: ignore[attr-defined]
