"""object_session, get_bind, is_deleted and has_changes."""

from __future__ import annotations

import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

from .conftest import Item


class HookBase(orm.DeclarativeBase):
    pass


class Shelf(HookBase):
    """A model routed to the ``other`` engine by ``SESSION_ORM_BINDS``."""

    __tablename__ = "h_hook_shelf"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    label: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    books: orm.Mapped[list[Book]] = orm.relationship(back_populates="shelf")


class Book(HookBase):
    __tablename__ = "h_hook_book"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    title: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    shelf_id: orm.Mapped[int | None] = orm.mapped_column(sa.ForeignKey(Shelf.id))
    shelf: orm.Mapped[Shelf | None] = orm.relationship(back_populates="books")


class Unmapped:
    pass


# The test bodies run outside any request, as a CLI command or a job does.
pytestmark = pytest.mark.usefixtures("outside_requests")


@pytest.fixture
def two_engines(
    app: flask.Flask, database_url: str, tmp_path: t.Any
) -> t.Iterator[SessionORM]:
    """An app with a second engine ``other`` that the Shelf and Book tables use."""
    other = database_url
    if database_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path}/other.db"
    app.config["SESSION_ORM_ENGINES"] = {"other": other}
    app.config["SESSION_ORM_BINDS"] = {"h_hook_shelf": "other", "h_hook_book": "other"}
    db = SessionORM(app)
    with app.app_context():
        db.drop_all(HookBase)
        db.create_all(HookBase)
    yield db
    with app.app_context():
        db.drop_all(HookBase)
        for engine in db.engines.values():
            engine.dispose()


def add_item(db: SessionORM, app: flask.Flask, name: str) -> int:
    """Store an item, committed, and return its id."""
    with app.app_context():
        item = Item(name=name)
        db.session.add(item)
        db.session.flush()
        item_id = item.id
        db.session.commit()
        return item_id


# -- object_session ------------------------------------------------------------------


def test_object_session_in_request_is_the_request_session(
    app: flask.Flask, db: SessionORM
) -> None:
    """In a request, pending and persistent objects belong to the request's session."""
    item_id = add_item(db, app, "stored")
    seen: dict[str, object] = {}

    @app.get("/")
    def view() -> str:
        pending = Item(name="pending")
        db.session.add(pending)
        seen["pending"] = db.object_session(pending)
        persistent = db.session.get(Item, item_id)
        seen["persistent"] = db.object_session(persistent)
        db.session.flush()
        seen["flushed"] = db.object_session(pending)
        seen["session"] = db.session
        return "ok"

    assert app.test_client().get("/").data == b"ok"
    assert isinstance(seen["session"], orm.Session)
    assert seen["pending"] is seen["session"]
    assert seen["persistent"] is seen["session"]
    assert seen["flushed"] is seen["session"]


def test_object_session_of_transient_and_detached_is_none(
    app: flask.Flask, db: SessionORM
) -> None:
    """Transient objects, and objects whose session was closed or that were
    expunged or deleted and committed, have no session.
    """
    add_item(db, app, "a")
    add_item(db, app, "b")
    loaded: list[Item] = []

    @app.get("/")
    def view() -> str:
        loaded.append(db.session.scalars(sa.select(Item).filter_by(name="a")).one())
        return "ok"

    app.test_client().get("/")
    with app.app_context():
        assert db.object_session(Item(name="transient")) is None
        assert db.object_session(loaded[0]) is None
        expunged = db.session.scalars(sa.select(Item).filter_by(name="a")).one()
        db.session.expunge(expunged)
        assert db.object_session(expunged) is None
        deleted = db.session.scalars(sa.select(Item).filter_by(name="b")).one()
        db.session.delete(deleted)
        db.session.commit()
        assert db.object_session(deleted) is None


def test_object_session_outside_request(app: flask.Flask, db: SessionORM) -> None:
    """Outside a request an object belongs to the app context's session or to the
    sessionmaker session that loaded it.
    """
    add_item(db, app, "a")
    with app.app_context():
        item = db.session.scalars(sa.select(Item)).one()
        assert db.object_session(item) is db.session
        with db.sessionmaker() as session:
            other = session.scalars(sa.select(Item)).one()
            assert db.object_session(other) is session
            assert session is not db.session


@pytest.mark.parametrize(
    ("obj", "name"),
    [(Unmapped(), "'Unmapped'"), (42, "'int'"), (None, "'NoneType'")],
    ids=["unmapped", "int", "none"],
)
def test_object_session_rejects_unmapped_object(
    app: flask.Flask, db: SessionORM, obj: object, name: str
) -> None:
    """An object that is not an instance of a mapped class is a TypeError naming
    its type.
    """
    with app.app_context(), pytest.raises(TypeError, match=f"got {name}.*not mapped"):
        db.object_session(obj)


def test_object_session_rejects_mapped_class(app: flask.Flask, db: SessionORM) -> None:
    """A mapped class itself (not an instance) is a TypeError naming the class."""
    with app.app_context(), pytest.raises(TypeError, match="the class 'Item'"):
        db.object_session(Item)


def test_object_session_rejects_engine_without_connecting(
    app: flask.Flask, db: SessionORM
) -> None:
    """An Engine is a TypeError, and asking does not open a database connection."""
    connects: list[object] = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *args: connects.append(args))
        db.engine.dispose()
        with pytest.raises(TypeError, match="got 'Engine'"):
            db.object_session(db.engine)
        with pytest.raises(TypeError, match="got 'Engine'"):
            db.is_deleted(db.engine)
    assert connects == []


# -- get_bind ------------------------------------------------------------------------


def test_get_bind_honours_binds(app: flask.Flask, two_engines: SessionORM) -> None:
    """A model instance's bind is the engine its model is routed to, whether the
    instance is transient, pending or persistent.
    """
    db = two_engines
    with app.app_context():
        default, other = db.get_engine(), db.get_engine("other")
        assert default is not other
        assert db.get_bind(Item(name="x")) is default
        shelf = Shelf(label="s")
        assert db.get_bind(shelf) is other
        book = Book(title="b", shelf=shelf)
        db.session.add(book)
        assert db.get_bind(book) is other
        db.session.commit()
        assert db.get_bind(db.session.get(Book, book.id)) is other
        item = Item(name="y")
        db.session.add(item)
        assert db.get_bind(item) is default


def test_get_bind_of_session_engine_and_connection(
    app: flask.Flask, db: SessionORM
) -> None:
    """A Session's bind is its default engine; an Engine or a Connection is its own."""
    with app.app_context():
        assert db.get_bind(db.session) is db.engine
        with db.sessionmaker() as session:
            assert db.get_bind(session) is db.engine
        assert db.get_bind(db.engine) is db.engine
        with db.engine.connect() as connection:
            assert db.get_bind(connection) is connection


def test_get_bind_in_isolation_is_the_isolation_connection(
    app: flask.Flask, db: SessionORM
) -> None:
    """Inside db.isolation() a model talks to the isolation's connection."""
    with db.isolation(app), app.app_context():
        bind = db.get_bind(Item(name="x"))
        assert isinstance(bind, sa.Connection)
        assert bind.engine is db.engine
        item = Item(name="y")
        db.session.add(item)
        assert db.get_bind(item) is bind


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ("text", "got 'str'"),
        (Unmapped(), "got 'Unmapped'"),
        (Item, "got the class 'Item'"),
    ],
    ids=["str", "unmapped", "mapped-class"],
)
def test_get_bind_rejects_other_objects(
    app: flask.Flask, db: SessionORM, obj: object, match: str
) -> None:
    """Anything but a model instance, Session, Engine or Connection is a TypeError
    naming what was given.
    """
    with (
        app.app_context(),
        pytest.raises(TypeError, match=rf"get_bind\(\) takes .*{match}"),
    ):
        db.get_bind(obj)


# -- is_deleted ----------------------------------------------------------------------


def test_is_deleted(app: flask.Flask, db: SessionORM) -> None:
    """True from session.delete() until the object leaves its session: before and
    after the flush; False again after a rollback, and after the commit.
    """
    add_item(db, app, "a")
    with app.app_context():
        assert not db.is_deleted(Item(name="transient"))
        item = db.session.scalars(sa.select(Item)).one()
        assert not db.is_deleted(item)
        db.session.delete(item)
        assert db.is_deleted(item)
        db.session.flush()
        assert db.is_deleted(item)
        db.session.rollback()
        assert not db.is_deleted(item)
        db.session.delete(item)
        db.session.commit()
        assert not db.is_deleted(item)


def test_is_deleted_rejects_unmapped_object(app: flask.Flask, db: SessionORM) -> None:
    """is_deleted of an object that is not mapped is a TypeError naming its type."""
    with app.app_context(), pytest.raises(TypeError, match="got 'Unmapped'"):
        db.is_deleted(Unmapped())


# -- has_changes ---------------------------------------------------------------------


def test_has_changes(app: flask.Flask, db: SessionORM) -> None:
    """Unflushed changes to any attribute, to ``attrs`` (a name or several), or to
    everything but ``exclude`` are reported; a flush clears them.
    """
    add_item(db, app, "a")
    with app.app_context():
        item = db.session.scalars(sa.select(Item)).one()
        assert not db.has_changes(item)
        item.name = "a"
        assert not db.has_changes(item), "setting the same value is no change"
        item.name = "b"
        assert db.has_changes(item)
        assert db.has_changes(item, "name")
        assert db.has_changes(item, ["id", "name"])
        assert not db.has_changes(item, "id")
        assert not db.has_changes(item, ("id",))
        assert not db.has_changes(item, exclude="name")
        assert not db.has_changes(item, exclude=["name"])
        assert db.has_changes(item, exclude="id")
        assert not db.has_changes(item, ["name"], exclude="name")
        db.session.flush()
        assert not db.has_changes(item)
        db.session.rollback()


def test_has_changes_of_new_object_and_relationship(
    app: flask.Flask, two_engines: SessionORM
) -> None:
    """A new object's set attributes and a changed relationship are changes."""
    db = two_engines
    with app.app_context():
        shelf = Shelf(label="s")
        assert db.has_changes(shelf)
        assert db.has_changes(shelf, "label")
        assert not db.has_changes(shelf, "books")
        db.session.add(shelf)
        db.session.commit()
        assert not db.has_changes(shelf)
        shelf.books.append(Book(title="b"))
        assert db.has_changes(shelf, "books")
        assert not db.has_changes(shelf, exclude="books")
        db.session.commit()


@pytest.mark.parametrize("argument", ["attrs", "exclude"])
def test_has_changes_rejects_unknown_names(
    app: flask.Flask, db: SessionORM, argument: str
) -> None:
    """A name that is not an attribute of the model is a ValueError naming it."""
    with (
        app.app_context(),
        pytest.raises(
            ValueError,
            match=rf"Argument '{argument}' names nope, not an attribute of 'Item'",
        ),
    ):
        db.has_changes(Item(name="x"), **{argument: ["name", "nope"]})


def test_has_changes_rejects_unmapped_object(app: flask.Flask, db: SessionORM) -> None:
    """has_changes of an object that is not mapped is a TypeError naming its type."""
    with app.app_context(), pytest.raises(TypeError, match="got 'Unmapped'"):
        db.has_changes(Unmapped())
