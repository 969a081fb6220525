"""The app of the read replicas load test, served by gunicorn.

Configured from the environment (``REPLICA_PRIMARY_URL``, and
``REPLICA_STANDBY_URL``: empty for a run without replicas), so that no URL
appears on a command line.
"""

from __future__ import annotations

import os
import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class LoadEntry(Base):
    __tablename__ = "replica_load_entry"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(80), unique=True)


WHO = sa.text("SELECT pg_is_in_recovery()")


def create_app() -> flask.Flask:
    app = flask.Flask(__name__)
    standby = os.environ.get("REPLICA_STANDBY_URL")
    app.config.update(
        SECRET_KEY="load test",
        SESSION_ORM_DATABASE_URL=os.environ["REPLICA_PRIMARY_URL"],
        SESSION_ORM_ENGINE_OPTIONS={"pool_size": 4, "max_overflow": 4},
        SESSION_ORM_REPLICAS={"default": [standby]} if standby else {},
        SESSION_ORM_REPLICA_MAX_LAG_SECONDS=None,
    )
    db = SessionORM(app)

    @app.post("/entries")
    def create() -> flask.Response:
        entry = LoadEntry(key=flask.request.form["key"])
        db.session.add(entry)
        db.session.flush()
        return flask.redirect(f"/entries/{entry.key}")

    @app.get("/entries/<key>")
    def show(key: str) -> dict[str, t.Any]:
        entry = db.first_or_404(sa.select(LoadEntry).filter_by(key=key))
        return {"key": entry.key, "standby": db.session.scalar(WHO)}

    @app.get("/entries")
    def count() -> dict[str, t.Any]:
        total = db.session.scalar(sa.select(sa.func.count(LoadEntry.id)))
        return {"count": total, "standby": db.session.scalar(WHO)}

    return app
