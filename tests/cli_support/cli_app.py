"""The app that ``flask --app`` loads in the command-line tests.

Its database URL and instance path come from ``CLI_TEST_DATABASE_URL`` and
``CLI_TEST_INSTANCE``.
"""

from __future__ import annotations

import os

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class CliBase(orm.DeclarativeBase):
    pass


class CliGadget(CliBase):
    __tablename__ = "cli_gadget"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    label: orm.Mapped[str] = orm.mapped_column(sa.String(50))


db = SessionORM()


def create_app() -> flask.Flask:
    app = flask.Flask(__name__, instance_path=os.environ["CLI_TEST_INSTANCE"])
    app.config["SESSION_ORM_DATABASE_URL"] = os.environ["CLI_TEST_DATABASE_URL"]
    db.init_app(app)
    return app
