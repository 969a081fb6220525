"""SESSION_ORM_PING_IDLE_AFTER: a pooled connection is pinged at checkout only
when it sat idle in the pool longer than the threshold."""

from __future__ import annotations

import time
import typing as t

import flask
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM
from flask_session_orm import signals

#: Ending a server session needs a server another client can talk to.
network = pytest.mark.parametrize("backend", ["postgresql", "mysql"])

PG = "postgresql+psycopg://u:secret@127.0.0.1:1/x"


def make(tmp_path: t.Any, **config: t.Any) -> tuple[flask.Flask, SessionORM]:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app, SessionORM(app)


def idle_after(app: flask.Flask, name: str = "default") -> float | None:
    """The idle-ping threshold the extension installed on engine ``name``."""
    return t.cast(
        "float | None",
        app.extensions["session_orm"].config.engines[name].ping_idle_after,
    )


def pre_ping(db: SessionORM, app: flask.Flask, name: str = "default") -> bool:
    with app.app_context():
        return bool(db.get_engine(name).pool._pre_ping)  # type: ignore[attr-defined]


def test_default_pings_idle_connections_of_network_databases(tmp_path: t.Any) -> None:
    """By default network engines ping connections idle over 1 s and do not use
    pool_pre_ping; SQLite engines ping nothing."""
    app, db = make(
        tmp_path, SESSION_ORM_ENGINES={"default": PG, "lite": "sqlite:///x.db"}
    )
    assert idle_after(app) == 1.0
    assert pre_ping(db, app) is False
    assert idle_after(app, "lite") is None
    assert pre_ping(db, app, "lite") is False


@pytest.mark.parametrize(
    ("value", "expected_idle", "expected_pre_ping"),
    [(2.5, 2.5, False), (3, 3.0, False), (0, None, True), (None, None, False)],
    ids=["float", "int", "zero-always", "none-never"],
)
def test_ping_idle_after_values(
    tmp_path: t.Any,
    value: float | None,
    expected_idle: float | None,
    expected_pre_ping: bool,
) -> None:
    """A number of seconds sets the threshold, 0 means pool_pre_ping (always),
    None means no ping at all."""
    app, db = make(
        tmp_path, SESSION_ORM_DATABASE_URL=PG, SESSION_ORM_PING_IDLE_AFTER=value
    )
    assert idle_after(app) == expected_idle
    assert pre_ping(db, app) is expected_pre_ping


@pytest.mark.parametrize("explicit", [True, False])
def test_explicit_pool_pre_ping_wins(tmp_path: t.Any, explicit: bool) -> None:
    """pool_pre_ping given in the engine options, True (always) or False (never),
    replaces the idle ping for that engine only."""
    app, db = make(
        tmp_path,
        SESSION_ORM_ENGINES={
            "default": {"url": PG, "pool_pre_ping": explicit},
            "other": PG,
        },
        SESSION_ORM_PING_IDLE_AFTER=5,
    )
    assert idle_after(app) is None
    assert pre_ping(db, app) is explicit
    assert idle_after(app, "other") == 5.0


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, r"'SESSION_ORM_PING_IDLE_AFTER' must be a number.*True"),
        ("1", TypeError, r"'SESSION_ORM_PING_IDLE_AFTER' must be a number.*'1'"),
        (-1, ValueError, r"'SESSION_ORM_PING_IDLE_AFTER' must be .* got -1\."),
        (float("nan"), ValueError, r"'SESSION_ORM_PING_IDLE_AFTER' .* got nan"),
        (float("inf"), ValueError, r"'SESSION_ORM_PING_IDLE_AFTER' .* Use None"),
    ],
    ids=["bool", "string", "negative", "nan", "infinite"],
)
def test_bad_ping_idle_after(
    tmp_path: t.Any, value: t.Any, error: type[Exception], match: str
) -> None:
    """A value that is not a finite number of seconds (or None) is an error that
    names the key and the value."""
    with pytest.raises(error, match=match):
        make(tmp_path, SESSION_ORM_DATABASE_URL=PG, SESSION_ORM_PING_IDLE_AFTER=value)


# -- on a real server ------------------------------------------------------------


def end_server_session(database_url: str, pid: int) -> None:
    """End connection ``pid`` on the server, as a restart or an admin would."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                stopped = connection.scalar(
                    sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
                )
                assert stopped, f"backend {pid} did not stop"
            else:
                connection.exec_driver_sql(f"KILL {int(pid)}")
    finally:
        engine.dispose()


class PidApp:
    """An app whose view answers with its connection's server-side id."""

    def __init__(self, app: flask.Flask, **config: t.Any) -> None:
        app.config.update(PROPAGATE_EXCEPTIONS=False, **config)
        self.app = app
        self.db = db = SessionORM(app)
        self.invalidated: list[object] = []
        self.connects = 0

        @app.get("/pid")
        def pid() -> str:
            query = "SELECT CONNECTION_ID()"
            if db.session.get_bind().dialect.name == "postgresql":
                query = "SELECT pg_backend_pid()"
            return str(db.session.scalar(sa.text(query)))

        with app.app_context():
            sa.event.listen(db.engine, "connect", self._connected)

    def _connected(self, *args: t.Any) -> None:
        self.connects += 1

    def get(self) -> tuple[int, str]:
        response = self.app.test_client().get("/pid")
        return response.status_code, response.get_data(as_text=True)

    def _invalidated(self, sender: object, **kwargs: t.Any) -> None:
        self.invalidated.append(kwargs["session"])

    def __enter__(self) -> PidApp:
        signals.session_invalidated.connect(self._invalidated)
        return self

    def __exit__(self, *exc: object) -> None:
        signals.session_invalidated.disconnect(self._invalidated)
        with self.app.app_context():
            self.db.engine.dispose()


@network
def test_connection_checked_in_a_moment_ago_is_not_pinged(
    app: flask.Flask, database_url: str
) -> None:
    """Within the threshold there is no ping: a connection that died since its
    check-in fails the request that gets it (the price of skipping the round
    trip), and the request after that works on a new connection."""
    with PidApp(app, SESSION_ORM_PING_IDLE_AFTER=60) as served:
        status, pid = served.get()
        assert status == 200
        end_server_session(database_url, int(pid))
        assert served.get()[0] == 500
        assert len(served.invalidated) == 1
        status, new_pid = served.get()
        assert status == 200
        assert new_pid != pid


@network
def test_connection_idle_over_the_threshold_is_pinged_and_replaced(
    app: flask.Flask, database_url: str
) -> None:
    """A connection idle longer than the threshold is pinged at checkout; a dead
    one is replaced before the request sees it, so the request works and its
    session is not invalidated."""
    with PidApp(app, SESSION_ORM_PING_IDLE_AFTER=0.2) as served:
        status, pid = served.get()
        assert status == 200
        end_server_session(database_url, int(pid))
        time.sleep(0.3)
        status, new_pid = served.get()
        assert status == 200
        assert new_pid != pid
        assert served.invalidated == []
        assert served.connects == 2


@network
def test_live_idle_connection_is_kept(app: flask.Flask, database_url: str) -> None:
    """An idle connection that answers its ping is used as it is."""
    with PidApp(app, SESSION_ORM_PING_IDLE_AFTER=0.1) as served:
        first = served.get()
        time.sleep(0.2)
        assert served.get() == first
        assert served.connects == 1


@network
def test_explicit_pool_pre_ping_pings_every_checkout(
    app: flask.Flask, database_url: str
) -> None:
    """With pool_pre_ping=True in the engine options even a connection checked
    in a moment ago is pinged, whatever SESSION_ORM_PING_IDLE_AFTER says."""
    with PidApp(
        app,
        SESSION_ORM_PING_IDLE_AFTER=60,
        SESSION_ORM_ENGINE_OPTIONS={"pool_pre_ping": True},
    ) as served:
        status, pid = served.get()
        end_server_session(database_url, int(pid))
        status, new_pid = served.get()
        assert status == 200
        assert new_pid != pid
        assert served.invalidated == []


@network
def test_failed_ping_replaces_every_older_connection(
    app: flask.Flask, database_url: str
) -> None:
    """When an idle connection fails its ping (the server restarted), every
    connection opened before it is replaced at its next checkout without a
    ping of its own; the failed ping goes through the engine's handle_error
    listeners as a pre-ping, as with pool_pre_ping."""
    with PidApp(app, SESSION_ORM_PING_IDLE_AFTER=0.2) as served:
        failed_pings: list[bool] = []
        with app.app_context():
            engine = served.db.engine

            @sa.event.listens_for(engine, "handle_error")
            def note(context: sa.engine.ExceptionContext) -> None:
                failed_pings.append(bool(getattr(context, "is_pre_ping", True)))

            query = "SELECT CONNECTION_ID()"
            if engine.dialect.name == "postgresql":
                query = "SELECT pg_backend_pid()"
            with engine.connect() as first, engine.connect() as second:
                pids = [int(c.scalar(sa.text(query))) for c in (first, second)]
            for pid in pids:
                end_server_session(database_url, pid)
            time.sleep(0.3)
            with engine.connect() as first, engine.connect() as second:
                new = [int(c.scalar(sa.text(query))) for c in (first, second)]
        assert set(new).isdisjoint(pids)
        assert served.connects == 4
        assert failed_pings == [True]
