"""The database restarts while the app is idle; the first requests after it all
succeed.

Each test starts a throw-away server of its own (``tests/servers.py``), never
the machine's: an app with the default configuration serves a burst of
concurrent requests (the pool then holds several connections), sits idle, the
server is restarted, and after more than ``SESSION_ORM_PING_IDLE_AFTER``
seconds of idleness a second burst must get no error at all, and every write it
acknowledged must be stored. A negative control with the idle ping switched off
must see errors, so that the test can fail.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
import typing as t
import uuid

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm
from reliability_driver import SUMMARIES

from flask_session_orm import SessionORM
from flask_session_orm._config import DEFAULTS
from tests.servers import MariaDBServer
from tests.servers import PostgresServer
from tests.servers import Server
from tests.servers import start_or_skip

#: The default threshold: the test waits a little longer than this.
IDLE_AFTER = t.cast(float, DEFAULTS["SESSION_ORM_PING_IDLE_AFTER"])
CONCURRENCY = 8
#: Writes per burst; each is read back in the same burst.
WRITES = 24


class Base(orm.DeclarativeBase):
    pass


class IdleItem(Base):
    __tablename__ = "idle_item"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(80), unique=True)


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> t.Iterator[Server]:
    """A throw-away server of the backend, for this module's tests."""
    cls = PostgresServer if request.param == "postgresql" else MariaDBServer
    server = start_or_skip(cls)
    try:
        engine = sa.create_engine(server.url, poolclass=sa.NullPool)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield server
    finally:
        server.cleanup()


@dataclasses.dataclass
class Outcome:
    """What one idle-restart run saw."""

    backend: str
    setting: str
    pooled_before: int = 0
    idle_seconds: float = 0.0
    restart_seconds: float = 0.0
    requests: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    acknowledged: int = 0
    missing: int = 0
    first_request_ms: float = 0.0

    def table(self) -> str:
        rows = [
            ("PING_IDLE_AFTER", self.setting),
            ("pooled connections before the restart", str(self.pooled_before)),
            ("server restart took", f"{self.restart_seconds:.2f} s"),
            ("app idle before the burst", f"{self.idle_seconds:.2f} s"),
            (
                "requests after the restart",
                f"{self.requests} (concurrency {CONCURRENCY})",
            ),
            ("errors", str(len(self.errors))),
            ("acknowledged writes / missing", f"{self.acknowledged} / {self.missing}"),
            ("first response after the restart", f"{self.first_request_ms:.1f} ms"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"idle restart: {self.backend}"]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"  ! {e}" for e in self.errors[:5]]
        return "\n".join(lines)


def make_app(url: str, config: t.Mapping[str, t.Any]) -> tuple[flask.Flask, SessionORM]:
    """An app with the default configuration (plus ``config``) and two views."""
    app = flask.Flask(__name__)
    app.config.update(
        SESSION_ORM_DATABASE_URL=url,
        SESSION_ORM_ENGINE_OPTIONS={"pool_size": 4, "max_overflow": 4},
        **config,
    )
    db = SessionORM(app)

    @app.post("/write/<key>")
    def write(key: str) -> tuple[str, int]:
        db.session.add(IdleItem(key=key))
        return key, 201

    @app.get("/read/<key>")
    def read(key: str) -> tuple[str, int]:
        found = db.session.scalar(sa.select(IdleItem.id).where(IdleItem.key == key))
        return ("found", 200) if found is not None else ("missing", 404)

    return app, db


def burst(app: flask.Flask, prefix: str) -> tuple[list[str], list[str], float]:
    """Concurrent writes, each read back: the acknowledged keys, the errors,
    and when the first response came (monotonic time).
    """
    acknowledged: list[str] = []
    errors: list[str] = []
    first: list[float] = []

    def one(n: int) -> None:
        client = app.test_client()
        key = f"{prefix}-{n}"
        response = client.post(f"/write/{key}")
        first.append(time.monotonic())
        if response.status_code != 201:
            errors.append(f"write {key}: {response.status_code}")
            return
        acknowledged.append(key)
        response = client.get(f"/read/{key}")
        if response.status_code != 200:
            errors.append(f"read {key}: {response.status_code}")

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(WRITES)))
    return acknowledged, errors, min(first)


def stored(url: str, keys: list[str]) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.scalars(
                sa.select(IdleItem.key).where(IdleItem.key.in_(keys))
            )
            return set(rows)
    finally:
        engine.dispose()


def idle_restart(
    server: Server, backend: str, config: t.Mapping[str, t.Any], idle: float
) -> Outcome:
    """Warm the pool, restart the server, stay idle ``idle`` s, then a burst."""
    app, db = make_app(server.url, config)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    run = uuid.uuid4().hex[:8]
    setting = repr(config.get("SESSION_ORM_PING_IDLE_AFTER", IDLE_AFTER))
    outcome = Outcome(backend=backend, setting=setting)
    try:
        _, warm_errors, _ = burst(app, f"warm-{run}")
        assert warm_errors == []
        last = time.monotonic()
        with app.app_context():
            outcome.pooled_before = t.cast(t.Any, db.engine.pool).checkedin()
        start = time.monotonic()
        server.restart()
        outcome.restart_seconds = time.monotonic() - start
        time.sleep(max(0.0, last + idle - time.monotonic()))
        began = time.monotonic()
        outcome.idle_seconds = began - last
        acknowledged, outcome.errors, first = burst(app, f"after-{run}")
        outcome.first_request_ms = (first - began) * 1000
        outcome.requests = WRITES + len(acknowledged)
        outcome.acknowledged = len(acknowledged)
        outcome.missing = len(set(acknowledged) - stored(server.url, acknowledged))
    finally:
        with app.app_context():
            db.engine.dispose()
    SUMMARIES.append(outcome.table())
    return outcome


def test_restart_while_idle_first_requests_succeed(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """With the default configuration, after a restart during more than
    SESSION_ORM_PING_IDLE_AFTER seconds of idleness, no request fails and every
    acknowledged write is stored."""
    backend = request.node.callspec.params["server"]
    outcome = idle_restart(server, backend, {}, IDLE_AFTER + 0.3)
    assert outcome.pooled_before >= 2, outcome.table()
    assert outcome.errors == [], outcome.table()
    assert outcome.acknowledged == WRITES, outcome.table()
    assert outcome.missing == 0, outcome.table()


def test_without_the_idle_ping_a_restart_fails_requests(
    server: Server, request: pytest.FixtureRequest
) -> None:
    """Negative control: with SESSION_ORM_PING_IDLE_AFTER None (no ping at all)
    the same restart fails some of the first requests, so the test above can
    fail."""
    backend = request.node.callspec.params["server"]
    outcome = idle_restart(
        server, backend, {"SESSION_ORM_PING_IDLE_AFTER": None}, IDLE_AFTER + 0.3
    )
    assert outcome.errors != [], outcome.table()
    assert outcome.missing == 0, outcome.table()
