"""A small notes application that uses flask-session-orm."""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "note"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(200))


def create_app(config: t.Mapping[str, t.Any] | None = None) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.from_mapping(SESSION_ORM_DATABASE_URL="sqlite:///example.db")
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    db.init_app(app)
    with app.app_context():
        db.create_all(Base)

    @app.get("/")
    def index() -> str:
        notes = db.session.scalars(sa.select(Note).order_by(Note.id))
        return "\n".join(n.text for n in notes) or "no notes yet"

    @app.post("/")
    def add() -> flask.Response:
        db.session.add(Note(text=flask.request.form["text"]))
        return flask.redirect(flask.url_for("index"))

    return app
