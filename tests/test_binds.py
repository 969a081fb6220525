"""Routing models, tables and Core statements to their engines."""

from __future__ import annotations

import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

from .conftest import backend_url


class BindBase(orm.DeclarativeBase):
    pass


class Plain(BindBase):
    __tablename__ = "orm_bind_plain"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class Keyed(BindBase):
    __tablename__ = "orm_bind_keyed"
    __bind_key__ = "other"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class ByClass(BindBase):
    __tablename__ = "orm_bind_byclass"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class Audited(BindBase):
    __abstract__ = True


class AuditEntry(Audited):
    __tablename__ = "orm_bind_audit"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class ByTable(BindBase):
    __tablename__ = "orm_bind_bytable"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class Overridden(BindBase):
    __tablename__ = "orm_bind_overridden"
    __bind_key__ = "other"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class Parent(BindBase):
    __tablename__ = "orm_bind_parent"
    __bind_key__ = "other"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "parent"}


class Child(Parent):
    __tablename__ = "orm_bind_child"
    id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("orm_bind_parent.id"), primary_key=True
    )
    extra: orm.Mapped[str] = orm.mapped_column(sa.String(20), default="x")
    __mapper_args__ = {"polymorphic_identity": "child"}


class OtherBase(orm.DeclarativeBase):
    pass


class BadKey(OtherBase):
    __tablename__ = "orm_bind_badkey"
    __bind_key__ = "nope"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


EXPECTED = {
    Plain: "default",
    Keyed: "other",
    ByClass: "other",
    AuditEntry: "other",
    ByTable: "other",
    Overridden: "third",
    Parent: "other",
    Child: "other",
}

BINDS = {
    "tests.test_binds:ByClass": "other",
    "tests.test_binds:Audited": "other",
    "orm_bind_bytable": "other",
    "tests.test_binds:Overridden": "third",
}


def engine_urls(backend: str, tmp_path: t.Any) -> dict[str, str]:
    if backend == "sqlite":
        return {name: f"sqlite:///{tmp_path}/{name}.db" for name in ("a", "b", "c")}
    url = backend_url(backend, tmp_path)
    return {"a": url, "b": url, "c": url}


@pytest.fixture
def bound(
    backend: str, tmp_path: t.Any
) -> t.Iterator[tuple[flask.Flask, SessionORM, list[tuple[str, str]]]]:
    """An app with three engines and a log of (engine name, SQL) statements."""
    urls = engine_urls(backend, tmp_path)
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SESSION_ORM_ENGINES={
            "default": urls["a"],
            "other": urls["b"],
            "third": urls["c"],
        },
        SESSION_ORM_BINDS=BINDS,
    )
    db = SessionORM(app)
    log: list[tuple[str, str]] = []
    with app.app_context():
        db.drop_all(BindBase)
        for name, engine in db.engines.items():

            def record(
                conn: t.Any,
                cursor: t.Any,
                statement: str,
                *args: t.Any,
                name: str = name,
            ) -> None:
                log.append((name, statement))

            sa.event.listen(engine, "before_cursor_execute", record)
        db.create_all(BindBase)
    yield app, db, log
    with app.app_context():
        db.drop_all(BindBase)
        for engine in db.engines.values():
            engine.dispose()


def engines_for(log: list[tuple[str, str]], table: str) -> set[str]:
    return {name for name, statement in log if table in statement}


def test_create_all_puts_tables_on_their_engine(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]],
) -> None:
    """create_all emits each table's CREATE on the engine its model is bound to."""
    _app, _db, log = bound
    for model, engine in EXPECTED.items():
        table = t.cast(t.Any, model).__table__.name
        creates = {n for n, s in log if s.strip().startswith(f"CREATE TABLE {table} ")}
        assert creates == {engine}, model


def test_sqlite_tables_land_in_their_files(tmp_path: t.Any) -> None:
    """On SQLite files, each table exists only in its engine's database file."""
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    urls = engine_urls("sqlite", tmp_path)
    app.config.update(
        SESSION_ORM_ENGINES={
            "default": urls["a"],
            "other": urls["b"],
            "third": urls["c"],
        },
        SESSION_ORM_BINDS=BINDS,
    )
    db = SessionORM(app)
    with app.app_context():
        db.create_all(BindBase)
        tables = {
            name: set(sa.inspect(engine).get_table_names())
            for name, engine in db.engines.items()
        }
        db.drop_all(BindBase)
        assert all(not sa.inspect(e).get_table_names() for e in db.engines.values())
    assert tables["default"] == {"orm_bind_plain"}
    assert tables["third"] == {"orm_bind_overridden"}
    assert "orm_bind_keyed" in tables["other"]


@pytest.mark.parametrize("model", list(EXPECTED), ids=lambda m: m.__name__)
def test_models_route_to_their_engine(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]], model: type
) -> None:
    """Inserts and queries of each model go to the engine of its bind."""
    app, db, log = bound
    table = t.cast(t.Any, model).__table__.name

    @app.post("/")
    def create() -> str:
        db.session.add(model())
        return "ok"

    @app.get("/")
    def read() -> str:
        return str(len(db.session.scalars(sa.select(model)).all()))

    log.clear()
    assert app.test_client().post("/").status_code == 200
    assert app.test_client().get("/").data == b"1"
    assert engines_for(log, table) == {EXPECTED[model]}


def test_config_bind_wins_over_bind_key(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]],
) -> None:
    """A model with __bind_key__ 'other' routed to 'third' by config uses 'third'."""
    app, db, _log = bound
    with app.app_context():
        assert db.get_bind(Overridden()) is db.get_engine("third")
        assert db.session.get_bind(mapper=Overridden) is db.get_engine("third")


def test_joined_inheritance_routes(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]],
) -> None:
    """A joined-table subclass writes both its tables on its base's engine."""
    app, db, log = bound
    log.clear()
    with app.app_context():
        db.session.add(Child())
        db.session.commit()
        assert [type(p) for p in db.session.scalars(sa.select(Parent))] == [Child]
    assert engines_for(log, "orm_bind_child") == {"other"}
    assert engines_for(log, "orm_bind_parent") == {"other"}


def test_core_statements_route(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]],
) -> None:
    """Core select/insert on a table and text() with a bind argument route too."""
    app, db, log = bound
    with app.app_context():
        session = db.session
        log.clear()
        session.execute(sa.insert(t.cast(t.Any, ByTable).__table__).values(id=5))
        session.execute(sa.insert(t.cast(t.Any, Keyed).__table__).values(id=6))
        assert session.scalar(sa.select(sa.func.count()).select_from(Keyed)) == 1
        rows = session.execute(sa.select(t.cast(t.Any, ByTable).__table__)).all()
        assert [r.id for r in rows] == [5]
        assert engines_for(log, "orm_bind_bytable") == {"other"}
        assert engines_for(log, "orm_bind_keyed") == {"other"}

        log.clear()
        text = sa.text("SELECT count(*) FROM orm_bind_overridden")
        session.execute(text, bind_arguments={"bind": db.get_engine("third")})
        session.execute(text, bind_arguments={"mapper": Overridden})
        assert engines_for(log, "orm_bind_overridden") == {"third"}
        session.rollback()


def test_one_request_commits_two_engines(
    bound: tuple[flask.Flask, SessionORM, list[tuple[str, str]]],
) -> None:
    """A request that writes to two engines commits both."""
    app, db, _log = bound

    @app.post("/")
    def create() -> str:
        db.session.add_all([Plain(id=1), Keyed(id=2)])
        return "ok"

    assert app.test_client().post("/").status_code == 200
    with app.app_context():
        with db.get_engine("default").connect() as connection:
            assert connection.scalar(sa.select(sa.func.count()).select_from(Plain)) == 1
        with db.get_engine("other").connect() as connection:
            assert connection.scalar(sa.select(sa.func.count()).select_from(Keyed)) == 1


def test_unknown_bind_key_names_model_and_engines(tmp_path: t.Any) -> None:
    """A __bind_key__ naming no engine fails at first use with a clear message."""
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSION_ORM_ENGINES"] = {"default": "sqlite://", "audit": "sqlite://"}
    db = SessionORM(app)
    with (
        app.app_context(),
        pytest.raises(
            ValueError,
            match=r"'tests.test_binds:BadKey'.*'nope'.*engines that exist are: audit,"
            r" default",
        ),
    ):
        db.session.scalars(sa.select(BadKey)).all()


def test_unimportable_class_path(tmp_path: t.Any) -> None:
    """A SESSION_ORM_BINDS class path that does not import fails at first use."""
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_BINDS={"tests.test_binds:Missing": "default"},
    )
    db = SessionORM(app)
    with (
        app.app_context(),
        pytest.raises(ValueError, match=r"SESSION_ORM_BINDS.*tests.test_binds:Missing"),
    ):
        db.session.get_bind(mapper=Plain)


def test_create_all_rejects_other_targets(tmp_path: t.Any) -> None:
    """create_all takes a declarative base or a MetaData only."""
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    db = SessionORM(app)
    with app.app_context(), pytest.raises(TypeError, match="'str'"):
        db.create_all("orm_bind_plain")
