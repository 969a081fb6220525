"""Which session belongs to the current request, app context, thread or greenlet."""

from __future__ import annotations

import logging
import threading
import typing as t

import flask
import greenlet
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

from .conftest import Base
from .conftest import Item
from .conftest import checked_out
from .conftest import count_items


@pytest.fixture
def plain(
    database_url: str, tmp_path: t.Any
) -> t.Iterator[tuple[flask.Flask, SessionORM]]:
    """An app and db without pytest-flask's request context (no 'app' fixture)."""
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SESSION_ORM_DATABASE_URL=database_url)
    db = SessionORM(app)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    yield app, db
    with app.app_context():
        db.drop_all(Base)
        db.engine.dispose()


def test_one_session_per_request(
    app: flask.Flask, db: SessionORM, outside_requests: None
) -> None:
    """db.session is one object through a request and another in the next request."""
    seen: list[orm.Session] = []

    @app.get("/")
    def index() -> str:
        seen.extend([db.session, db.session])
        return "ok"

    client = app.test_client()
    client.get("/")
    client.get("/")
    assert seen[0] is seen[1]
    assert seen[2] is seen[3]
    assert seen[0] is not seen[2]


def test_requests_inside_pushed_request_context(
    app: flask.Flask, db: SessionORM
) -> None:
    """With a request context already pushed, the client's requests share one
    session, not the test's, and each commits or rolls back its own transaction.

    pytest-flask pushes one for every test; on Flask <= 3.1 the client's requests
    then share its app context and ``g``, where objects may be cached.
    """
    seen: list[orm.Session] = []

    @app.post("/ok/<name>")
    def ok(name: str) -> str:
        seen.append(db.session)
        db.session.add(Item(name=name))
        return "ok"

    @app.post("/fail/<name>")
    def fail(name: str) -> tuple[str, int]:
        seen.append(db.session)
        db.session.add(Item(name=name))
        db.session.flush()
        return "no", 400

    with app.test_request_context():
        outer = db.session
        client = app.test_client()
        assert client.post("/ok/a").status_code == 200
        assert client.post("/fail/b").status_code == 400
        assert client.post("/ok/c").status_code == 200
        assert len({id(s) for s in seen}) == 1
        assert seen[0] is not outer
        assert db.session is outer
        assert checked_out(db, app) == 0
        # Each request committed or rolled back on its own.
        names = set(outer.scalars(sa.select(Item.name)))
        assert names == {"a", "c"}
    # The test's session belongs to the app context pytest-flask pushed, which
    # the test request context reused: it ends with that context, not before.
    assert db.session is outer


def test_session_per_app_context(plain: tuple[flask.Flask, SessionORM]) -> None:
    """Outside requests there is one session per app context; stacked ones differ."""
    app, db = plain
    with app.app_context():
        outer = db.session
        assert db.session is outer
        outer.add(Item(name="outer"))
        outer.flush()
        with app.app_context():
            inner = db.session
            assert inner is not outer
        # Popping the inner context closed only its own session.
        assert db.session is outer
        assert outer.in_transaction()
        outer.commit()
    with app.app_context():
        assert db.session is not outer
    assert count_items(db, app) == 1


def test_nothing_committed_outside_requests(
    plain: tuple[flask.Flask, SessionORM], caplog: pytest.LogCaptureFixture
) -> None:
    """At app-context teardown uncommitted changes are rolled back, with a warning."""
    app, db = plain
    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        with app.app_context():
            db.session.add(Item(name="flushed"))
            db.session.flush()
            db.session.add(Item(name="pending"))
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "1 new, 0 modified and 0 deleted object(s) not yet flushed" in record.message
    assert "writes already flushed or executed" in record.message


def test_core_write_outside_request_is_reported(
    plain: tuple[flask.Flask, SessionORM], caplog: pytest.LogCaptureFixture
) -> None:
    """A Core write left uncommitted in an app context is named in the warning."""
    app, db = plain
    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        with app.app_context():
            db.session.execute(sa.insert(Item).values(name="core"))
    assert count_items(db, app) == 0
    assert "writes already flushed or executed" in caplog.text


def test_reads_outside_request_warn_nothing(
    plain: tuple[flask.Flask, SessionORM], caplog: pytest.LogCaptureFixture
) -> None:
    """An app context that only read ends quietly."""
    app, db = plain
    with caplog.at_level(logging.WARNING, logger="flask_session_orm"):
        with app.app_context():
            db.session.scalars(sa.select(Item)).all()
    assert caplog.records == []
    assert checked_out(db, app) == 0


def test_explicit_commit_outside_request(plain: tuple[flask.Flask, SessionORM]) -> None:
    """Outside requests an explicit commit keeps the data."""
    app, db = plain
    with app.app_context():
        db.session.add(Item(name="kept"))
        db.session.commit()
    assert count_items(db, app) == 1


def test_threads_never_share(app: flask.Flask, db: SessionORM) -> None:
    """8 threads x 50 requests: no shared session, no uncommitted data seen."""
    sessions: list[orm.Session] = []
    leaks: list[str] = []
    lock = threading.Lock()

    @app.post("/<name>/<int:keep>")
    def write(name: str, keep: int) -> tuple[str, int]:
        session = db.session
        with lock:
            sessions.append(session)
        session.add(Item(name=name if keep else f"pending-{name}"))
        session.flush()
        visible = session.scalars(
            sa.select(Item.name).where(Item.name.like("pending-%"))
        ).all()
        foreign = [v for v in visible if v != f"pending-{name}"]
        if foreign:
            with lock:
                leaks.extend(foreign)
        assert db.session is session
        return "ok", 200 if keep else 400

    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client = app.test_client()
        try:
            for i in range(50):
                status = client.post(f"/t{n}-{i}/{i % 2}").status_code
                assert status == (200 if i % 2 else 400)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert leaks == []
    assert len({id(s) for s in sessions}) == 400
    assert count_items(db, app) == 200
    assert checked_out(db, app) == 0


def test_greenlets_never_share(app: flask.Flask, db: SessionORM) -> None:
    """Two requests interleaved in greenlets keep their own sessions and commits."""
    seen: dict[str, list[orm.Session]] = {}

    @app.post("/<name>")
    def write(name: str) -> tuple[str, int]:
        first = db.session
        first.add(Item(name=name))
        t.cast(t.Any, greenlet.getcurrent().parent).switch()
        seen[name] = [first, db.session]
        return "ok", 200 if name == "keep" else 400

    results: dict[str, int] = {}

    def request(name: str) -> None:
        results[name] = app.test_client().post(f"/{name}").status_code

    one = greenlet.greenlet(lambda: request("keep"))
    two = greenlet.greenlet(lambda: request("drop"))
    one.switch()
    two.switch()
    one.switch()
    two.switch()
    assert results == {"keep": 200, "drop": 400}
    assert seen["keep"][0] is seen["keep"][1]
    assert seen["drop"][0] is seen["drop"][1]
    assert seen["keep"][0] is not seen["drop"][0]
    with app.app_context(), db.engine.connect() as connection:
        assert list(connection.scalars(sa.select(Item.name))) == ["keep"]


def test_one_extension_two_apps(tmp_path: t.Any) -> None:
    """One SessionORM serving two apps keeps their databases and sessions apart."""
    db = SessionORM()
    apps = []
    for name in ("one", "two"):
        app = flask.Flask(name, instance_path=str(tmp_path / name))
        app.config["SESSION_ORM_DATABASE_URL"] = f"sqlite:///{name}.db"
        db.init_app(app)
        apps.append(app)

        @app.post("/")
        def create(name: str = name) -> str:
            db.session.add(Item(name=name))
            return "ok"

        with app.app_context():
            db.create_all(Base)
    for app in apps:
        assert app.test_client().post("/").status_code == 200
    for app in apps:
        with app.app_context():
            assert db.engine.url.database == f"{app.instance_path}/{app.name}.db"
            assert list(db.session.scalars(sa.select(Item.name))) == [app.name]
            db.engine.dispose()


def test_init_app_twice(tmp_path: t.Any) -> None:
    """Calling init_app twice on one app is a clear error."""
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    db = SessionORM(app)
    with pytest.raises(RuntimeError, match="'init_app' was already called"):
        db.init_app(app)
    with pytest.raises(RuntimeError, match="'init_app' was already called"):
        SessionORM(app)


def test_session_without_context() -> None:
    """db.session with no app context says what to do."""
    db = SessionORM()
    with pytest.raises(RuntimeError, match="app.app_context"):
        _ = db.session
    with pytest.raises(RuntimeError, match="outside of application context"):
        _ = db.engine


def test_session_on_unregistered_app(tmp_path: t.Any) -> None:
    """Using db on an app never passed to init_app names the fix."""
    db = SessionORM()
    other = SessionORM()
    app = flask.Flask("lonely", instance_path=str(tmp_path))
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    other.init_app(app)
    with app.app_context():
        with pytest.raises(RuntimeError, match="'lonely' is not registered.*init_app"):
            _ = db.session
        assert other.session is other.session
    bare = flask.Flask("bare", instance_path=str(tmp_path))
    with (
        bare.app_context(),
        pytest.raises(RuntimeError, match="'bare' is not registered"),
    ):
        _ = db.sessionmaker


def test_no_flask_hooks_registered(plain: tuple[flask.Flask, SessionORM]) -> None:
    """init_app registers no before/after/teardown function, so requests that do
    not use the database pay for no hook call; sessions outside requests still end
    with their app context.
    """
    app, db = plain

    @app.get("/")
    def index() -> str:
        return str(len(db.session.scalars(sa.select(Item)).all()))

    assert app.test_client().get("/").data == b"0"
    for functions in (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
    ):
        assert not any(functions.values())
    assert app.teardown_appcontext_funcs == []
    for _ in range(2):
        with app.app_context():
            db.session.add(Item(name="discarded"))
    assert count_items(db, app) == 0
    assert checked_out(db, app) == 0


class CustomFlask(flask.Flask):
    """An app class with its own process_response."""

    def process_response(self, response: flask.Response) -> flask.Response:
        response = super().process_response(response)
        response.headers["X-Custom"] = "yes"
        return response


def test_app_class_with_own_process_response(tmp_path: t.Any) -> None:
    """An app class that overrides process_response keeps it; the decision is
    then an after_request function that runs after the app's others."""
    app = CustomFlask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SESSION_ORM_DATABASE_URL"] = f"sqlite:///{tmp_path}/custom.db"
    db = SessionORM(app)
    with app.app_context():
        db.create_all(Base)

    @app.post("/<name>/<int:status>")
    def create(name: str, status: int) -> tuple[str, int]:
        db.session.add(Item(name=name))
        return "done", status

    @app.after_request
    def veto(response: flask.Response) -> flask.Response:
        if flask.request.view_args and flask.request.view_args["name"] == "vetoed":
            response.status_code = 409
        return response

    client = app.test_client()
    assert client.post("/kept/201").headers["X-Custom"] == "yes"
    assert client.post("/vetoed/201").status_code == 409
    assert app.after_request_funcs[None][0] is not veto
    assert count_items(db, app) == 1
    with app.app_context():
        db.engine.dispose()
