"""Measure the per-request cost of flask-session-orm against its peers.

Run ``python benchmarks/run.py`` (``--quick`` for a smoke run). It prints the
comparison table and writes it, with the raw numbers and a chart, to
``benchmarks/results/`` (``benchmarks/results/quick/`` for ``--quick``). See
``benchmarks/README.md`` for what is measured and how.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import bench_apps
import bench_load
import bench_report
import flask
import sqlalchemy as sa
import werkzeug.test

HERE = Path(__file__).resolve().parent
#: The same create_engine options for every variant of the equal-options rows:
#: no pre-ping, and no idle ping either (flask-session-orm installs that only
#: when pool_pre_ping is not given). The "(defaults)" rows give no options, so
#: each variant runs as its users get it.
ENGINE_OPTIONS: dict[str, t.Any] = {"pool_pre_ping": False}
OURS = "flask-session-orm"
HAND = "hand-written"
#: The scenarios whose views only read: where the peers' explicit-commit views
#: end with a rollback instead of a commit.
READS = ("read", "read-many")
BARE = "flask-only"


@dataclasses.dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    rounds: int
    batch_seconds: float
    warmup_seconds: float
    server_seconds: float
    server_rounds: int
    rss_requests: tuple[int, int]
    #: Also measure hand-written's RSS, as the reference.
    rss_reference: bool
    #: (scenario, backend) pairs of the real-server run.
    server_cells: tuple[tuple[str, str], ...]
    init_repeats: int
    quick: bool


FULL = Settings(
    rounds=80,
    batch_seconds=0.05,
    warmup_seconds=0.2,
    server_seconds=2.5,
    server_rounds=3,
    rss_requests=(1_000, 100_000),
    rss_reference=True,
    server_cells=(("noop", "sqlite"), ("read", "sqlite"), ("read", "postgresql")),
    init_repeats=20,
    quick=False,
)
QUICK = Settings(
    rounds=5,
    batch_seconds=0.01,
    warmup_seconds=0.05,
    server_seconds=1.0,
    server_rounds=1,
    rss_requests=(1_000, 5_000),
    rss_reference=False,
    server_cells=(("read", "sqlite"), ("read", "postgresql")),
    init_repeats=5,
    quick=True,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- in-process WSGI calls --------------------------------------------------------

Call = t.Callable[[], str]


def wsgi_caller(app: flask.Flask, method: str, path: str) -> Call:
    """A function that runs one request through ``app`` and returns its status."""
    builder = werkzeug.test.EnvironBuilder(path=path, method=method)
    environ = builder.get_environ()
    builder.close()
    last = [""]

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> None:
        last[0] = status

    def call() -> str:
        body = app(environ.copy(), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return last[0]

    return call


def run_batch(call: Call, count: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds per request over ``count`` requests; every
    request must answer 200.
    """
    failed = 0
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        if call() != "200 OK":
            failed += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if failed:
        raise RuntimeError(f"{failed} of {count} requests did not answer 200 OK.")
    return elapsed / count, cpu / count


Samples = dict[str, list[float]]


def measure(cells: dict[str, Call], settings: Settings) -> dict[str, Samples]:
    """Microseconds per request of every cell, one value per round, as wall-clock
    time (``"wall"``) and as this process's CPU time (``"cpu"``: what the
    request costs here, without the database server's time nor the time other
    programs took the CPU away).

    Each cell is warmed up and given a batch size that lasts about
    ``batch_seconds``. Cells are compared within their group (the part of the
    key before ``|``, the scenario), so the groups are measured one after the
    other: a write cell's fsync then never lands in the middle of a read
    cell's round. Within a group every round runs each cell's batch once, in a
    new random order, so that a slow moment of the machine hits all cells
    alike.
    """
    batches: dict[str, int] = {}
    for key, call in cells.items():
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < settings.warmup_seconds or count < 20:
            run_batch(call, 1)
            count += 1
        per_call = (time.perf_counter() - start) / count
        batches[key] = max(3, int(settings.batch_seconds / per_call))
    rng = random.Random(8)
    results: dict[str, Samples] = {key: {"wall": [], "cpu": []} for key in cells}
    groups: dict[str, list[str]] = {}
    for key in cells:
        groups.setdefault(key.split("|", 1)[0], []).append(key)
    # What exists now (apps, mappers, compiled-statement caches) lives as long
    # as the run; frozen, it is not walked again by every collection, so that
    # the collection before each batch is short and a batch does not pay for a
    # full collection triggered by the previous cell's garbage.
    gc.collect()
    gc.freeze()
    try:
        for order in groups.values():
            for _ in range(settings.rounds):
                rng.shuffle(order)
                for key in order:
                    gc.collect()
                    wall, cpu = run_batch(cells[key], batches[key])
                    results[key]["wall"].append(wall * 1e6)
                    results[key]["cpu"].append(cpu * 1e6)
    finally:
        gc.unfreeze()
    return results


def sql_per_request(cells: dict[str, Call]) -> dict[str, str]:
    """What each cell sends to the database in one request: statements and how
    the transaction ends. Listens only during this check, never while timing.
    """
    seen: list[str] = []

    def on_execute(*args: t.Any) -> None:
        seen.append("statement")

    def on_commit(connection: sa.Connection) -> None:
        seen.append("COMMIT")

    def on_rollback(connection: sa.Connection) -> None:
        seen.append("ROLLBACK")

    listeners: list[tuple[str, t.Callable[..., None]]] = [
        ("before_cursor_execute", on_execute),
        ("commit", on_commit),
        ("rollback", on_rollback),
    ]
    for name, fn in listeners:
        sa.event.listen(sa.Engine, name, fn)
    out = {}
    try:
        for key, call in cells.items():
            seen.clear()
            run_batch(call, 1)
            statements = seen.count("statement")
            ends = [x for x in seen if x != "statement"]
            text = f"{statements} statement{'s' if statements != 1 else ''}"
            out[key] = " + ".join([text, *ends]) if seen else "no SQL"
    finally:
        for name, fn in listeners:
            sa.event.remove(sa.Engine, name, fn)
    return out


def section_inprocess(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """Every variant and scenario, per backend."""
    out: dict[str, t.Any] = {}
    for backend, url in backends.items():
        log(f"in-process: {backend}")
        variants = [
            *bench_apps.VARIANTS,
            *[v + bench_apps.DEFAULTS for v in bench_apps.DATABASE_VARIANTS],
            bench_apps.FSA_COMMIT_VARIANT,
            bench_apps.TEARDOWN_VARIANT,
        ]
        if backend != "sqlite":
            variants.append(bench_apps.PRE_PING_VARIANT)
        built = {
            v: bench_apps.build(v, url, ENGINE_OPTIONS, str(workdir / "instance"))
            for v in variants
        }
        cells: dict[str, Call] = {}
        for v, variant in built.items():
            for scenario in bench_apps.SCENARIOS:
                if v in (BARE, bench_apps.TEARDOWN_VARIANT) and scenario != "noop":
                    continue
                if v == bench_apps.PRE_PING_VARIANT and scenario != "read":
                    continue
                if v == bench_apps.FSA_COMMIT_VARIANT and scenario not in READS:
                    continue
                method, path = bench_apps.ROUTES[scenario]
                cells[f"{scenario}|{v}"] = wsgi_caller(variant.app, method, path)
        try:
            sql = sql_per_request(cells)
            rounds = measure(cells, settings)
        finally:
            for variant in built.values():
                variant.dispose()
        table: dict[str, dict[str, t.Any]] = {}
        for key, values in rounds.items():
            scenario, v = key.split("|")
            table.setdefault(scenario, {})[v] = dict(values, sql=sql[key])
        out[backend] = table
    return out


SCALE_CONFIGS = {
    "1 engine, 1 model": (1, 1),
    "5 engines": (5, 1),
    "20 engines": (20, 1),
    "100 models": (1, 100),
    "500 models": (1, 500),
}
SCALE_SCENARIOS = ("read", "write")


def engine_urls(backend: str, url: str, count: int, directory: Path) -> dict[str, str]:
    """``count`` engine URLs: the default one and others that are never used."""
    urls = {"default": url}
    for i in range(1, count):
        if backend == "sqlite":
            urls[f"engine{i}"] = f"sqlite:///{directory / f'engine{i}.db'}"
        else:
            urls[f"engine{i}"] = url
    return urls


def section_scale(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """flask-session-orm with 1/5/20 engines and 1/100/500 mapped models."""
    out: dict[str, t.Any] = {}
    for backend, url in backends.items():
        log(f"scale: {backend}")
        built = {}
        cells: dict[str, Call] = {}
        for label, (engines, models) in SCALE_CONFIGS.items():
            urls = engine_urls(backend, url, engines, workdir / "scale")
            variant = bench_apps.scaled_app(
                urls, models, ENGINE_OPTIONS, str(workdir / "instance")
            )
            built[label] = variant
            for scenario in SCALE_SCENARIOS:
                method, path = bench_apps.ROUTES[scenario]
                cells[f"{scenario}|{label}"] = wsgi_caller(variant.app, method, path)
        try:
            rounds = measure(cells, settings)
        finally:
            for variant in built.values():
                variant.dispose()
        table: dict[str, dict[str, Samples]] = {}
        for key, values in rounds.items():
            scenario, label = key.split("|")
            table.setdefault(scenario, {})[label] = values
        out[backend] = table
    return out


# -- init_app ---------------------------------------------------------------------


def section_init_app(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """Time ``init_app`` with 20 engines and prove it opened no connection."""
    from flask_session_orm import SessionORM

    connects = [0]

    def on_connect(*args: t.Any) -> None:
        connects[0] += 1

    # A listener on the Pool class sees every DBAPI connection any engine opens.
    sa.event.listen(sa.pool.Pool, "connect", on_connect)
    out: dict[str, t.Any] = {}
    try:
        for backend, url in backends.items():
            log(f"init_app: {backend}")
            marker = "bench_init_app"
            if backend != "sqlite":
                url = sa.make_url(url).update_query_dict({"application_name": marker})
                url = url.render_as_string(hide_password=False)
            connects[0] = 0
            times, files, apps = [], [], []
            for repeat in range(settings.init_repeats + 1):
                directory = workdir / f"init-{backend}-{repeat}"
                urls = engine_urls(backend, url, 20, directory)
                if backend == "sqlite":
                    urls["default"] = f"sqlite:///{directory / 'default.db'}"
                    files.extend(directory / f"{name}.db" for name in urls)
                directory.mkdir(parents=True)
                app = flask.Flask(__name__, instance_path=str(directory))
                app.config["SESSION_ORM_ENGINES"] = urls
                db = SessionORM()
                start = time.perf_counter()
                db.init_app(app)
                times.append((time.perf_counter() - start) * 1e3)
                apps.append((app, db))
            # The check below connects itself: count before it.
            connections = connects[0]
            if backend == "sqlite":
                opened = [str(f) for f in files if f.exists()]
                physical = f"{len(opened)} database files created"
            else:
                opened = _pg_sessions(backends[backend], marker)
                physical = f"{len(opened)} server sessions named {marker!r}"
            for app, db in apps:
                with app.app_context():
                    if len(db.engines) != 20:
                        raise RuntimeError("init_app did not create 20 engines.")
                    for engine in db.engines.values():
                        engine.dispose()
            warm = times[1:]
            out[backend] = {
                "first_ms": times[0],
                "median_ms": statistics.median(warm),
                "max_ms": max(warm),
                "connections": connections,
                "physical": physical,
                "opened": opened,
            }
    finally:
        sa.event.remove(sa.pool.Pool, "connect", on_connect)
    return out


def _pg_sessions(url: str, marker: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :name"
                ),
                {"name": marker},
            )
            return [str(row[0]) for row in rows]
    finally:
        engine.dispose()


# -- RSS --------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status.")


def rss_child(spec: dict[str, t.Any]) -> dict[str, t.Any]:
    """In a fresh process: RSS after the first and after all requests."""
    variant = bench_apps.build(
        spec["variant"], spec["url"], ENGINE_OPTIONS, spec["instance"]
    )
    method, path = bench_apps.ROUTES[spec["scenario"]]
    call = wsgi_caller(variant.app, method, path)
    first, total = spec["requests"]
    run_batch(call, first)
    gc.collect()
    before = rss_bytes()
    elapsed, _ = run_batch(call, total - first)
    gc.collect()
    after = rss_bytes()
    variant.dispose()
    return {
        "before": before,
        "after": after,
        "growth": after - before,
        "us_per_request": elapsed * 1e6,
    }


def section_rss(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """RSS growth from the first to the last of many ``read`` requests."""
    out: dict[str, t.Any] = {}
    for backend, url in backends.items():
        out[backend] = {}
        # hand-written is the reference for what Flask and SQLAlchemy keep;
        # once (on SQLite) is enough, and saves a long PostgreSQL run.
        reference = settings.rss_reference and backend == "sqlite"
        for v in (OURS, HAND) if reference else (OURS,):
            log(f"rss: {backend} {v}")
            spec = {
                "variant": v,
                "url": url,
                "instance": str(workdir / "instance"),
                "scenario": "read",
                "requests": list(settings.rss_requests),
            }
            # The spec goes through stdin: the URL may hold a password, which
            # must not show on a command line.
            done = subprocess.run(
                [sys.executable, __file__, "--rss-child"],
                input=json.dumps(spec),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"The RSS child failed:\n{done.stderr}")
            out[backend][v] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# -- PgBouncer --------------------------------------------------------------------

#: What psycopg 3 needs behind PgBouncer in transaction mode (PgBouncer before
#: 1.21 cannot follow prepared statements from one server connection to another).
NO_PREPARE: dict[str, t.Any] = {"connect_args": {"prepare_threshold": None}}
#: The cells of the PgBouncer section: label -> (variant factory, through
#: PgBouncer or direct, engine options).
PGBOUNCER_CELLS: dict[str, tuple[str, bool, dict[str, t.Any]]] = {
    HAND: (HAND, True, {**ENGINE_OPTIONS, **NO_PREPARE}),
    "flask-sqlalchemy": ("flask-sqlalchemy", True, {**ENGINE_OPTIONS, **NO_PREPARE}),
    OURS: (OURS, True, {**ENGINE_OPTIONS, **NO_PREPARE}),
    f"{OURS}, its defaults": (OURS, True, NO_PREPARE),
    f"{OURS}, pool_pre_ping=True": (OURS, True, {"pool_pre_ping": True, **NO_PREPARE}),
    f"{OURS}, NullPool": (OURS, True, {"poolclass": sa.pool.NullPool, **NO_PREPARE}),
    f"{HAND}, NullPool": (HAND, True, {"poolclass": sa.pool.NullPool, **NO_PREPARE}),
    f"{HAND}, direct (no PgBouncer)": (HAND, False, dict(ENGINE_OPTIONS)),
    f"{OURS}, its defaults, direct (no PgBouncer)": (OURS, False, {}),
}


def start_pgbouncer(url: str, schema: str | None) -> t.Any:
    """PgBouncer (transaction mode) in front of the server of ``url``, with a
    database ``bench`` whose server connections use the run's schema.
    """
    sys.path.insert(0, str(HERE.parent))
    from tests.servers import PgBouncer

    parsed = sa.make_url(url)
    target = (
        f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432}"
        f" dbname={parsed.database or 'postgres'}"
    )
    if schema is not None:
        # Transaction pooling shares server connections between clients, so a
        # per-client search_path cannot be used; every server connection of
        # this PgBouncer gets the run's schema when it is opened.
        target += f" connect_query='SET search_path TO {schema}'"
    bouncer = PgBouncer(databases={"bench": target}, user=parsed.username or "postgres")
    bouncer.start()
    return bouncer


def section_pgbouncer(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """The read scenario through PgBouncer in transaction mode."""
    if "postgresql" not in backends:
        return {}
    bouncer = PGBOUNCER["server"]
    bounced = bouncer.url("bench")
    log(f"pgbouncer {bouncer.version()}: read")
    method, path = bench_apps.ROUTES["read"]
    built = {
        label: bench_apps.FACTORIES[factory](
            bounced if through else backends["postgresql"],
            dict(options),
            str(workdir / "instance"),
        )
        for label, (factory, through, options) in PGBOUNCER_CELLS.items()
    }
    cells = {
        f"read|{label}": wsgi_caller(variant.app, method, path)
        for label, variant in built.items()
    }
    try:
        rounds = measure(cells, settings)
    finally:
        for variant in built.values():
            variant.dispose()
    return {
        "version": bouncer.version(),
        "read": {key.split("|", 1)[1]: values for key, values in rounds.items()},
    }


#: The PgBouncer a run with --pgbouncer started, for section_pgbouncer.
PGBOUNCER: dict[str, t.Any] = {}


# -- gunicorn ---------------------------------------------------------------------


def section_server(
    backends: dict[str, str], settings: Settings, workdir: Path
) -> dict[str, t.Any]:
    """gunicorn with threads on loopback: requests/s and p99 per variant."""
    servers: dict[str, bench_load.Server] = {}
    cells: list[tuple[str, str, str]] = []
    try:
        for scenario, backend in settings.server_cells:
            if backend not in backends:
                continue
            defaults = [v + bench_apps.DEFAULTS for v in bench_apps.DATABASE_VARIANTS]
            for v in [*bench_apps.VARIANTS, *defaults]:
                if v in (BARE, bench_apps.TEARDOWN_VARIANT) and scenario != "noop":
                    continue
                if v in defaults and scenario == "noop":
                    continue
                label = f"{backend}-{v}"
                if label not in servers:
                    servers[label] = bench_load.Server(
                        v, backends[backend], ENGINE_OPTIONS, workdir, label
                    )
                cells.append((scenario, backend, v))
        for server in servers.values():
            server.wait_ready("/noop")
        if not settings.quick:
            # Warm up: the first requests of a worker import and compile.
            for scenario, backend, v in cells:
                server = servers[f"{backend}-{v}"]
                bench_load.load(server.url(bench_apps.ROUTES[scenario][1]), 1)
        runs: dict[tuple[str, str, str], list[dict[str, float]]] = {
            cell: [] for cell in cells
        }
        rng = random.Random(8)
        for round_ in range(settings.server_rounds):
            log(f"server: round {round_ + 1} of {settings.server_rounds}")
            rng.shuffle(cells)
            for cell in cells:
                scenario, backend, v = cell
                server = servers[f"{backend}-{v}"]
                path = bench_apps.ROUTES[scenario][1]
                runs[cell].append(
                    bench_load.load(server.url(path), settings.server_seconds)
                )
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, t.Any] = {"generator": bench_load.generator_name()}
    for (scenario, backend, v), values in runs.items():
        key = f"{scenario} ({backend})"
        out.setdefault(key, {})[v] = bench_load.median_of(values)
    return out


# -- environment ------------------------------------------------------------------


def versions(backends: dict[str, str]) -> dict[str, str]:
    """The versions the numbers belong to."""
    found = {"Python": platform.python_version()}
    for name in (
        "flask",
        "werkzeug",
        "sqlalchemy",
        "flask-sqlalchemy",
        "flask-sqlalchemy-lite",
        "flask-session-orm",
        "psycopg",
        "gunicorn",
    ):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    if commit.returncode == 0:
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(HERE.parent),
                "status",
                "--porcelain",
                "flask_session_orm",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        extra = " with uncommitted changes" if dirty else ""
        found["flask-session-orm"] += f" (commit {commit.stdout.strip()}{extra})"
    found["SQLite"] = sqlite3.sqlite_version
    if "postgresql" in backends:
        engine = sa.create_engine(backends["postgresql"])
        try:
            with engine.connect() as connection:
                found["PostgreSQL"] = str(
                    connection.exec_driver_sql("SHOW server_version").scalar()
                )
        finally:
            engine.dispose()
    return found


def machine() -> dict[str, t.Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform()}


# -- main -------------------------------------------------------------------------


def own_schema(url: str) -> tuple[str, str]:
    """Create a PostgreSQL schema for this run alone; return the URL that uses it
    (through the connection's search_path) and its name.

    Two runs on one database (or a run and a developer's test) then never see,
    drop or fill each other's benchmark table. Every variant gets the same URL.
    """
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    finally:
        engine.dispose()
    parsed = sa.make_url(url)
    options = f"{parsed.query.get('options', '')} -csearch_path={schema}".strip()
    parsed = parsed.update_query_dict({"options": options})
    return parsed.render_as_string(hide_password=False), schema


def drop_schema(url: str, schema: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


SECTIONS = {
    "inprocess": section_inprocess,
    "scale": section_scale,
    "init_app": section_init_app,
    "rss": section_rss,
    "server": section_server,
    "pgbouncer": section_pgbouncer,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of under a minute"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TEST_POSTGRES_URL") or None,
        metavar="URL",
        help="PostgreSQL URL (default: $TEST_POSTGRES_URL); rows are skipped without",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: benchmarks/results)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="in-process rounds per scenario (default: 80, 5 with --quick)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="also run the read scenario through PgBouncer (transaction mode),"
        " started on a free loopback port in front of the PostgreSQL server",
    )
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(json.loads(sys.stdin.read()))))
        return 0

    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 3:
            parser.error(f"--rounds must be 3 or more, got {args.rounds}")
        settings = dataclasses.replace(settings, rounds=args.rounds)
    out_dir = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    workdir = Path(tempfile.mkdtemp(prefix="flask-session-orm-bench-"))
    backends = {"sqlite": f"sqlite:///{workdir / 'bench.db'}"}
    notes = []
    schema = None
    if args.postgres:
        backends["postgresql"], schema = own_schema(args.postgres)
    else:
        notes.append(
            "PostgreSQL rows are skipped: neither --postgres nor TEST_POSTGRES_URL"
            " was given."
        )
    results: dict[str, t.Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "quick": settings.quick,
        "settings": dataclasses.asdict(settings),
        "versions": versions(backends),
        "machine": machine(),
        "backends": sorted(backends),
        "sqlite_dir": str(workdir),
        "load_before": os.getloadavg(),
        "notes": notes,
    }
    started = time.perf_counter()
    try:
        for url in backends.values():
            bench_apps.prepare_database(url)
        if args.pgbouncer and args.postgres:
            PGBOUNCER["server"] = start_pgbouncer(args.postgres, schema)
        for name, section in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            if name == "pgbouncer" and "server" not in PGBOUNCER:
                continue
            section_start = time.perf_counter()
            results[name] = section(backends, settings, workdir)
            log(f"  {name}: {time.perf_counter() - section_start:.0f} s")
    finally:
        if "server" in PGBOUNCER:
            PGBOUNCER.pop("server").cleanup()
        if schema is not None:
            drop_schema(args.postgres, schema)
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started

    out_dir.mkdir(parents=True, exist_ok=True)
    report = bench_report.Report(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "results.md").write_text(report.markdown())
    (out_dir / "results.rst").write_text(report.rst())
    if "inprocess" in results:
        bench_report.chart(results, out_dir / "chart.png")
    print(report.markdown())
    log(f"written to {out_dir} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
