"""The end of a request: commit on success, roll back otherwise, always close."""

from __future__ import annotations

import io
import logging
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as orm
from werkzeug.exceptions import HTTPException

from flask_session_orm import SessionORM

from .conftest import Item
from .conftest import checked_out
from .conftest import count_items


def add_views(app: flask.Flask, db: SessionORM) -> None:
    """Views that add an item named after the path and end in various ways."""

    @app.post("/ok/<name>")
    def ok(name: str) -> str:
        db.session.add(Item(name=name))
        return "ok"

    @app.post("/redirect/<name>")
    def redirect(name: str) -> flask.Response:
        db.session.add(Item(name=name))
        return flask.redirect("/")

    @app.post("/created/<name>")
    def created(name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.flush()
        return "created", 201

    @app.post("/raise/<name>")
    def raise_(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        raise RuntimeError("view failed")

    @app.post("/abort/<name>")
    def abort(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        flask.abort(409)

    @app.post("/status/<int:status>/<name>")
    def status(status: int, name: str) -> tuple[str, int]:
        db.session.add(Item(name=name))
        db.session.flush()
        return "status", status

    @app.post("/core/<name>")
    def core(name: str) -> str:
        # A Core write with no ORM flush must be committed too.
        db.session.execute(sa.insert(Item).values(name=name))
        return "ok"


@pytest.fixture
def views(app: flask.Flask, db: SessionORM) -> flask.testing.FlaskClient:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_views(app, db)
    return app.test_client()


def stored(db: SessionORM, app: flask.Flask) -> set[str]:
    with app.app_context(), db.engine.connect() as connection:
        return set(connection.scalars(sa.select(Item.name)))


@pytest.mark.parametrize("path", ["ok", "redirect", "created", "core"])
def test_success_commits(
    views: flask.testing.FlaskClient, db: SessionORM, app: flask.Flask, path: str
) -> None:
    """2xx and 3xx responses commit the request's writes, ORM and Core alike."""
    response = views.post(f"/{path}/a")
    assert response.status_code < 400
    assert stored(db, app) == {"a"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("raise/a", 500),
        ("abort/a", 409),
        ("status/400/a", 400),
        ("status/404/a", 404),
        ("status/500/a", 500),
        ("status/503/a", 503),
    ],
)
def test_failure_rolls_back(
    views: flask.testing.FlaskClient,
    db: SessionORM,
    app: flask.Flask,
    path: str,
    status: int,
) -> None:
    """An exception, abort(4xx) or a returned 4xx/5xx rolls the request back."""
    assert views.post(f"/{path}").status_code == status
    assert stored(db, app) == set()
    assert checked_out(db, app) == 0


def test_propagated_exception_rolls_back(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """With TESTING's propagated exceptions the request still rolls back and closes."""
    add_views(app, db)
    with pytest.raises(RuntimeError, match="view failed"):
        client.post("/raise/a")
    assert stored(db, app) == set()
    assert checked_out(db, app) == 0


def test_commit_on_success_off(
    app: flask.Flask, database_url: str, tmp_path: t.Any
) -> None:
    """With SESSION_ORM_COMMIT_ON_SUCCESS=False a successful request is rolled back."""
    app.config["SESSION_ORM_COMMIT_ON_SUCCESS"] = False
    db = SessionORM(app)
    with app.app_context():
        db.drop_all(Item.metadata)
        db.create_all(Item.metadata)
    add_views(app, db)

    @app.post("/explicit/<name>")
    def explicit(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.commit()
        return "ok"

    try:
        client = app.test_client()
        assert client.post("/ok/a").status_code == 200
        assert client.post("/explicit/b").status_code == 200
        assert stored(db, app) == {"b"}
    finally:
        with app.app_context():
            db.drop_all(Item.metadata)
            db.engine.dispose()


def test_commit_happens_before_response_is_returned(
    app: flask.Flask, db: SessionORM
) -> None:
    """When the WSGI app returns the response, its data is already committed."""
    add_views(app, db)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/ok/a",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }
    statuses: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers: statuses.append(status))
    # Not yet iterated nor closed: the server has only been handed the response.
    assert statuses == ["200 OK"]
    assert stored(db, app) == {"a"}
    t.cast(t.Any, body).close()


@pytest.mark.parametrize("handled", [True, False], ids=["handler", "no-handler"])
def test_failed_commit_is_an_error_response(
    app: flask.Flask, db: SessionORM, handled: bool
) -> None:
    """A commit that fails (unique violation at flush time) never returns success.

    With an error handler for the exception its response is sent; without one, a
    500. Nothing of the request is stored.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False
    add_views(app, db)
    if handled:

        @app.errorhandler(sa_exc.IntegrityError)
        def conflict(e: sa_exc.IntegrityError) -> tuple[str, int]:
            # The session is usable again in the handler.
            count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
            return f"conflict, {count} stored", 409

    @app.post("/dup")
    def dup() -> str:
        db.session.add(Item(name="b"))
        db.session.add(Item(name="a"))
        return "should not be sent"

    client = app.test_client()
    assert client.post("/ok/a").status_code == 200
    response = client.post("/dup")
    if handled:
        assert (response.status_code, response.data) == (409, b"conflict, 1 stored")
    else:
        assert response.status_code == 500
    assert b"should not be sent" not in response.data
    assert stored(db, app) == {"a"}
    assert checked_out(db, app) == 0


def test_failed_commit_propagates_when_testing(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """With exceptions propagated (TESTING), the commit error reaches the caller."""
    add_views(app, db)
    client.post("/ok/a")
    with pytest.raises(sa_exc.IntegrityError):
        client.post("/ok/a")
    assert stored(db, app) == {"a"}
    assert checked_out(db, app) == 0


def test_teardown_never_raises(
    app: flask.Flask,
    db: SessionORM,
    caplog: pytest.LogCaptureFixture,
    outside_requests: None,
) -> None:
    """When rollback and close themselves fail, teardown logs and the request ends."""
    add_views(app, db)

    @app.post("/broken/<name>")
    def broken(name: str) -> tuple[str, int]:
        session = db.session
        session.add(Item(name=name))
        session.flush()

        def fail(*args: t.Any, **kwargs: t.Any) -> None:
            raise RuntimeError("broken driver")

        # Make this one session's rollback and close fail, as a dead driver would.
        session.rollback = fail  # type: ignore[method-assign]
        session.close = fail  # type: ignore[method-assign]
        return "bad", 400

    with caplog.at_level(logging.ERROR, logger="flask_session_orm"):
        response = app.test_client().post("/broken/a")
    assert response.status_code == 400
    assert "Rolling back the session failed" in caplog.text
    assert "Closing the database session failed" in caplog.text
    assert stored(db, app) == set()
    assert checked_out(db, app) == 0


def test_mixed_requests_leave_no_connection_checked_out(
    views: flask.testing.FlaskClient, db: SessionORM, app: flask.Flask
) -> None:
    """After 500 mixed requests every pool has 0 connections checked out."""
    outcomes = {"ok": 200, "raise": 500, "abort": 409, "dup": 500}
    for i in range(500):
        kind = list(outcomes)[i % 4]
        path = f"/ok/k{i - 3}" if kind == "dup" else f"/{kind}/k{i}"
        assert views.post(path).status_code == outcomes[kind], path
    assert checked_out(db, app) == 0
    assert count_items(db, app) == 125


def test_untouched_request_creates_no_session(
    app: flask.Flask, db: SessionORM, client: flask.testing.FlaskClient
) -> None:
    """A request that never uses db.session creates no session and no connection."""
    created: list[orm.Session] = []
    checkouts: list[object] = []
    from flask_session_orm.signals import session_created

    @app.get("/")
    def index() -> str:
        return "hi"

    with app.app_context():
        sa.event.listen(db.engine, "checkout", lambda *a: checkouts.append(a))
    with session_created.connected_to(
        lambda sender, session: created.append(session), app
    ):
        assert client.get("/").data == b"hi"
    assert created == []
    assert checkouts == []


def test_streamed_response(app: flask.Flask, db: SessionORM) -> None:
    """A streamed view keeps its session, and its objects, while streaming.

    The commit decision is taken when the view returns; the session is closed
    when the stream ends.
    """
    sessions: list[orm.Session] = []

    @app.post("/stream")
    def stream() -> flask.Response:
        item = Item(name="streamed")
        db.session.add(item)
        sessions.append(db.session)

        @flask.stream_with_context
        def generate() -> t.Iterator[str]:
            sessions.append(db.session)
            yield "start,"
            # Expired by the commit, reloaded through the same, open session.
            yield item.name
            yield f",{len(db.session.scalars(sa.select(Item)).all())}"

        return flask.Response(generate())

    with app.test_client() as client:
        response = client.post("/stream")
        assert stored(db, app) == {"streamed"}
        assert checked_out(db, app) == 0
        assert response.get_data() == b"start,streamed,1"
    assert sessions[0] is sessions[1]
    assert sessions[0].get_transaction() is None
    assert not sessions[0].identity_map
    assert checked_out(db, app) == 0


def test_streamed_head_request_closes(app: flask.Flask, db: SessionORM) -> None:
    """A streamed response whose body is never iterated still closes its session."""
    sessions: list[orm.Session] = []
    loaded: list[Item] = []

    @app.route("/stream", methods=["GET", "HEAD"])
    def stream() -> flask.Response:
        sessions.append(db.session)
        loaded.extend(db.session.scalars(sa.select(Item)))
        return flask.Response(iter_nothing())

    def iter_nothing() -> t.Iterator[str]:
        yield "never"

    with app.app_context():
        db.session.add(Item(name="loaded"))
        db.session.commit()
    response = app.test_client().head("/stream")
    # Still open: what the view loaded is in its identity map.
    assert len(sessions[0].identity_map) == 1
    response.close()
    assert len(sessions[0].identity_map) == 0
    assert checked_out(db, app) == 0


def test_streamed_response_with_server(app: flask.Flask, db: SessionORM) -> None:
    """Through WSGI, the session holds its connection while streaming, not after."""

    @app.get("/stream")
    def stream() -> flask.Response:
        @flask.stream_with_context
        def generate() -> t.Iterator[str]:
            yield str(db.session.scalar(sa.select(sa.func.count()).select_from(Item)))
            yield "."

        return flask.Response(generate())

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/stream",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
    }
    body = app.wsgi_app(environ, lambda status, headers: None)
    chunks = iter(body)
    assert next(chunks) == b"0"
    assert checked_out(db, app) == 1
    assert list(chunks) == [b"."]
    t.cast(t.Any, body).close()
    assert checked_out(db, app) == 0


def test_session_usable_in_error_handler_after_http_exception(
    app: flask.Flask, db: SessionORM
) -> None:
    """An HTTP error handler can still read through the session; nothing is kept."""

    @app.errorhandler(404)
    def not_found(e: HTTPException) -> tuple[str, int]:
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        return f"{count} items", 404

    @app.post("/missing/<name>")
    def missing(name: str) -> str:
        db.session.add(Item(name=name))
        db.session.flush()
        flask.abort(404)

    response = app.test_client().post("/missing/a")
    assert (response.status_code, response.data) == (404, b"1 items")
    assert stored(db, app) == set()


def test_handled_exception_rolls_back(app: flask.Flask, db: SessionORM) -> None:
    """A view that raised rolls back even when its error handler answers below 400."""

    class Declined(Exception):
        pass

    @app.errorhandler(Declined)
    def declined(e: Declined) -> flask.Response:
        return flask.redirect("/declined")

    @app.post("/pay/<name>")
    def pay(name: str) -> str:
        db.session.add(Item(name=name))
        raise Declined()

    @app.before_request
    def before() -> None:
        if flask.request.args.get("fail"):
            db.session.add(Item(name="before"))
            raise Declined()

    @app.post("/plain/<name>")
    def plain(name: str) -> str:
        db.session.add(Item(name=name))
        return "ok"

    client = app.test_client()
    assert client.post("/pay/a").status_code == 302
    assert client.post("/plain/b?fail=1").status_code == 302
    assert client.post("/plain/c").status_code == 200
    assert stored(db, app) == {"c"}
    assert checked_out(db, app) == 0
