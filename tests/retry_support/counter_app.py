"""The counter experiment: concurrent requests increment one row under SERIALIZABLE.

Every request reads the counter, waits a moment (so that the requests overlap),
and writes the value plus one. Under ``SERIALIZABLE`` PostgreSQL lets only one of
the overlapping transactions commit and aborts the others with SQLSTATE 40001:
without retry they become 500 responses and their increments are lost; with
retry each runs again until it commits. Each commit's ``on_commit`` callback
inserts one row into a log table, through its own connection, so the test can
count how often callbacks ran even when gunicorn serves the app.

The app reads its settings from the environment, so gunicorn can load it as
``counter_app:create_app()``:

``RETRY_TEST_DATABASE_URL``
    The database URL.
``RETRY_TEST_ATTEMPTS``
    ``SESSION_ORM_RETRY_ATTEMPTS`` (1: no retry).
``RETRY_TEST_PAUSE``
    Seconds each request waits between its read and its write.

Run it as a script to print the experiment's numbers for the docs::

    TEST_POSTGRES_URL=postgresql+psycopg://... python tests/retry_support/counter_app.py
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import os
import sys
import threading
import time
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "orm_retry_counter"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    value: orm.Mapped[int]


#: One row per on_commit callback that ran.
commit_log = sa.Table(
    "orm_retry_commit_log",
    Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


def create_app(
    database_url: str | None = None,
    attempts: int | None = None,
    pause: float | None = None,
) -> flask.Flask:
    """The counter app; arguments left out are read from the environment."""
    if database_url is None:
        database_url = os.environ["RETRY_TEST_DATABASE_URL"]
    if attempts is None:
        attempts = int(os.environ.get("RETRY_TEST_ATTEMPTS", "1"))
    if pause is None:
        pause = float(os.environ.get("RETRY_TEST_PAUSE", "0.02"))
    app = flask.Flask(__name__)
    app.config.update(
        SESSION_ORM_DATABASE_URL=database_url,
        SESSION_ORM_RETRY_ATTEMPTS=attempts,
        SESSION_ORM_RETRY_BACKOFF=0.01,
        SESSION_ORM_RETRY_BACKOFF_MAX=0.1,
        SESSION_ORM_ENGINE_OPTIONS={"pool_size": 20, "max_overflow": 10},
    )
    db = SessionORM(app)
    app.extensions["counter_db"] = db

    def log_commit(value: int) -> None:
        with db.engine.begin() as connection:
            connection.execute(commit_log.insert().values(value=value))

    @app.post("/increment")
    @db.transaction(isolation_level="SERIALIZABLE")
    def increment() -> dict[str, int]:
        counter = db.session.get_one(Counter, 1)
        time.sleep(pause)
        counter.value += 1
        db.session.flush()
        db.on_commit(log_commit, counter.value)
        return {"value": counter.value, "attempt": db.attempt}

    return app


def reset(app: flask.Flask) -> None:
    """Create the tables, empty, with the counter at 0."""
    db: SessionORM = app.extensions["counter_db"]
    with app.app_context():
        db.drop_all(Base)
        db.create_all(Base)
        with db.engine.begin() as connection:
            connection.execute(sa.insert(Counter).values(id=1, value=0))


def drop(app: flask.Flask) -> None:
    """Drop the tables and close the pooled connections."""
    db: SessionORM = app.extensions["counter_db"]
    with app.app_context():
        db.drop_all(Base)
    dispose(app)


def dispose(app: flask.Flask) -> None:
    """Close the app's pooled connections."""
    db: SessionORM = app.extensions["counter_db"]
    with app.app_context():
        db.engine.dispose()


@dataclasses.dataclass
class Outcome:
    """What N concurrent clients got."""

    statuses: list[int]
    #: The counter's final value.
    value: int
    #: How many on_commit callbacks ran.
    callbacks: int
    #: The highest attempt number a successful response reported.
    max_attempt: int
    seconds: float

    @property
    def failures(self) -> int:
        return sum(status != 200 for status in self.statuses)


def read_outcome(
    app: flask.Flask, statuses: list[int], attempts: list[int], seconds: float
) -> Outcome:
    db: SessionORM = app.extensions["counter_db"]
    with app.app_context(), db.engine.connect() as connection:
        value = connection.scalar(sa.select(Counter.value).where(Counter.id == 1))
        count = sa.select(sa.func.count()).select_from(commit_log)
        callbacks = connection.scalar(count)
    return Outcome(
        statuses=statuses,
        value=int(value or 0),
        callbacks=int(callbacks or 0),
        max_attempt=max(attempts, default=0),
        seconds=seconds,
    )


def run_clients(
    clients: int, request: t.Callable[[], tuple[int, int]]
) -> tuple[list[int], list[int], float]:
    """Run ``request`` once in each of ``clients`` threads started together.

    Returns the statuses, the attempt numbers of the successful responses, and
    the time taken.
    """
    barrier = threading.Barrier(clients)

    def one() -> tuple[int, int]:
        barrier.wait()
        return request()

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: one(), range(clients)))
    seconds = time.perf_counter() - started
    return [r[0] for r in results], [r[1] for r in results if r[0] == 200], seconds


def in_process(app: flask.Flask, clients: int) -> Outcome:
    """N threads, each posting once through the app's test client."""

    def request() -> tuple[int, int]:
        response = app.test_client().post("/increment")
        attempt = response.json["attempt"] if response.status_code == 200 else 0
        return response.status_code, t.cast(int, attempt)

    return read_outcome(app, *run_clients(clients, request))


def over_http(app: flask.Flask, port: int, clients: int) -> Outcome:
    """N threads, each posting once to a server on 127.0.0.1:``port``."""

    def request() -> tuple[int, int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", "/increment")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        attempt = 0
        if response.status == 200:
            attempt = int(flask.json.loads(body)["attempt"])
        return response.status, attempt

    return read_outcome(app, *run_clients(clients, request))


def main() -> None:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        sys.exit("Set TEST_POSTGRES_URL to a PostgreSQL database to run on.")
    clients = int(os.environ.get("RETRY_TEST_CLIENTS", "16"))
    rounds = int(os.environ.get("RETRY_TEST_ROUNDS", "5"))
    for attempts in (1, clients):
        app = create_app(url, attempts=attempts, pause=0.02)
        # The 500s' tracebacks are expected here.
        app.logger.disabled = True
        outcomes = []
        for _ in range(rounds):
            reset(app)
            outcomes.append(in_process(app, clients))
        drop(app)
        print(
            f"attempts={attempts:<3} clients={clients} rounds={rounds}:"
            f" failed {[o.failures for o in outcomes]},"
            f" final value {[o.value for o in outcomes]},"
            f" on_commit ran {[o.callbacks for o in outcomes]},"
            f" most attempts {[o.max_attempt for o in outcomes]},"
            f" seconds {[round(o.seconds, 2) for o in outcomes]}"
        )


if __name__ == "__main__":
    main()
