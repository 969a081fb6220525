"""With several databases, the end of a request commits them in a fixed order."""

from __future__ import annotations

import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "order_note"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(sa.String(50))


class Parent(Base):
    __tablename__ = "order_parent"
    __bind_key__ = "two"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class Child(Base):
    __tablename__ = "order_child"
    __bind_key__ = "two"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    # Checked at COMMIT, so that the commit of this database fails.
    parent_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("order_parent.id", deferrable=True, initially="DEFERRED")
    )


def _sqlite_foreign_keys(dbapi_connection: t.Any, record: t.Any) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys = ON")


@pytest.fixture
def two_databases(
    backend: str, database_url: str, tmp_path: t.Any
) -> t.Iterator[tuple[flask.Flask, SessionORM]]:
    if backend == "mysql":
        pytest.skip(
            "MariaDB and MySQL have no deferred constraints: no commit of theirs"
            " fails on its own"
        )
    second = f"sqlite:///{tmp_path}/two.db" if backend == "sqlite" else database_url
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SESSION_ORM_ENGINES={"default": database_url, "two": second},
    )
    db = SessionORM(app)
    with app.app_context():
        if backend == "sqlite":
            for engine in db.engines.values():
                sa.event.listen(engine, "connect", _sqlite_foreign_keys)
        db.drop_all(Base)
        db.create_all(Base)

    @app.errorhandler(sa.exc.IntegrityError)
    def conflict(e: Exception) -> tuple[str, int]:
        return "conflict", 409

    @app.post("/write/<first>/<text>")
    def write(first: str, text: str) -> tuple[str, int]:
        # The database used first is committed first.
        if first == "default":
            db.session.add(Note(text=text))
            db.session.flush()
        db.session.add(Child(parent_id=12345))
        db.session.flush()
        if first == "two":
            db.session.add(Note(text=text))
            db.session.flush()
        return "created", 201

    yield app, db
    with app.app_context():
        db.drop_all(Base)
        for engine in db.engines.values():
            engine.dispose()


def stored(app: flask.Flask, db: SessionORM) -> tuple[list[str], int]:
    """The notes of the default database and the children of the second."""
    with app.app_context():
        with db.engine.connect() as connection:
            notes = sorted(connection.scalars(sa.select(Note.text)))
        with db.get_engine("two").connect() as connection:
            children = connection.scalar(sa.select(sa.func.count(Child.id)))
    return notes, children or 0


def test_first_used_database_commits_first(
    two_databases: tuple[flask.Flask, SessionORM], outside_requests: None
) -> None:
    """When the second database's commit fails, the first one's part is kept,
    every time; the client gets the error response, and SQLAlchemy emits no
    warning (warnings are errors in this suite)."""
    app, db = two_databases
    client = app.test_client()
    for i in range(6):
        assert client.post(f"/write/default/n{i}").status_code == 409
    assert stored(app, db) == ([f"n{i}" for i in range(6)], 0)


def test_failing_database_used_first_keeps_nothing(
    two_databases: tuple[flask.Flask, SessionORM], outside_requests: None
) -> None:
    """When the database whose commit fails was used first, nothing is kept,
    every time."""
    app, db = two_databases
    client = app.test_client()
    for i in range(6):
        assert client.post(f"/write/two/n{i}").status_code == 409
    assert stored(app, db) == ([], 0)


def test_explicit_commit_uses_the_same_order(
    two_databases: tuple[flask.Flask, SessionORM], outside_requests: None
) -> None:
    """db.session.commit() outside requests follows the same order, and the
    session can be rolled back and used again after the failure."""
    app, db = two_databases
    with app.app_context():
        db.session.add(Note(text="kept"))
        db.session.flush()
        db.session.add(Child(parent_id=12345))
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.add(Parent(id=1))
        db.session.commit()
    assert stored(app, db) == (["kept"], 0)
