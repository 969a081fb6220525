"""Read replicas against a real PostgreSQL streaming standby.

The module starts its own primary and a standby made with ``pg_basebackup``
(``tests/servers.py``) once, on free loopback ports; without the PostgreSQL
server programs the tests are skipped, except on CI (``CI`` set), where they
fail. Lag is made deterministic by pausing the standby's replay with
``pg_wal_replay_pause()``.
"""

from __future__ import annotations

import concurrent.futures
import http.cookiejar
import os
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.request
import uuid

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm
import werkzeug.serving

from flask_session_orm import SessionORM

from .servers import PostgresServer
from .servers import free_port
from .servers import start_or_skip


class Base(orm.DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "replica_entry"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(80), unique=True)
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(80), default="")


WHO = sa.text("SELECT pg_is_in_recovery()")


class Pair:
    """A running primary and its standby."""

    def __init__(self, primary: PostgresServer, standby: PostgresServer) -> None:
        self.primary = primary
        self.standby = standby

    def primary_lsn(self) -> str:
        return str(self.primary.run_sql("SELECT pg_current_wal_insert_lsn()")[0][0])

    def wait_replayed(self, timeout: float = 20) -> None:
        """Wait until the standby has replayed everything the primary wrote."""
        target = self.primary_lsn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.standby.run_sql(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
            )
            if rows[0][0]:
                return
            time.sleep(0.02)
        raise AssertionError(f"the standby did not replay up to {target}")

    def pause(self) -> None:
        """Pause the standby's replay and wait until it is paused."""
        self.standby.run_sql("SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = self.standby.run_sql("SELECT pg_get_wal_replay_pause_state()")
            if state[0][0] == "paused":
                return
            time.sleep(0.02)
        raise AssertionError("the standby's replay did not pause")

    def resume(self) -> None:
        self.standby.run_sql("SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def pair() -> t.Iterator[Pair]:
    primary = start_or_skip(PostgresServer)
    try:
        standby = primary.standby()
        try:
            standby.start()
            yield Pair(primary, standby)
        finally:
            standby.cleanup()
    finally:
        primary.cleanup()


def make_app(pair: Pair, **config: t.Any) -> tuple[flask.Flask, SessionORM]:
    app = flask.Flask(__name__)
    app.config.update(
        SECRET_KEY="test",
        SESSION_ORM_DATABASE_URL=pair.primary.url,
        SESSION_ORM_REPLICAS={"default": [pair.standby.url]},
        SESSION_ORM_REPLICA_RETRY_SECONDS=0.3,
    )
    app.config.update(config)
    db = SessionORM(app)

    @app.get("/who")
    def who() -> dict[str, t.Any]:
        return {"standby": db.session.scalar(WHO)}

    @app.post("/entries")
    def create() -> flask.Response:
        entry = Entry(key=flask.request.form["key"], owner=flask.request.form["owner"])
        db.session.add(entry)
        db.session.flush()
        return flask.redirect(f"/entries/{entry.key}")

    @app.get("/entries/<key>")
    def show(key: str) -> dict[str, t.Any]:
        entry = db.first_or_404(sa.select(Entry).filter_by(key=key))
        return {"key": entry.key, "standby": db.session.scalar(WHO)}

    @app.get("/entries")
    def count() -> dict[str, t.Any]:
        total = db.session.scalar(sa.select(sa.func.count(Entry.id)))
        return {"count": total, "standby": db.session.scalar(WHO)}

    return app, db


@pytest.fixture
def app_db(pair: Pair) -> t.Iterator[tuple[flask.Flask, SessionORM]]:
    app, db = make_app(pair)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    pair.wait_replayed()
    yield app, db
    with app.app_context():
        db.drop_all(Base)
        for engine in (*db.engines.values(), *db.replica_engines["default"]):
            engine.dispose()


def test_reads_land_on_the_standby(
    pair: Pair, app_db: tuple[flask.Flask, SessionORM]
) -> None:
    """A GET request's reads run on the standby (pg_is_in_recovery() there)."""
    app, db = app_db

    @app.get("/port")
    def port() -> dict[str, t.Any]:
        return {"port": db.session.scalar(sa.text("SELECT inet_server_port()"))}

    client = app.test_client()
    assert client.get("/who").json == {"standby": True}
    assert client.get("/port").json == {"port": pair.standby.port}


def test_write_then_read_stays_on_the_primary(
    app_db: tuple[flask.Flask, SessionORM],
) -> None:
    """Once a request wrote, its reads run on the primary, in the writing
    transaction, and the write is committed."""
    app, db = app_db

    @app.get("/write-read")
    def write_read() -> dict[str, t.Any]:
        before = db.session.scalar(WHO)
        db.session.add(Entry(key="w", owner="me"))
        db.session.flush()
        # The transaction that wrote has a transaction id; the read shares it.
        xid = db.session.scalar(sa.text("SELECT txid_current_if_assigned()"))
        found = db.session.scalar(sa.select(Entry.key).filter_by(key="w"))
        return {"before": before, "after": db.session.scalar(WHO), "xid": xid,
                "found": found}  # fmt: skip

    body = app.test_client().get("/write-read").json
    assert body is not None
    assert body["before"] is True and body["after"] is False
    assert body["xid"] is not None and body["found"] == "w"
    with app.app_context(), db.primary():
        assert db.session.scalar(sa.select(sa.func.count(Entry.id))) == 1


def test_post_redirect_get_reads_its_own_write(
    pair: Pair, app_db: tuple[flask.Flask, SessionORM]
) -> None:
    """While the standby does not replay, a client that wrote reads its write
    from the primary; another client reads the stale standby; once replayed,
    the writer reads from the standby again."""
    app, _db = app_db
    writer = app.test_client()
    other = app.test_client()
    pair.pause()
    try:
        response = writer.post(
            "/entries", data={"key": "prg", "owner": "w"}, follow_redirects=True
        )
        assert response.status_code == 200
        assert response.json == {"key": "prg", "standby": False}
        assert other.get("/entries/prg").status_code == 404
        assert other.get("/who").json == {"standby": True}
        assert writer.get("/entries").json == {"count": 1, "standby": False}
    finally:
        pair.resume()
    pair.wait_replayed()
    time.sleep(0.06)  # the cached replay position expires
    assert writer.get("/entries/prg").json == {"key": "prg", "standby": True}


def test_lag_bound_sends_reads_to_the_primary(pair: Pair) -> None:
    """A standby lagging more than SESSION_ORM_REPLICA_MAX_LAG_SECONDS is
    skipped until it catches up."""
    app, db = make_app(pair, SESSION_ORM_REPLICA_MAX_LAG_SECONDS=0.5)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
    pair.wait_replayed()
    client = app.test_client()
    try:
        assert client.get("/who").json == {"standby": True}
        pair.pause()
        try:
            pair.primary.run_sql(
                "INSERT INTO replica_entry (key, owner) VALUES ('l', '')"
            )
            time.sleep(0.7)
            assert client.get("/who").json == {"standby": False}
            assert client.get("/entries").json == {"count": 1, "standby": False}
        finally:
            pair.resume()
        pair.wait_replayed()
        time.sleep(0.06)
        assert client.get("/entries").json == {"count": 1, "standby": True}
    finally:
        with app.app_context():
            db.drop_all(Base)
            for engine in (*db.engines.values(), *db.replica_engines["default"]):
                engine.dispose()


def test_standby_stopped_mid_run(
    pair: Pair, app_db: tuple[flask.Flask, SessionORM]
) -> None:
    """Stopping the standby between and during requests makes reads fall back
    to the primary without a single error; they return once it is back."""
    app, _db = app_db
    client = app.test_client()
    assert client.get("/who").json == {"standby": True}
    served: list[bool] = []
    errors: list[int] = []
    stop = threading.Event()

    def reads() -> None:
        local = app.test_client()
        while not stop.is_set():
            response = local.get("/entries")
            if response.status_code != 200:
                errors.append(response.status_code)
            else:
                served.append(t.cast(dict[str, t.Any], response.json)["standby"])

    threads = [threading.Thread(target=reads) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        pair.standby.stop(mode="immediate")
        time.sleep(0.5)
        assert client.get("/who").json == {"standby": False}
        pair.standby.start()
        pair.wait_replayed()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert True in served and False in served
    assert client.get("/who").json == {"standby": True}


def test_replica_connection_lost_mid_request(
    pair: Pair, app_db: tuple[flask.Flask, SessionORM]
) -> None:
    """A read whose standby connection dies in the middle of a request is run
    again on the primary: the client gets its answer, not an error."""
    app, db = app_db

    @app.get("/lost")
    def lost() -> dict[str, t.Any]:
        pid = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
        first = db.session.scalar(WHO)
        pair.standby.run_sql("SELECT pg_terminate_backend(%s)", (pid,))
        return {"first": first, "then": db.session.scalar(WHO)}

    client = app.test_client()
    assert client.get("/lost").json == {"first": True, "then": False}
    time.sleep(0.35)  # SESSION_ORM_REPLICA_RETRY_SECONDS
    assert client.get("/who").json == {"standby": True}


def test_server_not_in_recovery_never_serves_pinned_clients(pair: Pair) -> None:
    """A "replica" that is not a standby (here the primary itself) has WAL
    positions of its own, not comparable with the primary's: it serves the
    clients without a cookie only."""
    app, db = make_app(pair, SESSION_ORM_REPLICAS={"default": [pair.primary.url]})
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
        (replica,) = db.replica_engines["default"]
    reads: list[str] = []

    @sa.event.listens_for(replica, "before_cursor_execute")
    def note(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if "replica_entry" in statement:
            reads.append(statement)

    try:
        writer = app.test_client()
        writer.post("/entries", data={"key": "own", "owner": "w"})
        assert writer.get("/entries/own").status_code == 200
        assert reads == []
        assert app.test_client().get("/entries/own").status_code == 200
        assert len(reads) == 1
    finally:
        with app.app_context():
            db.drop_all(Base)
            for engine in (*db.engines.values(), replica):
                engine.dispose()


def test_load_read_heavy_mix(pair: Pair) -> None:
    """Under a threaded server, a read-heavy mix sends the reads of clients
    that did not just write to the standby, so the primary runs fewer
    statements; with the replay paused and resumed mid-run no acknowledged
    write is missing, none appears that was not acknowledged, and no client
    ever misses its own write."""
    without = _werkzeug_run(pair, replicas=False)
    with_replicas = _werkzeug_run(pair, replicas=True)
    print(f"werkzeug, without replicas: {without}\nwith replicas: {with_replicas}")
    _check_invariants(without, with_replicas, "primary_statements")


def test_load_under_gunicorn(pair: Pair, tmp_path: t.Any) -> None:
    """The same mix under gunicorn (2 gthread workers): the primary's
    transaction count (pg_stat_database) falls by the standby's share, with the
    same invariants."""
    without = _gunicorn_run(pair, tmp_path, replicas=False)
    with_replicas = _gunicorn_run(pair, tmp_path, replicas=True)
    print(f"gunicorn, without replicas: {without}\nwith replicas: {with_replicas}")
    _check_invariants(without, with_replicas, "primary_transactions")


def _check_invariants(
    without: dict[str, t.Any], with_replicas: dict[str, t.Any], measure: str
) -> None:
    for result in (without, with_replicas):
        assert result["errors"] == []
        assert result["missing"] == 0 and result["phantom"] == 0
        assert result["stale_own_reads"] == 0
    assert without["standby_reads"] == 0
    share = with_replicas["standby_reads"] / with_replicas["reads"]
    # Half the reads are from clients that never write: all on the standby.
    assert share > 0.4, with_replicas
    # The primary keeps the writes, the writers' reads right after their
    # writes and the WAL position reads.
    assert with_replicas[measure] < without[measure] * (1 - share / 2), (
        without,
        with_replicas,
    )


def _werkzeug_run(pair: Pair, *, replicas: bool) -> dict[str, t.Any]:
    config: dict[str, t.Any] = {
        "SESSION_ORM_ENGINE_OPTIONS": {"pool_size": 10},
        "SESSION_ORM_REPLICA_MAX_LAG_SECONDS": None,
    }
    if not replicas:
        config["SESSION_ORM_REPLICAS"] = {}
    app, db = make_app(pair, **config)
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
        primary = db.engine
    pair.wait_replayed()
    statements = {"primary": 0}

    @sa.event.listens_for(primary, "before_cursor_execute")
    def count(*args: t.Any) -> None:
        statements["primary"] += 1

    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        result = _drive(pair, f"http://127.0.0.1:{server.port}")
    finally:
        server.shutdown()
        thread.join()
    with app.app_context(), db.primary():
        stored = set(db.session.scalars(sa.select(Entry.key)))
        db.session.rollback()
        db.drop_all(Base)
    for engine in (primary, *_replica_engines(app, db)):
        engine.dispose()
    return _verdict(result, stored, primary_statements=statements["primary"])


def _gunicorn_run(pair: Pair, tmp_path: t.Any, *, replicas: bool) -> dict[str, t.Any]:
    support = os.path.join(os.path.dirname(__file__), "replica_support")
    table = "replica_load_entry"
    pair.primary.run_sql(f"DROP TABLE IF EXISTS {table}")
    pair.primary.run_sql(
        f"CREATE TABLE {table} (id serial PRIMARY KEY, key varchar(80) UNIQUE)"
    )
    pair.wait_replayed()
    port = free_port()
    env = {
        **os.environ,
        "REPLICA_PRIMARY_URL": pair.primary.url,
        "REPLICA_STANDBY_URL": pair.standby.url if replicas else "",
    }
    log_path = os.path.join(tmp_path, f"gunicorn-{replicas}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "4",
                "--chdir",
                support,
                "--log-level",
                "warning",
                "replica_app:create_app()",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_serving(process, base, log_path)
        before = _transactions(pair.primary)
        result = _drive(pair, base)
    finally:
        # Stopped by its own process id; the workers' backends exit with their
        # connections, which flushes their statistics.
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    time.sleep(0.5)
    after = _transactions(pair.primary)
    stored = {row[0] for row in pair.primary.run_sql(f"SELECT key FROM {table}")}
    pair.primary.run_sql(f"DROP TABLE {table}")
    # Minus the one transaction of the _transactions() call itself.
    return _verdict(result, stored, primary_transactions=after - before - 1)


def _wait_serving(process: subprocess.Popen[bytes], base: str, log_path: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise AssertionError(f"gunicorn exited:\n{f.read()}")
        try:
            with urllib.request.urlopen(f"{base}/entries", timeout=5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not answer in 30 s")


def _transactions(server: PostgresServer) -> int:
    """The transactions committed and rolled back in the server's test
    database so far, as its statistics say."""
    rows = server.run_sql(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
        (server.database,),
    )
    return int(rows[0][0])


def _drive(pair: Pair, base: str) -> dict[str, t.Any]:
    """Eight clients, half writing then reading, half only reading, with the
    standby's replay paused for 0.7 s in the middle."""
    users, rounds = 8, 8
    acknowledged: set[str] = set()
    errors: list[str] = []
    stale: list[str] = []
    counts = {"reads": 0, "standby_reads": 0}
    lock = threading.Lock()

    def user(number: int) -> None:
        # Even users write a little and read a lot; odd users only read.
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        for _ in range(rounds):
            key = uuid.uuid4().hex
            data = f"key={key}&owner=u{number}".encode()
            try:
                if number % 2 == 0:
                    # POST, redirect, GET of the new entry: its own write.
                    with opener.open(f"{base}/entries", data=data, timeout=30) as r:
                        own = t.cast(dict[str, t.Any], flask.json.loads(r.read()))
                    with lock:
                        acknowledged.add(key)
                    if own.get("key") != key:
                        stale.append(key)
                for _ in range(5):
                    with opener.open(f"{base}/entries", timeout=30) as r:
                        body = flask.json.loads(r.read())
                    with lock:
                        counts["reads"] += 1
                        counts["standby_reads"] += body["standby"]
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    stale.append(key)
                else:
                    errors.append(f"{e.code} {e.read()[:200]!r}")

    try:
        with concurrent.futures.ThreadPoolExecutor(users) as pool:
            futures = [pool.submit(user, number) for number in range(users)]
            time.sleep(0.3)
            pair.pause()
            time.sleep(0.7)
            pair.resume()
            for future in futures:
                future.result()
    finally:
        pair.resume()
    return {
        "acknowledged": acknowledged,
        "errors": errors,
        "stale": stale,
        **counts,
    }


def _verdict(
    result: dict[str, t.Any], stored: set[str], **measures: int
) -> dict[str, t.Any]:
    acknowledged = result["acknowledged"]
    return {
        "errors": result["errors"],
        "missing": len(acknowledged - stored),
        "phantom": len(stored - acknowledged),
        "stale_own_reads": len(result["stale"]),
        "reads": result["reads"],
        "standby_reads": result["standby_reads"],
        **measures,
    }


def _replica_engines(app: flask.Flask, db: SessionORM) -> tuple[sa.Engine, ...]:
    with app.app_context():
        return db.replica_engines.get("default", ())
