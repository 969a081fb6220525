"""Page 1,000 of a 100,000-row table: OFFSET (``db.paginate``) against keyset
(``db.paginate_keyset``).

Run ``python benchmarks/keyset.py``. SQLite always runs (a file in a temporary
directory); PostgreSQL runs with ``--postgres URL`` or ``TEST_POSTGRES_URL``,
MariaDB/MySQL with ``--mysql URL`` or ``TEST_MYSQL_URL``. On a server the
table is called ``bench_keyset_<pid>`` and is dropped at the end.

Every measured call is one request context of its own (the session is closed
in its teardown, as after a real request), so the numbers include the ORM
loading the page's 100 objects. Printed: the median and the fastest of the
runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

START = datetime.datetime(2024, 1, 1)


def make_model(table_name: str) -> tuple[type[orm.DeclarativeBase], type[t.Any]]:
    """A declarative base and a post model on a table of that name."""

    class Base(orm.DeclarativeBase):
        pass

    class Post(Base):
        __tablename__ = table_name
        __table_args__ = (sa.Index(f"ix_{table_name}_created_id", "created", "id"),)

        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        created: orm.Mapped[datetime.datetime]
        title: orm.Mapped[str] = orm.mapped_column(sa.String(100))

    return Base, Post


def fill(db: SessionORM, post: type[t.Any], rows: int) -> None:
    """Insert ``rows`` posts; their creation times are not in id order."""
    chunk = 10_000
    with db.engine.begin() as connection:
        for low in range(0, rows, chunk):
            connection.execute(
                sa.insert(post),
                [
                    {
                        "id": i + 1,
                        # A permutation of the ids (7919 is prime to 100,000).
                        "created": START + datetime.timedelta(seconds=i * 7919 % rows),
                        "title": f"Post number {i + 1}",
                    }
                    for i in range(low, min(low + chunk, rows))
                ],
            )
        # Statistics, as a table in use has them: the planner's choices differ
        # without them.
        table = post.__table__.name
        analyze = {"postgresql": "ANALYZE {}", "sqlite": "ANALYZE {}"}.get(
            connection.dialect.name, "ANALYZE TABLE {}"
        )
        connection.execute(sa.text(analyze.format(table)))


def median_ms(call: t.Callable[[], object], repeat: int) -> tuple[float, float]:
    """The median and the fastest duration of ``call``, in milliseconds."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), min(times)


def cursor_before_page(
    app: flask.Flask, db: SessionORM, statement: sa.Select[t.Any], page: int, size: int
) -> str | None:
    """The cursor that leads to ``page``, found by walking the pages before it."""
    after: str | None = ""
    for _ in range(page - 1):
        with app.test_request_context():
            after = db.paginate_keyset(
                statement, per_page=size, after=after
            ).next_cursor
    return after


def measure(
    backend: str, url: str, rows: int, page: int, size: int, repeat: int
) -> list[tuple[str, str, str, float, float]]:
    """Time page ``page`` of the table with each method and ordering."""
    table_name = f"bench_keyset_{os.getpid()}"
    base, post = make_model(table_name)
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="benchmark", SESSION_ORM_DATABASE_URL=url)
    db = SessionORM(app)
    results = []
    with app.app_context():
        db.create_all(base)
    try:
        with app.app_context():
            fill(db, post, rows)
        orderings = {
            "id": sa.select(post).order_by(post.id),
            "created DESC, id DESC": sa.select(post).order_by(
                post.created.desc(), post.id.desc()
            ),
        }
        for name, statement in orderings.items():
            cursor = cursor_before_page(app, db, statement, page, size)

            def offset(
                count: bool, statement: sa.Select[t.Any] = statement
            ) -> list[int]:
                with app.test_request_context():
                    found = db.paginate(
                        statement, page=page, per_page=size, count=count
                    )
                    return [item.id for item in found]

            def keyset(
                statement: sa.Select[t.Any] = statement, cursor: str | None = cursor
            ) -> list[int]:
                with app.test_request_context():
                    found = db.paginate_keyset(statement, per_page=size, after=cursor)
                    return [item.id for item in found]

            # The same page by both methods, or the comparison means nothing.
            assert offset(False) == keyset(), f"{backend}, {name}: pages differ"
            assert len(keyset()) == size
            for method, call in (
                ("OFFSET (db.paginate)", lambda o=offset: o(True)),
                ("OFFSET, count=False", lambda o=offset: o(False)),
                ("keyset (db.paginate_keyset)", keyset),
            ):
                results.append((backend, name, method, *median_ms(call, repeat)))
    finally:
        with app.app_context():
            db.drop_all(base)
            db.engine.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL"))
    parser.add_argument("--mysql", default=os.environ.get("TEST_MYSQL_URL"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1_000)
    parser.add_argument("--per-page", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    if args.rows < args.page * args.per_page:
        parser.error("--rows must hold --page pages of --per-page rows")

    results = []
    with tempfile.TemporaryDirectory() as directory:
        backends = {"SQLite": f"sqlite:///{directory}/keyset.db"}
        if args.postgres:
            backends["PostgreSQL"] = args.postgres
        else:
            print("PostgreSQL skipped: give --postgres URL or set TEST_POSTGRES_URL.")
        if args.mysql:
            backends["MariaDB"] = args.mysql
        for backend, url in backends.items():
            print(f"{backend}: filling {args.rows:,} rows ...", file=sys.stderr)
            results += measure(
                backend, url, args.rows, args.page, args.per_page, args.repeat
            )

    print(
        f"\nPage {args.page:,} ({args.per_page} rows a page) of a {args.rows:,}-row"
        f" table: milliseconds per request, median and fastest of {args.repeat}\n"
    )
    header = ("backend", "ordering", "method", "median", "fastest", "vs keyset")
    keyset_ms = {
        (backend, ordering): ms
        for backend, ordering, method, ms, _ in results
        if method.startswith("keyset")
    }
    lines = [
        (
            backend,
            ordering,
            method,
            f"{ms:.2f}",
            f"{fastest:.2f}",
            f"{ms / keyset_ms[backend, ordering]:.1f}x",
        )
        for backend, ordering, method, ms, fastest in results
    ]
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]
    for line in (header, tuple("-" * w for w in widths), *lines):
        cells = (c.ljust(w) for c, w in zip(line, widths, strict=True))
        print(" | ".join(cells).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
