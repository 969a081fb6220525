"""Team bookmarks: a small Flask service built on flask-session-orm.

Run it (SQLite files in the ``instance/`` folder, tables created on first start)::

    flask --app example_app run

Where each feature of the extension is used:

- ``db.session`` with the automatic commit: every view in ``pages.py`` (forms
  that Post/Redirect/Get: a 303 is a success and is committed) and ``api.py``.
- A 4xx rolls back what the view did: an import with an invalid item (``api.py``).
- A commit that fails goes through the error handlers: ``conflict()`` in
  ``pages.py`` and ``api.py`` turns a duplicate URL into a 409.
- Two engines, the audit models bound to ``audit`` by ``SESSION_ORM_BINDS`` in
  the config below, not in the models (``models.py``).
- ``db.on_commit``: audit entries written only once the change committed, and
  dropped with a savepoint that is rolled back (``audit.py``, ``bookmarks.py``).
- ``@db.no_autocommit``: the import preview (``api.py``).
- ``db.has_changes``: no audit entry for a form saved unchanged (``bookmarks.py``).
- A streamed response using the session: the CSV export (``pages.py``).
- Outside requests nothing is committed for you: ``flask seed`` (``cli.py``).
- ``flask db-shell`` and ``flask shell`` come with the extension.
- Seeing the queries: in debug mode (``flask --app example_app run --debug``)
  the front page with ``?nplusone=1`` loads each bookmark's tags with a query of
  its own, and the extension warns about that N+1 (``pages.py``); without the
  flag the tags come with one ``selectinload`` query (``bookmarks.search``).
"""

from __future__ import annotations

import os
import typing as t

import flask
import sqlalchemy as sa

from flask_session_orm import SessionORM

db = SessionORM()

#: Plain environment variables read by :func:`create_app`. Flask's own
#: ``FLASK_<KEY>`` variables (``FLASK_SESSION_ORM_DATABASE_URL``,
#: ``FLASK_SESSION_ORM_ECHO=true``, ...) are read too, and win over these.
ENVIRONMENT = ("SESSION_ORM_DATABASE_URL", "AUDIT_DATABASE_URL")


def create_app(config: t.Mapping[str, t.Any] | None = None) -> flask.Flask:
    """Create the app.

    The databases are, first match wins: the ``config`` argument,
    ``FLASK_SESSION_ORM_DATABASE_URL`` / ``FLASK_AUDIT_DATABASE_URL``,
    ``SESSION_ORM_DATABASE_URL`` / ``AUDIT_DATABASE_URL``, and two SQLite files in
    the instance folder. The tables are created if they do not exist.

    :param config: Config keys that override everything else (tests use it).
    """
    app = flask.Flask(__name__)
    app.config.from_mapping(
        # Relative SQLite paths are placed in the app's instance folder.
        SESSION_ORM_DATABASE_URL="sqlite:///bookmarks.db",
        # Not a SESSION_ORM_ key: the extension reads only its own keys (and
        # rejects unknown ones with that prefix). It becomes the "audit" engine.
        AUDIT_DATABASE_URL="sqlite:///audit.db",
        # Which engine a model uses is configuration: every model derived from
        # AuditModel goes to the "audit" engine.
        SESSION_ORM_BINDS={"example_app.models:AuditModel": "audit"},
        # The session ends with the request, right after its commit, so stale
        # objects are not a risk; keeping them loaded lets the on_commit
        # callbacks (audit.py) read the committed bookmarks without a query.
        SESSION_ORM_EXPIRE_ON_COMMIT=False,
    )
    for name in ENVIRONMENT:
        if os.environ.get(name):
            app.config[name] = os.environ[name]
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    app.config.setdefault(
        "SESSION_ORM_ENGINES", {"audit": app.config["AUDIT_DATABASE_URL"]}
    )

    db.init_app(app)

    from . import api
    from . import cli
    from . import pages
    from .models import Base

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.cli.add_command(cli.seed)

    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name == "sqlite":
                _sqlite_savepoints(engine)
        # Zero configuration: create the tables, each in the database its model
        # is bound to, if they do not exist yet. (A real deployment would use
        # migrations, e.g. Alembic, instead.)
        db.create_all(Base)
    return app


def _sqlite_savepoints(engine: sa.Engine) -> None:
    """Make SAVEPOINT work on SQLite (SQLAlchemy's documented recipe).

    Python's sqlite3 driver begins transactions itself, late, and a SAVEPOINT
    issued before that starts one that its RELEASE commits: the import's
    per-item savepoints would commit rows that the request later rolls back.
    Turning the driver's handling off and emitting BEGIN ourselves fixes that.
    """

    @sa.event.listens_for(engine, "connect")
    def _driver_transactions_off(dbapi_connection: t.Any, record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")
