"""A purpose-built app for the reliability run, served by gunicorn.

Everything it needs comes from environment variables set by the test that starts
gunicorn, so the database URL (and its password) never appears on a command line:

``RELIABILITY_DATABASE_URL``
    The PostgreSQL URL.
``RELIABILITY_APP_NAME``
    The ``application_name`` of every connection, so the test can count and
    terminate exactly this app's backends in ``pg_stat_activity``.
``RELIABILITY_POOL_SIZE``, ``RELIABILITY_MAX_OVERFLOW``
    The pool limits (per process).
``RELIABILITY_REPORT_DIR``
    Where each worker writes its pool counters when it exits.
``RELIABILITY_TABLE``
    The table name (prefixed ``rel_``).
``RELIABILITY_NO_PREPARE``
    Optional: ``1`` sets psycopg's ``prepare_threshold=None`` (PgBouncer).
``RELIABILITY_PING_IDLE_AFTER``
    Optional: ``SESSION_ORM_PING_IDLE_AFTER`` in seconds, or ``none``; unset,
    the extension's default applies.

Each view uses one client-chosen key, so the test can check afterwards which
requests left a row behind.
"""

from __future__ import annotations

import json
import logging
import os
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import InternalServerError

from flask_session_orm import SessionORM

#: Response header that says which exception a 500 came from.
ERROR_HEADER = "X-Rel-Error"
#: Response header that says whether the 500 happened after COMMIT was sent.
COMMIT_HEADER = "X-Rel-Commit-Started"

_apps: list[tuple[flask.Flask, SessionORM]] = []
#: (process id, PostgreSQL backend pid) of every connection checked out.
_backends: set[tuple[int, int]] = set()
#: The process that built the app and the backend it used to touch the database.
_startup: dict[str, int] = {}


class Base(orm.DeclarativeBase):
    pass


def _table_name() -> str:
    name = os.environ.get("RELIABILITY_TABLE", "rel_item")
    if not name.startswith("rel_"):
        raise ValueError(f"RELIABILITY_TABLE must start with 'rel_', got {name!r}.")
    return name


class RelItem(Base):
    __tablename__ = _table_name()

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(80), unique=True)
    pid: orm.Mapped[int]


class DeliberateError(Exception):
    """Raised by the ``raise`` view; never handled by the app."""


class _DropDeliberate(logging.Filter):
    """Keep the deliberate exceptions out of the log, so every logged traceback
    is one the test has to explain."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DeliberateError)


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def create_app() -> flask.Flask:
    """Build the app; touches the database once (as many apps do at start-up)."""
    app = flask.Flask(__name__)
    app.logger.addFilter(_DropDeliberate())
    app.config.update(
        SESSION_ORM_DATABASE_URL=os.environ["RELIABILITY_DATABASE_URL"],
        SESSION_ORM_ENGINE_OPTIONS={
            "pool_size": _int_env("RELIABILITY_POOL_SIZE", 4),
            "max_overflow": _int_env("RELIABILITY_MAX_OVERFLOW", 4),
            "pool_timeout": 10,
            "connect_args": {
                "application_name": os.environ["RELIABILITY_APP_NAME"],
                "connect_timeout": 3,
            },
        },
    )
    ping = os.environ.get("RELIABILITY_PING_IDLE_AFTER")
    if ping is not None:
        # For comparisons: "none" (never ping), "0" (every checkout), seconds.
        app.config["SESSION_ORM_PING_IDLE_AFTER"] = (
            None if ping == "none" else float(ping)
        )
    if os.environ.get("RELIABILITY_NO_PREPARE") == "1":
        # Behind PgBouncer in transaction mode (see the docs' "Connection
        # poolers"): psycopg must not prepare statements.
        options = app.config["SESSION_ORM_ENGINE_OPTIONS"]
        options["connect_args"]["prepare_threshold"] = None
    db = SessionORM(app)
    _apps.append((app, db))

    def _commit_started(connection: sa.Connection) -> None:
        # Fires just before COMMIT goes to the server: a failure after this
        # point may or may not have stored the row.
        if flask.has_request_context():
            flask.g.rel_commit_started = True

    def _note_backend(dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        _backends.add((os.getpid(), dbapi_connection.info.backend_pid))

    with app.app_context():
        sa.event.listen(db.engine, "commit", _commit_started)
        sa.event.listen(db.engine, "checkout", _note_backend)
        if os.environ.get("RELIABILITY_SKIP_FORK_DISPOSE") == "1":
            # Negative control only: take the engine out of the extension's
            # after-fork disposal, so forked workers share the master's socket.
            from flask_session_orm import _state

            _state._all_engines.discard(db.engine)
        # With --preload this runs in the gunicorn master before it forks, and
        # leaves a pooled connection behind that the workers must not share.
        db.session.execute(sa.select(sa.func.count()).select_from(RelItem))
        raw = db.session.connection().connection.dbapi_connection
        _startup.update(pid=os.getpid(), backend=t.cast(t.Any, raw).info.backend_pid)

    @app.get("/rel/read/<key>")
    def read(key: str) -> flask.Response:
        found = db.session.scalar(sa.select(RelItem.id).where(RelItem.key == key))
        return flask.jsonify(found=found is not None)

    @app.post("/rel/write/<key>")
    def write(key: str) -> tuple[flask.Response, int]:
        db.session.add(RelItem(key=key, pid=os.getpid()))
        return flask.jsonify(key=key), 201

    @app.post("/rel/raise/<key>")
    def raise_(key: str) -> flask.Response:
        db.session.add(RelItem(key=key, pid=os.getpid()))
        db.session.flush()
        raise DeliberateError(key)

    @app.post("/rel/conflict/<key>")
    def conflict(key: str) -> flask.Response:
        db.session.add(RelItem(key=key, pid=os.getpid()))
        db.session.flush()
        flask.abort(409)

    @app.get("/rel/pool")
    def pool() -> flask.Response:
        return flask.jsonify(pid=os.getpid(), checkedout=_checked_out(db, app))

    @app.errorhandler(sa.exc.IntegrityError)
    def duplicate(e: sa.exc.IntegrityError) -> tuple[flask.Response, int]:
        # A write of a key that exists fails at COMMIT (the INSERT is flushed
        # there); the extension routes that failure to this handler.
        return flask.jsonify(error="IntegrityError"), 409

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[flask.Response, int]:
        return flask.jsonify(error=e.name), e.code or 500

    @app.errorhandler(InternalServerError)
    def internal_error(
        e: InternalServerError,
    ) -> tuple[flask.Response, int, dict[str, str]]:
        original = e.original_exception
        name = type(original).__name__ if original is not None else "none"
        started = "yes" if flask.g.get("rel_commit_started") else "no"
        return (
            flask.jsonify(error=name),
            500,
            {ERROR_HEADER: name, COMMIT_HEADER: started},
        )

    return app


def _checked_out(db: SessionORM, app: flask.Flask) -> int:
    with app.app_context():
        return sum(
            t.cast(t.Any, engine.pool).checkedout() for engine in db.engines.values()
        )


def write_report(pid: int) -> None:
    """Write this process's pool counters to ``RELIABILITY_REPORT_DIR``."""
    directory = os.environ.get("RELIABILITY_REPORT_DIR")
    if not directory:
        return
    report = {
        "pid": pid,
        "checkedout": sum(_checked_out(db, app) for app, db in _apps),
        "apps": len(_apps),
        "backends": sorted(b for p, b in _backends if p == pid),
        "startup_pid": _startup.get("pid"),
        "startup_backend": _startup.get("backend"),
    }
    with open(os.path.join(directory, f"worker-{pid}.json"), "w") as f:
        json.dump(report, f)
