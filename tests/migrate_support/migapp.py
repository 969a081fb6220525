"""The app the Flask-Migrate tests run the real ``flask db`` commands on.

Copied into each test's directory and run in a subprocess (``flask --app migapp``).
``MIGAPP_DEFAULT_URL`` is the default engine; with ``MIGAPP_AUDIT_URL`` there is
a second engine, ``"audit"``, and three models bound to it three ways. Each app
context writes a line to ``MIGAPP_REPORT`` on teardown: the app's extensions,
whether Flask-SQLAlchemy was imported, and which engines connected.
"""

from __future__ import annotations

import json
import os
import sys

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask_migrate import Migrate

from flask_session_orm import SessionORM

AUDIT_URL = os.environ.get("MIGAPP_AUDIT_URL")


class Base(orm.DeclarativeBase):
    # Constraint names come from the convention: the per-engine copies must
    # give the same names, or the second migrate would see renamed constraints.
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Author(Base):
    __tablename__ = "mig_author"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)
    email: orm.Mapped[str] = orm.mapped_column(sa.String(100), index=True)


class Book(Base):
    __tablename__ = "mig_book"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    author_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("mig_author.id", ondelete="CASCADE")
    )
    title: orm.Mapped[str] = orm.mapped_column(sa.String(100))
    __table_args__ = (
        sa.UniqueConstraint("author_id", "title", name="uq_mig_book_title"),
        sa.Index("ix_mig_book_title", "title"),
    )


book_tag = sa.Table(
    "mig_book_tag",
    Base.metadata,
    sa.Column("book_id", sa.ForeignKey("mig_book.id"), primary_key=True),
    sa.Column("tag", sa.String(30), primary_key=True),
)

if AUDIT_URL:

    class Event(Base):
        """Bound to "audit" by its class path in SESSION_ORM_BINDS."""

        __tablename__ = "mig_event"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        what: orm.Mapped[str] = orm.mapped_column(sa.String(100), index=True)

    class Metric(Base):
        """Bound to "audit" by its table name in SESSION_ORM_BINDS."""

        __tablename__ = "mig_metric"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        event_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("mig_event.id"))
        value: orm.Mapped[int]

    class Archive(Base):
        """Bound to "audit" by __bind_key__."""

        __tablename__ = "mig_archive"
        __bind_key__ = "audit"
        id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
        body: orm.Mapped[str] = orm.mapped_column(sa.Text)


db = SessionORM(metadata=Base)
migrate = Migrate()
connected: list[int] = []


@sa.event.listens_for(sa.Engine, "engine_connect")
def _note_connection(connection: sa.Connection) -> None:
    connected.append(id(connection.engine))


def create_app() -> flask.Flask:
    app = flask.Flask(__name__, instance_path=os.environ["MIGAPP_INSTANCE"])
    app.config["SESSION_ORM_DATABASE_URL"] = os.environ["MIGAPP_DEFAULT_URL"]
    if AUDIT_URL:
        app.config["SESSION_ORM_ENGINES"] = {"audit": AUDIT_URL}
        app.config["SESSION_ORM_BINDS"] = {
            "migapp:Event": "audit",
            "mig_metric": "audit",
        }
    db.init_app(app)
    migrate.init_app(app, db)

    @app.teardown_appcontext
    def report(exc: BaseException | None) -> None:
        ours = {id(engine) for engine in db.engines.values()}
        line = {
            "extensions": sorted(app.extensions),
            "sqlalchemy_keys": sorted(k for k in app.config if "SQLALCHEMY" in k),
            "flask_sqlalchemy_imported": "flask_sqlalchemy" in sys.modules,
            "connections": len(connected),
            "foreign_connections": len([e for e in connected if e not in ours]),
        }
        with open(os.environ["MIGAPP_REPORT"], "a") as f:
            f.write(json.dumps(line) + "\n")

    return app
