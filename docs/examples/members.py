"""The models of the "Using it with other extensions" page."""

import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

db = SessionORM()


class Base(orm.DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "team"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50), unique=True)

    def __str__(self):
        return self.name


class User(Base):
    __tablename__ = "users"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    email: orm.Mapped[str | None] = orm.mapped_column(sa.String(120))
    team_id: orm.Mapped[int | None] = orm.mapped_column(sa.ForeignKey("team.id"))
    team: orm.Mapped[Team | None] = orm.relationship()
