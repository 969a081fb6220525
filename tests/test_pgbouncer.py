"""Requests through a real PgBouncer in transaction pooling mode, with psycopg 3.

Each module run starts PgBouncer (``tests/servers.py``) on a free loopback port
in front of the PostgreSQL server of ``TEST_POSTGRES_URL``. Without the
``pgbouncer`` program the tests are skipped, except on CI (``CI`` set), where
they fail: ``.ci/run`` installs it.

What they pin, and the docs' "Connection poolers" section says:

- psycopg 3 prepares a statement on the server after it ran 5 times on one
  connection; in transaction mode the next transaction may run on another
  server connection, where that statement does not exist. PgBouncer before
  1.21 cannot track prepared statements, so ``prepare_threshold=None`` in
  ``connect_args`` is required (with PgBouncer 1.21 or later,
  ``max_prepared_statements`` is the other way);
- with it, the app's own pool (``QueuePool``) and ``NullPool`` both work;
- the idle ping replaces connections that died with PgBouncer while idle.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import typing as t
import uuid

import flask
import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM
from flask_session_orm._config import DEFAULTS

from .servers import PgBouncer
from .servers import ServerUnavailable

#: What psycopg 3 needs behind PgBouncer in transaction mode (before 1.21).
NO_PREPARE = {"connect_args": {"prepare_threshold": None}}
CONCURRENCY = 8


class Base(orm.DeclarativeBase):
    pass


class BouncedItem(Base):
    __tablename__ = "bounced_item"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(80), unique=True)


def postgres_url() -> sa.URL:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TEST_POSTGRES_URL is not set: no PostgreSQL behind PgBouncer")
    return sa.make_url(url)


@pytest.fixture(scope="module")
def bouncer() -> t.Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of TEST_POSTGRES_URL's server."""
    url = postgres_url()
    try:
        bouncer = PgBouncer(
            server_host=url.host or "127.0.0.1", server_port=url.port or 5432
        )
    except ServerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI is set: .ci/run must install it)")
        pytest.skip(str(e))
    with bouncer:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        try:
            yield bouncer
        finally:
            Base.metadata.drop_all(engine)
            engine.dispose()


def bounced_url(bouncer: PgBouncer) -> str:
    return bouncer.url(postgres_url().database or "postgres")


def make_app(
    url: str, options: t.Mapping[str, t.Any]
) -> tuple[flask.Flask, SessionORM]:
    """An app with views that write, read, flush then fail, and flush then 409."""
    app = flask.Flask(__name__)
    app.config.update(
        PROPAGATE_EXCEPTIONS=False,
        SESSION_ORM_DATABASE_URL=url,
        SESSION_ORM_ENGINE_OPTIONS=dict(options),
    )
    db = SessionORM(app)

    @app.post("/write/<key>")
    def write(key: str) -> tuple[str, int]:
        db.session.add(BouncedItem(key=key))
        return key, 201

    @app.get("/read/<key>")
    def read(key: str) -> tuple[str, int]:
        found = db.session.scalar(
            sa.select(BouncedItem.id).where(BouncedItem.key == key)
        )
        return ("found", 200) if found is not None else ("missing", 404)

    @app.post("/conflict/<key>")
    def conflict(key: str) -> str:
        db.session.add(BouncedItem(key=key))
        db.session.flush()
        flask.abort(409)

    @app.post("/raise/<key>")
    def raise_(key: str) -> str:
        db.session.add(BouncedItem(key=key))
        db.session.flush()
        raise RuntimeError(key)

    return app, db


def request_mix(
    app: flask.Flask, rounds: int, reads: int = 3, refusals: bool = True
) -> dict[str, t.Any]:
    """Each client writes a key and reads it back ``reads`` times, then (with
    ``refusals``) makes a refused and a failing write, ``rounds`` times: what
    was answered and stored."""
    run = uuid.uuid4().hex[:8]
    errors: list[str] = []
    acknowledged: list[str] = []
    refused: list[str] = []

    def client(n: int) -> None:
        http = app.test_client()
        for i in range(rounds):
            key = f"{run}-{n}-{i}"
            status = http.post(f"/write/{key}").status_code
            if status != 201:
                errors.append(f"write {status}")
                continue
            acknowledged.append(key)
            for _ in range(reads):
                status = http.get(f"/read/{key}").status_code
                if status != 200:
                    errors.append(f"read {status}")
            if not refusals:
                continue
            for kind, expected in (("conflict", 409), ("raise", 500)):
                status = http.post(f"/{kind}/{key}-{kind}").status_code
                refused.append(f"{key}-{kind}")
                if status != expected:
                    errors.append(f"{kind} {status}")

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(client, range(CONCURRENCY)))
    engine = sa.create_engine(postgres_url(), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            stored = set(
                connection.scalars(
                    sa.select(BouncedItem.key).where(BouncedItem.key.like(f"{run}-%"))
                )
            )
    finally:
        engine.dispose()
    return {
        "errors": errors,
        "missing": set(acknowledged) - stored,
        "phantom": stored & set(refused),
        "acknowledged": len(acknowledged),
    }


@pytest.mark.parametrize("pool", ["QueuePool", "NullPool"])
def test_request_mix_through_pgbouncer(bouncer: PgBouncer, pool: str) -> None:
    """With prepare_threshold=None, concurrent requests through PgBouncer in
    transaction mode all get their expected answer, every acknowledged write
    is stored and no refused one is, with the app's pool or without one."""
    options: dict[str, t.Any] = dict(NO_PREPARE)
    if pool == "NullPool":
        options["poolclass"] = sa.NullPool
    app, db = make_app(bounced_url(bouncer), options)
    try:
        result = request_mix(app, rounds=8)
    finally:
        with app.app_context():
            db.engine.dispose()
    assert result["errors"] == []
    assert result["acknowledged"] == CONCURRENCY * 8
    assert result["missing"] == set()
    assert result["phantom"] == set()


@pytest.mark.parametrize("prepare", ["default", "None"])
def test_prepared_statements_need_prepare_threshold_none(
    bouncer: PgBouncer, prepare: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With psycopg's default prepare_threshold, a statement prepared on one
    server connection is looked for on another and the request fails; with
    prepare_threshold=None the same sequence works. This is why the option is
    needed (PgBouncer before 1.21)."""
    if tuple(int(x) for x in bouncer.version().split(".")[:2]) >= (1, 21):
        pytest.skip("PgBouncer >= 1.21 may track prepared statements itself")
    options: dict[str, t.Any] = {"pool_size": 1, "max_overflow": 0}
    if prepare == "None":
        options.update(NO_PREPARE)
    app, db = make_app(bounced_url(bouncer), options)
    http = app.test_client()
    url = sa.make_url(bounced_url(bouncer))
    try:
        key = uuid.uuid4().hex
        assert http.post(f"/write/{key}").status_code == 201
        # psycopg prepares a statement at its 6th run on a connection.
        for _ in range(6):
            assert http.get(f"/read/{key}").status_code == 200
        # Another client takes the server connection the app just released,
        # so the app's next transaction runs on a new one.
        with psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            dbname=url.database,
            prepare_threshold=None,
        ) as other:
            other.execute("SELECT 1")
            response = http.get(f"/read/{key}")
        if prepare == "default":
            assert response.status_code == 500
            assert 'prepared statement "_pg3_0" does not exist' in caplog.text
        else:
            assert response.status_code == 200
    finally:
        with app.app_context():
            db.engine.dispose()


def test_idle_ping_survives_a_pgbouncer_restart(bouncer: PgBouncer) -> None:
    """PgBouncer restarted while the app is idle closes every client
    connection; with the default idle ping the first requests after it all
    succeed."""
    app, db = make_app(bounced_url(bouncer), NO_PREPARE)
    try:
        assert request_mix(app, rounds=1)["errors"] == []
        last = time.monotonic()
        bouncer.restart()
        idle = t.cast(float, DEFAULTS["SESSION_ORM_PING_IDLE_AFTER"])
        time.sleep(max(0.0, last + idle + 0.3 - time.monotonic()))
        result = request_mix(app, rounds=2)
    finally:
        with app.app_context():
            db.engine.dispose()
    assert result["errors"] == []
    assert result["missing"] == set()
