"""A real gunicorn server under load and faults loses nothing, leaks nothing and
recovers.

Each test starts ``reliability_app`` under gunicorn (gthread workers) on
127.0.0.1 against PostgreSQL, drives it from a pool of client threads, then
checks every invariant with :func:`reliability_driver.analyse`. The short version
runs by default; ``--long`` (or ``RELIABILITY_LONG=1``) runs the full one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t
import uuid

import pytest
import reliability_app
import sqlalchemy as sa
from reliability_driver import SUMMARIES
from reliability_driver import ConnectionSampler
from reliability_driver import Faults
from reliability_driver import Load
from reliability_driver import Server
from reliability_driver import Summary
from reliability_driver import analyse
from reliability_driver import app_backends
from reliability_driver import ensure_postgres_running
from reliability_driver import fork_violations
from reliability_driver import stored_keys
from reliability_driver import with_password

from tests.servers import PgBouncer
from tests.servers import PostgresServer
from tests.servers import ServerUnavailable
from tests.servers import start_or_skip

#: Trust authentication accepts any password: one is set so that a leak shows.
PASSWORD = "rel-Secret-pw-7781"
TABLE = reliability_app.RelItem.__tablename__
#: Tracebacks the server may log while connections are being killed.
DISCONNECT_ERRORS = ("sqlalchemy.exc.OperationalError", "psycopg.OperationalError")


@dataclasses.dataclass(frozen=True)
class Plan:
    requests: int
    concurrency: int
    workers: int
    deadline: float
    preload: bool = False
    kill_interval: float | None = None
    restart_at: float | None = None


SHORT = {
    "steady": Plan(requests=1500, concurrency=32, workers=2, deadline=40),
    "faults": Plan(
        requests=3000, concurrency=32, workers=2, deadline=50, kill_interval=2.0
    ),
    "fork": Plan(requests=1500, concurrency=32, workers=3, deadline=40, preload=True),
}
LONG = {
    "steady": Plan(requests=20000, concurrency=32, workers=2, deadline=300),
    "faults": Plan(
        requests=20000,
        concurrency=32,
        workers=2,
        deadline=400,
        kill_interval=2.0,
        restart_at=0.5,
    ),
    "fork": Plan(requests=5000, concurrency=32, workers=3, deadline=200, preload=True),
}


@pytest.fixture
def table(postgres_url: str) -> t.Iterator[str]:
    """The app's table, created empty for the test and dropped after it."""
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    try:
        reliability_app.Base.metadata.drop_all(engine)
        reliability_app.Base.metadata.create_all(engine)
        yield TABLE
    finally:
        ensure_postgres_running()
        reliability_app.Base.metadata.drop_all(engine)
        engine.dispose()


def run(
    name: str,
    plan: Plan,
    postgres_url: str,
    workdir: str,
    extra_env: t.Mapping[str, str] | None = None,
    restart_server: t.Callable[[], None] | None = None,
    app_url: str | None = None,
    allowed_logged: tuple[str, ...] = DISCONNECT_ERRORS,
) -> Summary:
    """Serve, load, inject the plan's faults, stop, and check the invariants.

    ``app_url``: the URL the app uses, when it is not ``postgres_url`` (a
    pooler in front of it); the test always watches and kills through
    ``postgres_url``.
    """
    run_id = f"{re.sub(r'[^a-z]+', '-', name.lower())[:20]}-{uuid.uuid4().hex[:8]}"
    app_name = f"rel_app_{run_id}"
    server = Server(
        database_url=with_password(app_url or postgres_url, PASSWORD),
        app_name=app_name,
        table=TABLE,
        workdir=workdir,
        workers=plan.workers,
        preload=plan.preload,
        extra_env=extra_env,
    )
    sampler = ConnectionSampler(postgres_url, app_name)
    faults: Faults | None = None
    extra: list[str] = []
    try:
        server.start()
        sampler.start()
        load = Load(
            server.port,
            requests=plan.requests,
            concurrency=plan.concurrency,
            run_id=run_id,
            deadline=plan.deadline,
        )
        if plan.kill_interval is not None:
            faults = Faults(
                postgres_url,
                app_name,
                interval=plan.kill_interval,
                restart_at=plan.restart_at,
                progress=lambda: load.done / plan.requests,
                restart_server=restart_server,
            )
            faults.start()
        try:
            load.run()
        finally:
            if faults is not None:
                faults.stop()
                extra += [f"fault injector: {e}" for e in faults.errors]
        if load.done != plan.requests:
            extra.append(
                f"only {load.done} of {plan.requests} requests ran before the"
                f" {plan.deadline} s deadline"
            )
        # While the server still runs: nothing checked out, no open transaction.
        status, pool = server.get("/rel/pool")
        live_checked_out = pool["checkedout"] if status == 200 else -1
        idle_in_transaction = [
            (state, query)
            for state, query in app_backends(postgres_url, app_name)
            if state != "idle"
        ]
        if idle_in_transaction:
            extra.append(f"app backends not idle at the end: {idle_in_transaction}")
        leaked_argv = [line for line in server.command_lines() if PASSWORD in line]
        if leaked_argv:
            extra.append("the password is on a server command line")
    finally:
        server.stop()
        sampler.stop()
    reports = server.worker_reports()
    if len(reports) != plan.workers:
        extra.append(f"{len(reports)} worker reports for {plan.workers} workers")
    extra += fork_violations(reports)
    log = server.log()
    if PASSWORD in log:
        extra.append("the password appears in the server log")
    summary = analyse(
        name,
        load,
        stored_keys(postgres_url, TABLE, run_id),
        faults=faults,
        peak_connections=sampler.peak,
        connection_limit=server.connection_limit,
        checked_out_at_end=live_checked_out + sum(r["checkedout"] for r in reports),
        log=log,
        allowed_logged=allowed_logged if faults is not None else (),
    )
    summary.violations += extra
    SUMMARIES.append(summary.table())
    return summary


def plan_for(name: str, long_run: bool) -> Plan:
    return (LONG if long_run else SHORT)[name]


def test_steady_load_loses_nothing(
    postgres_url: str, table: str, long_run: bool, tmp_path: t.Any
) -> None:
    """Without faults every acknowledged write is stored, no refused one is, no
    request gets an unexpected error, and no connection is left checked out."""
    summary = run("steady", plan_for("steady", long_run), postgres_url, str(tmp_path))
    assert summary.violations == [], summary.table()
    assert summary.server_errors_5xx == 0, summary.table()
    assert summary.acknowledged > 0, summary.table()


def test_killed_backends_fail_only_requests_in_flight(
    postgres_url: str, table: str, long_run: bool, tmp_path: t.Any
) -> None:
    """With every app backend terminated every 2 seconds (and, in the long run,
    PostgreSQL restarted once) only requests in flight fail, the app serves
    again within a second, and the stored data matches the responses."""
    plan = plan_for("faults", long_run)
    summary = run("faults", plan, postgres_url, str(tmp_path))
    assert summary.violations == [], summary.table()
    assert summary.backends_terminated > 0, summary.table()
    if plan.restart_at is not None:
        assert summary.recovery_seconds is not None, summary.table()


def test_preloaded_workers_share_no_connection(
    postgres_url: str, table: str, long_run: bool, tmp_path: t.Any
) -> None:
    """With ``--preload`` and several workers, where the master used the database
    before forking, no request fails and no protocol error is logged."""
    summary = run("fork", plan_for("fork", long_run), postgres_url, str(tmp_path))
    assert summary.violations == [], summary.table()
    assert summary.server_errors_5xx == 0, summary.table()
    assert summary.logged == {}, summary.table()


def test_fork_check_detects_a_shared_connection(
    postgres_url: str, table: str, tmp_path: t.Any
) -> None:
    """The fork check is not vacuous: with the extension's after-fork disposal
    switched off, the workers' reports show the master's connection reused."""
    # One client, so that the workers never use the shared socket at the same
    # time: the check must see the sharing even when no request fails.
    plan = Plan(requests=20, concurrency=1, workers=2, deadline=30, preload=True)
    summary = run(
        "fork negative control (expected to break the fork invariant)",
        plan,
        postgres_url,
        str(tmp_path),
        extra_env={"RELIABILITY_SKIP_FORK_DISPOSE": "1"},
    )
    assert any("its master opened before forking" in v for v in summary.violations), (
        summary.table()
    )


#: The kills of the short "faults" run plus one restart, halfway; run on a
#: throw-away cluster, so it is part of the default run.
RESTART = Plan(
    requests=3000,
    concurrency=32,
    workers=2,
    deadline=60,
    kill_interval=2.0,
    restart_at=0.5,
)


@pytest.fixture
def own_postgres() -> t.Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster with the app's table (never the
    machine's: this one is restarted)."""
    server = start_or_skip(PostgresServer)
    try:
        engine = sa.create_engine(server.url, poolclass=sa.NullPool)
        reliability_app.Base.metadata.create_all(engine)
        engine.dispose()
        yield server
    finally:
        server.cleanup()


def test_restart_under_load_recovers_within_a_second(
    own_postgres: PostgresServer, long_run: bool, tmp_path: t.Any
) -> None:
    """With backends killed every 2 seconds and the (throw-away) PostgreSQL
    cluster restarted halfway, only requests in flight or in the restart
    window fail, the app serves again within a second of PostgreSQL being
    back, and the stored data matches the responses."""
    plan = LONG["faults"] if long_run else RESTART
    summary = run(
        "faults + restart (throw-away cluster)",
        plan,
        own_postgres.url,
        str(tmp_path),
        restart_server=own_postgres.restart,
    )
    assert summary.violations == [], summary.table()
    assert summary.recovery_seconds is not None, summary.table()


@pytest.fixture
def pgbouncer(postgres_url: str) -> t.Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the test's PostgreSQL."""
    url = sa.make_url(postgres_url)
    try:
        bouncer = PgBouncer(
            server_host=url.host or "127.0.0.1", server_port=url.port or 5432
        )
    except ServerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI is set: .ci/run must install it)")
        pytest.skip(str(e))
    with bouncer:
        yield bouncer


def test_killed_backends_behind_pgbouncer(
    postgres_url: str, table: str, pgbouncer: PgBouncer, tmp_path: t.Any
) -> None:
    """Through PgBouncer in transaction mode (psycopg with
    prepare_threshold=None), with the server backends terminated every 2
    seconds, only requests in flight fail and the stored data matches the
    responses."""
    database = sa.make_url(postgres_url).database or "postgres"
    summary = run(
        "faults through PgBouncer (transaction mode)",
        SHORT["faults"],
        postgres_url,
        str(tmp_path),
        app_url=pgbouncer.url(database),
        extra_env={"RELIABILITY_NO_PREPARE": "1"},
        # When PgBouncer's server connection dies during a command, psycopg
        # reports PgBouncer's error with the server's as "received 2 results
        # from command 'BEGIN'", an InternalError that SQLAlchemy does not
        # take for a disconnect; PgBouncer closes the client connection, and
        # its next use is one.
        allowed_logged=(*DISCONNECT_ERRORS, "sqlalchemy.exc.InternalError"),
    )
    assert summary.violations == [], summary.table()
    assert summary.backends_terminated > 0, summary.table()
