"""Schema migrations page: Flask-Migrate on one database."""

import sqlalchemy as sa
import sqlalchemy.orm as orm
from flask import Flask
from flask_migrate import Migrate

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)


db = SessionORM(metadata=Base)
migrate = Migrate()

# db.metadata is Base.metadata: a plain table joins the models' tables.
followers = sa.Table(
    "followers",
    db.metadata,
    sa.Column("follower_id", sa.ForeignKey(User.id), primary_key=True),
    sa.Column("followed_id", sa.ForeignKey(User.id), primary_key=True),
)


def create_app(config=None):
    app = Flask(__name__)
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///app.db"
    app.config.update(config or {})
    db.init_app(app)
    migrate.init_app(app, db)
    return app
