"""What seeing the queries costs per request: the same app with query recording,
Server-Timing and the slow query log off, and with each of them on.

    python benchmarks/recording_cost.py            # quick: about 20 seconds

In-process WSGI calls on a SQLite file, as ``run.py`` measures. Rounds of the
variants are interleaved, in random order, so that a change in the machine's
load hits all of them alike; each cell is the fastest round's microseconds per
request, the one least disturbed by other work on the machine.
Writes ``benchmarks/results/quick/recording.md``.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import typing as t
import warnings
from pathlib import Path

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm
import werkzeug.test

from flask_session_orm import NPlusOneWarning
from flask_session_orm import SessionORM

HERE = Path(__file__).resolve().parent


class Base(orm.DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "parent"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    children: orm.Mapped[list[Child]] = orm.relationship()


class Child(Base):
    __tablename__ = "child"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    parent_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Parent.id))


#: Variant name -> the extension's config for it.
VARIANTS: dict[str, dict[str, t.Any]] = {
    "all off": {"SESSION_ORM_RECORD_QUERIES": False},
    "record queries": {"SESSION_ORM_RECORD_QUERIES": True},
    "Server-Timing": {
        "SESSION_ORM_RECORD_QUERIES": False,
        "SESSION_ORM_SERVER_TIMING": True,
    },
    "slow log (60 s)": {
        "SESSION_ORM_RECORD_QUERIES": False,
        "SESSION_ORM_SLOW_QUERY_SECONDS": 60,
    },
}
#: Scenario -> path.
SCENARIOS = {
    "noop": "/noop",
    "read": "/read",
    "read-many (10 gets)": "/read-many",
    "lazy loop (10 lazy loads)": "/lazy",
}


def make_app(url: str, config: dict[str, t.Any], instance: str) -> flask.Flask:
    app = flask.Flask(__name__, instance_path=instance)
    app.config.update(
        SESSION_ORM_DATABASE_URL=url, SESSION_ORM_NPLUSONE_THRESHOLD=None, **config
    )
    db = SessionORM(app)

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return db.session.get(Parent, 1).name  # type: ignore[union-attr]

    @app.get("/read-many")
    def read_many() -> str:
        return ",".join(db.session.get(Parent, i).name for i in range(1, 11))  # type: ignore[union-attr]

    @app.get("/lazy")
    def lazy() -> str:
        parents = db.session.scalars(sa.select(Parent).limit(10)).all()
        return str(sum(len(parent.children) for parent in parents))

    return app


def caller(app: flask.Flask, path: str) -> t.Callable[[], None]:
    environ = werkzeug.test.EnvironBuilder(path=path).get_environ()

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"{path}: {status}")

    def call() -> None:
        body = app(environ.copy(), start_response)
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()

    return call


def per_request_us(call: t.Callable[[], None], seconds: float) -> float:
    """Microseconds per request over a batch of about ``seconds``."""
    count = 0
    gc.disable()
    try:
        # CPU time of this process: the machine is shared, and time spent
        # waiting for a core is not the request's cost.
        start = time.process_time()
        end = start + seconds
        while True:
            for _ in range(20):
                call()
            count += 20
            now = time.process_time()
            if now >= end:
                break
    finally:
        gc.enable()
    return (now - start) / count * 1e6


def calls_per_request(call: t.Callable[[], None]) -> int:
    """Python function calls made by one request: exact, whatever the load."""
    call()
    count = 0

    def profile(frame: t.Any, event: str, arg: t.Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=float, default=0.05, help="seconds")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", NPlusOneWarning)
    directory = tempfile.mkdtemp(prefix="recording-bench-")
    url = f"sqlite:///{directory}/bench.db"
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with orm.Session(engine) as session:
        for i in range(1, 11):
            session.add(Parent(id=i, name=f"p{i}", children=[Child(), Child()]))
        session.commit()
    engine.dispose()
    cells: dict[tuple[str, str], t.Callable[[], None]] = {}
    for variant, config in VARIANTS.items():
        app = make_app(url, config, directory)
        for scenario, path in SCENARIOS.items():
            cells[scenario, variant] = caller(app, path)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in cells}
    for call in cells.values():
        per_request_us(call, 0.05)  # warm up
    order = list(cells)
    for round_ in range(args.rounds):
        random.shuffle(order)
        for key in order:
            samples[key].append(per_request_us(cells[key], args.batch))
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
    lines = [
        "Preliminary: quick run on a shared 2-core machine, other jobs running;"
        f" CPU µs per request, the fastest of {args.rounds} rounds (the least"
        " disturbed by the machine's load), in-process WSGI, SQLite file.",
        "",
        "| scenario | " + " | ".join(VARIANTS) + " |",
        "|---|" + "---:|" * len(VARIANTS),
    ]
    for scenario in SCENARIOS:
        base = min(samples[scenario, "all off"])
        row = [f"{base:.1f}"]
        for variant in list(VARIANTS)[1:]:
            value = min(samples[scenario, variant])
            row.append(f"{value:.1f} ({(value / base - 1) * 100:+.0f}%)")
        lines.append(f"| {scenario} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Python function calls per request (exact):",
        "",
        "| scenario | " + " | ".join(VARIANTS) + " |",
        "|---|" + "---:|" * len(VARIANTS),
    ]
    for scenario in SCENARIOS:
        counts = [calls_per_request(cells[scenario, v]) for v in VARIANTS]
        row = [str(counts[0])] + [f"{c} ({c - counts[0]:+d})" for c in counts[1:]]
        lines.append(f"| {scenario} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / "quick" / "recording.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
