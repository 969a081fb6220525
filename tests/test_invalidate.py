"""db.invalidate(), by hand and after a lost database connection."""

from __future__ import annotations

import time
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM
from flask_session_orm import signals
from flask_session_orm._config import DEFAULTS

from .conftest import Item
from .conftest import checked_out
from .conftest import count_items

#: Losing the connection needs a server whose session another client can end.
network = pytest.mark.parametrize("backend", ["postgresql", "mysql"])


# The test bodies run outside any request, as a CLI command or a job does.
pytestmark = pytest.mark.usefixtures("outside_requests")


class PoolLog:
    """The DBAPI connections a pool connected, checked out and invalidated."""

    def __init__(self, engine: sa.Engine) -> None:
        self.connected: list[t.Any] = []
        self.checked_out: list[t.Any] = []
        self.invalidated: list[t.Any] = []
        sa.event.listen(engine, "connect", lambda c, r: self.connected.append(c))
        sa.event.listen(engine, "checkout", lambda c, r, p: self.checked_out.append(c))
        sa.event.listen(
            engine, "invalidate", lambda c, r, e: self.invalidated.append(c)
        )

    def clear(self) -> None:
        self.connected.clear()
        self.checked_out.clear()
        self.invalidated.clear()


@pytest.fixture
def pool_log(app: flask.Flask, db: SessionORM) -> PoolLog:
    with app.app_context():
        return PoolLog(db.engine)


@pytest.fixture
def sent() -> t.Iterator[list[tuple[str, orm.Session]]]:
    """The invalidated, rolled_back and committed signals sent, in order."""
    sent: list[tuple[str, orm.Session]] = []
    receivers = {}
    for name in ("invalidated", "rolled_back", "committed"):

        def receive(sender: object, *, session: orm.Session, _name: str = name) -> None:
            sent.append((_name, session))

        signal = getattr(signals, f"session_{name}")
        signal.connect(receive, weak=False)
        receivers[signal] = receive
    yield sent
    for signal, receive in receivers.items():
        signal.disconnect(receive)


def dbapi_connection(session: orm.Session) -> t.Any:
    """The DBAPI connection the session's transaction uses (begun if needed)."""
    return session.connection().connection.dbapi_connection


# -- db.invalidate() by hand ---------------------------------------------------------


def test_invalidate_in_request(
    app: flask.Flask,
    db: SessionORM,
    pool_log: PoolLog,
    sent: list[tuple[str, orm.Session]],
) -> None:
    """db.invalidate() in a view discards the session's connection (the pool
    invalidates it and never hands it out again), closes the session, commits
    nothing, and the request ends with the view's own response.
    """
    seen: dict[str, t.Any] = {}

    @app.get("/invalidate")
    def invalidate() -> tuple[str, int]:
        item = Item(name="a")
        db.session.add(item)
        db.session.flush()
        seen["session"] = db.session
        seen["connection"] = dbapi_connection(db.session)
        db.invalidate()
        seen["in_transaction"] = seen["session"].in_transaction()
        seen["detached"] = db.object_session(item) is None
        return "view's response", 202

    @app.get("/add")
    def add() -> str:
        seen["next"] = dbapi_connection(db.session)
        db.session.add(Item(name="b"))
        return "ok"

    client = app.test_client()
    response = client.get("/invalidate")
    assert (response.status_code, response.data) == (202, b"view's response")
    assert pool_log.invalidated == [seen["connection"]]
    assert seen["in_transaction"] is False
    assert seen["detached"] is True
    assert sent == [("invalidated", seen["session"])]
    assert checked_out(db, app) == 0
    assert count_items(db, app) == 0

    # The pool opens a new connection for the next request, which works.
    assert client.get("/add").status_code == 200
    assert seen["next"] is not seen["connection"]
    assert seen["next"] in pool_log.connected
    assert count_items(db, app) == 1


def test_session_after_invalidate_is_new_and_working(
    app: flask.Flask, db: SessionORM
) -> None:
    """After db.invalidate(), db.session is a new session that works; the rest of
    the request is not committed automatically, only what the view commits itself.
    """
    seen: dict[str, t.Any] = {}

    @app.get("/")
    def view() -> str:
        first = db.session
        first.add(Item(name="lost"))
        first.flush()
        db.invalidate()
        second = db.session
        seen["new"] = second is not first
        seen["count"] = second.scalar(sa.select(sa.func.count()).select_from(Item))
        second.add(Item(name="committed"))
        second.commit()
        second.add(Item(name="not committed"))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert seen == {"new": True, "count": 0}
    with app.app_context(), db.engine.connect() as connection:
        assert set(connection.scalars(sa.select(Item.name))) == {"committed"}
    assert checked_out(db, app) == 0


def test_invalidate_before_using_the_session(
    app: flask.Flask, db: SessionORM, pool_log: PoolLog
) -> None:
    """db.invalidate() before the session was used discards nothing, but the
    request is still not committed automatically.
    """

    @app.get("/")
    def view() -> str:
        db.invalidate()
        db.session.add(Item(name="a"))
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert pool_log.invalidated == []
    assert count_items(db, app) == 0


def test_invalidate_discards_the_connections_of_every_engine(
    app: flask.Flask, database_url: str, tmp_path: t.Any
) -> None:
    """A session that used two engines has the connections of both invalidated."""
    other_url = database_url
    if database_url.startswith("sqlite"):
        other_url = f"sqlite:///{tmp_path}/other.db"
    app.config["SESSION_ORM_ENGINES"] = {"other": other_url}
    db = SessionORM(app)
    with app.app_context():
        default_log = PoolLog(db.engine)
        other_log = PoolLog(db.get_engine("other"))
        used = [
            dbapi_connection(db.session),
            db.session.connection(
                bind_arguments={"bind": db.get_engine("other")}
            ).connection.dbapi_connection,
        ]
        db.invalidate()
        assert default_log.invalidated == [used[0]]
        assert other_log.invalidated == [used[1]]
        assert db.session.scalar(sa.text("SELECT 1")) == 1
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def test_invalidate_outside_request(
    app: flask.Flask,
    db: SessionORM,
    pool_log: PoolLog,
    sent: list[tuple[str, orm.Session]],
) -> None:
    """In an app context db.invalidate() discards the session's connection and the
    next db.session is a new, working session.
    """
    with app.app_context():
        first = db.session
        first.add(Item(name="a"))
        first.flush()
        connection = dbapi_connection(first)
        db.invalidate()
        assert pool_log.invalidated == [connection]
        assert db.session is not first
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == 0
    assert sent == [("invalidated", first), ("rolled_back", sent[1][1])]
    assert sent[1][1] is not first
    assert count_items(db, app) == 0


def test_invalidate_outside_app_context(db: SessionORM) -> None:
    """db.invalidate() needs a request or an app context."""
    with pytest.raises(RuntimeError, match="outside of application context"):
        db.invalidate()


# -- a connection lost in the middle of a request ------------------------------------


def backend_pid(session: orm.Session) -> int:
    """The server's id for the session's connection."""
    query = "SELECT CONNECTION_ID()"
    if session.get_bind().dialect.name == "postgresql":
        query = "SELECT pg_backend_pid()"
    return int(session.scalar(sa.text(query)))


def end_server_session(database_url: str, pid: int) -> None:
    """End the server side of connection ``pid`` from another client, as a server
    restart, a failover or an administrator would.
    """
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                # Wait (up to 5 s) until the backend has really exited.
                stopped = connection.scalar(
                    sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
                )
                assert stopped, f"backend {pid} did not stop"
            else:
                connection.exec_driver_sql(f"KILL {int(pid)}")
    finally:
        engine.dispose()


@pytest.fixture
def lost(app: flask.Flask, db: SessionORM, database_url: str) -> dict[str, t.Any]:
    """Views that lose their connection at various points, and a view that works."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    seen: dict[str, t.Any] = {}

    @app.get("/lost/<when>")
    def lose(when: str) -> str:
        seen["session"] = db.session
        pid = backend_pid(db.session)
        seen.setdefault("pids", []).append(pid)
        db.session.add(Item(name="lost"))
        db.session.flush()
        end_server_session(database_url, pid)
        if when == "statement":
            db.session.execute(sa.text("SELECT 1"))
        # when == "commit": the end-of-request commit is the first to notice.
        return "should not be sent"

    @app.get("/works")
    def works() -> str:
        seen.setdefault("pids", []).append(backend_pid(db.session))
        seen["works"] = seen.get("works", 0) + 1
        db.session.add(Item(name=f"works-{seen['works']}"))
        return "ok"

    return seen


@network
@pytest.mark.parametrize("when", ["statement", "commit"])
def test_lost_connection_invalidates_and_next_request_works(
    app: flask.Flask,
    db: SessionORM,
    lost: dict[str, t.Any],
    pool_log: PoolLog,
    sent: list[tuple[str, orm.Session]],
    when: str,
) -> None:
    """When the server ends the connection in the middle of a request (during a
    statement or at the commit), the request gets a 500, its session is
    invalidated rather than rolled back, and the next request works with a new
    connection, without the app doing anything.
    """
    client = app.test_client()
    response = client.get(f"/lost/{when}")
    assert response.status_code == 500
    assert b"should not be sent" not in response.data
    assert sent == [("invalidated", lost["session"])]
    assert len(pool_log.invalidated) == 1
    assert checked_out(db, app) == 0

    pool_log.clear()
    assert client.get("/works").data == b"ok"
    assert len(pool_log.connected) == 1
    assert lost["pids"][1] != lost["pids"][0]
    with app.app_context(), db.engine.connect() as connection:
        assert set(connection.scalars(sa.select(Item.name))) == {"works-1"}


@network
def test_lost_connection_goes_through_the_error_handler(
    app: flask.Flask,
    db: SessionORM,
    lost: dict[str, t.Any],
    sent: list[tuple[str, orm.Session]],
) -> None:
    """The app's handler for the disconnect error answers the request; the session
    is invalidated all the same.
    """

    @app.errorhandler(sa_exc.OperationalError)
    def unavailable(e: sa_exc.OperationalError) -> tuple[str, int]:
        return "database unavailable", 503

    client = app.test_client()
    response = client.get("/lost/statement")
    assert (response.status_code, response.data) == (503, b"database unavailable")
    assert sent == [("invalidated", lost["session"])]
    assert client.get("/works").status_code == 200


@network
def test_lost_connection_propagated_when_testing(
    app: flask.Flask,
    db: SessionORM,
    lost: dict[str, t.Any],
    sent: list[tuple[str, orm.Session]],
) -> None:
    """With exceptions propagated (TESTING), the error reaches the caller and the
    teardown invalidates the session.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = True
    client = app.test_client()
    with pytest.raises(sa_exc.OperationalError):
        client.get("/lost/statement")
    assert sent == [("invalidated", lost["session"])]
    assert checked_out(db, app) == 0
    assert client.get("/works").status_code == 200


@network
def test_view_that_recovers_from_a_lost_connection(
    app: flask.Flask,
    db: SessionORM,
    database_url: str,
    sent: list[tuple[str, orm.Session]],
) -> None:
    """A view that catches the disconnect and calls db.invalidate() gets a new
    session that works; it is rolled back at the end like any session of an
    invalidated request, not invalidated again.
    """
    sessions: list[orm.Session] = []

    @app.get("/")
    def view() -> str:
        sessions.append(db.session)
        end_server_session(database_url, backend_pid(db.session))
        try:
            db.session.execute(sa.text("SELECT 1"))
        except sa_exc.OperationalError:
            db.invalidate()
        sessions.append(db.session)
        db.session.add(Item(name="retried"))
        db.session.commit()
        db.session.scalar(sa.select(sa.func.count()).select_from(Item))
        return "recovered"

    assert app.test_client().get("/").data == b"recovered"
    first, second = sessions
    assert sent == [
        ("invalidated", first),
        ("committed", second),
        ("rolled_back", second),
    ]
    assert count_items(db, app) == 1


@network
def test_pre_ping_replaces_a_connection_lost_while_idle(
    app: flask.Flask,
    db: SessionORM,
    lost: dict[str, t.Any],
    database_url: str,
    pool_log: PoolLog,
    sent: list[tuple[str, orm.Session]],
) -> None:
    """With the idle ping (on by default for network databases) a pooled
    connection that the server ended while it sat idle for longer than
    SESSION_ORM_PING_IDLE_AFTER is replaced at checkout: the request works, and
    its session is not invalidated, since it never saw the dead one.
    """

    @app.get("/fails-validation")
    def fails_validation() -> tuple[str, int]:
        lost["session"] = db.session
        lost["pids"].append(backend_pid(db.session))
        return "invalid", 422

    client = app.test_client()
    assert client.get("/works").status_code == 200
    end_server_session(database_url, lost["pids"][0])
    time.sleep(DEFAULTS["SESSION_ORM_PING_IDLE_AFTER"] + 0.1)
    pool_log.clear()
    sent.clear()
    assert client.get("/fails-validation").status_code == 422
    assert lost["pids"][1] != lost["pids"][0]
    assert len(pool_log.connected) == 1
    assert sent == [("rolled_back", lost["session"])]
    assert client.get("/works").status_code == 200


@network
def test_without_pre_ping_the_next_request_fails_then_recovers(
    app: flask.Flask, database_url: str, sent: list[tuple[str, orm.Session]]
) -> None:
    """Pre-ping can be turned off with SESSION_ORM_ENGINE_OPTIONS; then the first
    request on a connection lost while idle fails (and is invalidated), and the
    one after it works.
    """
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["SESSION_ORM_ENGINE_OPTIONS"] = {"pool_pre_ping": False}
    db = SessionORM(app)
    pids: list[int] = []

    @app.get("/")
    def view() -> str:
        pids.append(backend_pid(db.session))
        return "ok"

    client = app.test_client()
    try:
        assert client.get("/").status_code == 200
        end_server_session(database_url, pids[0])
        sent.clear()
        assert client.get("/").status_code == 500
        assert [name for name, _ in sent] == ["invalidated"]
        assert client.get("/").status_code == 200
        assert pids[1] != pids[0]
    finally:
        with app.app_context():
            db.engine.dispose()
