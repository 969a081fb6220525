"""Schema migrations page: Flask-Migrate with two engines (flask db init --multidb)."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask_migrate import Migrate

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Order(Base):
    """No bind: the "default" engine."""

    __tablename__ = "order"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    total: orm.Mapped[int]


class AuditEntry(Base):
    """Bound in the code."""

    __tablename__ = "audit_entry"
    __bind_key__ = "audit"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    what: orm.Mapped[str] = orm.mapped_column(sa.String(200))


class LoginAttempt(Base):
    """Bound by the configuration, by table name."""

    __tablename__ = "login_attempt"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    user_name: orm.Mapped[str] = orm.mapped_column(sa.String(50), index=True)


db = SessionORM()
db.register_metadata(Base)  # the same as SessionORM(metadata=Base)
migrate = Migrate()


def create_app(config=None):
    app = Flask(__name__)
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///shop.db"
    app.config["SESSION_ORM_ENGINES"] = {"audit": "sqlite:///audit.db"}
    app.config["SESSION_ORM_BINDS"] = {"login_attempt": "audit"}
    app.config.update(config or {})
    db.init_app(app)
    migrate.init_app(app, db)
    return app
