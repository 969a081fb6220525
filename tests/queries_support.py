"""Models and fixture code shared by the query recording tests."""

from __future__ import annotations

import typing as t

import flask
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "orm_test_author"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    books: orm.Mapped[list[Book]] = orm.relationship(
        back_populates="author", order_by="Book.id"
    )


class Book(Base):
    __tablename__ = "orm_test_book"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    author_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Author.id))
    author: orm.Mapped[Author] = orm.relationship(back_populates="books")


Make = t.Callable[..., SessionORM]


def databases(app: flask.Flask) -> t.Iterator[Make]:
    """The body of the ``make_db`` fixtures: init the extension with extra
    config, with 8 authors of 2 books each; drop the tables at the end.
    """
    made: list[SessionORM] = []

    def make(**config: t.Any) -> SessionORM:
        app.config.update(config)
        db = SessionORM(app)
        made.append(db)
        with app.app_context():
            db.drop_all(Base)
            db.create_all(Base)
            with db.sessionmaker.begin() as session:
                for i in range(8):
                    books = [Book(title=f"b{i}.{j}") for j in range(2)]
                    session.add(Author(name=f"a{i}", books=books))
        return db

    yield make
    for db in made:
        if flask.has_request_context():
            db.session.close()
        with app.app_context():
            db.drop_all(Base)
            for engine in db.engines.values():
                engine.dispose()
