"""The registered metadata, its split by engine, the table -> engine lookup, and
DDL next to an open session transaction.
"""

from __future__ import annotations

import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

from .conftest import Base
from .conftest import Item


class MetaBase(orm.DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Home(MetaBase):
    """Bound to nothing: the default engine."""

    __tablename__ = "meta_home"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    code: orm.Mapped[str] = orm.mapped_column(sa.String(10), unique=True)
    size: orm.Mapped[int] = orm.mapped_column(index=True)
    __table_args__ = (sa.CheckConstraint("size > 0", name="positive"),)


class ByClassPath(MetaBase):
    __tablename__ = "meta_byclass"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class ByTableName(MetaBase):
    __tablename__ = "meta_bytable"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    byclass_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(ByClassPath.id))


class ByKey(MetaBase):
    __tablename__ = "meta_bykey"
    __bind_key__ = "other"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class InSchema(MetaBase):
    """In a named schema, on the default engine."""

    __tablename__ = "meta_inschema"
    __table_args__ = {"schema": "reports"}
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    home_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey(Home.id))


link = sa.Table(
    "meta_link",
    MetaBase.metadata,
    sa.Column("home_id", sa.ForeignKey(Home.id), primary_key=True),
)

BINDS = {f"{__name__}:ByClassPath": "other", "meta_bytable": "other"}


def two_engines(tmp_path: t.Any, **config: t.Any) -> flask.Flask:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SESSION_ORM_ENGINES={"default": "sqlite://", "other": "sqlite://"},
        SESSION_ORM_BINDS=BINDS,
    )
    app.config.update(config)
    return app


def table_names(metadata: sa.MetaData) -> set[str]:
    return set(metadata.tables)


def test_metadata_argument_forms() -> None:
    """The metadata argument takes a base class, a MetaData, a registry or a list."""
    assert SessionORM(metadata=MetaBase).metadata is MetaBase.metadata
    assert SessionORM(metadata=Base.metadata).metadata is Base.metadata
    assert SessionORM(metadata=MetaBase.registry).metadata is MetaBase.metadata
    same = SessionORM(metadata=[MetaBase, MetaBase.metadata])
    assert same.metadata is MetaBase.metadata


def test_metadata_argument_wrong_type() -> None:
    """Anything else is a TypeError naming the argument and the value."""
    with pytest.raises(TypeError, match=r"'metadata' takes a declarative base.*'x'"):
        SessionORM(metadata="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"class 'dict', which has no MetaData"):
        SessionORM(metadata=[Base, dict])


def test_no_metadata_registered(tmp_path: t.Any) -> None:
    """Without registered metadata, db.metadata, db.metadatas and create_all()
    say how to register it.
    """
    app = two_engines(tmp_path)
    db = SessionORM(app)
    with pytest.raises(RuntimeError, match=r"db\.metadata needs.*metadata=Base"):
        db.metadata  # noqa: B018
    with app.app_context():
        with pytest.raises(RuntimeError, match=r"db\.metadatas needs.*register_"):
            db.metadatas  # noqa: B018
        with pytest.raises(RuntimeError, match=r"db\.create_all\(\) without a"):
            db.create_all()


def test_register_metadata_later() -> None:
    """register_metadata adds a base after the extension object was made, once."""
    db = SessionORM()
    db.register_metadata(MetaBase)
    db.register_metadata(MetaBase.metadata)
    assert db.metadata is MetaBase.metadata
    db.register_metadata(Base)
    with pytest.raises(RuntimeError, match="ambiguous: 2 MetaData objects"):
        db.metadata  # noqa: B018


def test_metadatas_by_engine(tmp_path: t.Any) -> None:
    """Each engine's MetaData holds exactly the tables routed to it: by class
    path, by table name, by __bind_key__, else the default engine (key None).
    """
    app = two_engines(tmp_path)
    db = SessionORM(app, metadata=MetaBase)
    with app.app_context():
        metadatas = db.metadatas
        assert list(metadatas) == [None, "other"]
        assert table_names(metadatas[None]) == {
            "meta_home",
            "meta_link",
            "reports.meta_inschema",
        }
        assert table_names(metadatas["other"]) == {
            "meta_byclass",
            "meta_bytable",
            "meta_bykey",
        }
        assert metadatas["default"] is metadatas[None]
        assert db.metadatas is metadatas
        copy = metadatas["other"].tables["meta_bykey"]
        assert copy is not ByKey.__table__


def test_metadatas_per_app(tmp_path: t.Any) -> None:
    """Routing is the app's config, so each app gets its own split."""
    db = SessionORM(metadata=MetaBase)
    first = two_engines(tmp_path / "a")
    second = two_engines(tmp_path / "b", SESSION_ORM_BINDS={})
    db.init_app(first)
    db.init_app(second)
    with first.app_context():
        assert "meta_byclass" in db.metadatas["other"].tables
    with second.app_context():
        assert table_names(db.metadatas["other"]) == {"meta_bykey"}


def test_metadatas_follow_new_tables(tmp_path: t.Any) -> None:
    """A table added to a registered MetaData later shows up in the split."""
    metadata = sa.MetaData()
    sa.Table("meta_early", metadata, sa.Column("id", sa.Integer, primary_key=True))
    app = two_engines(tmp_path)
    db = SessionORM(app, metadata=metadata)
    with app.app_context():
        assert table_names(db.metadatas[None]) == {"meta_early"}
        sa.Table("meta_late", metadata, sa.Column("id", sa.Integer, primary_key=True))
        assert table_names(db.metadatas[None]) == {"meta_early", "meta_late"}


def test_metadatas_copies_keep_constraints(tmp_path: t.Any) -> None:
    """The copies keep schema, foreign keys, indexes and the names the naming
    convention gave the originals' constraints.
    """
    app = two_engines(tmp_path)
    db = SessionORM(app, metadata=MetaBase)
    with app.app_context():
        default = db.metadatas[None]
    assert default.naming_convention == MetaBase.metadata.naming_convention
    for table in (Home.__table__, InSchema.__table__, link):
        assert isinstance(table, sa.Table)
        copy = default.tables[table.key]
        assert copy.schema == table.schema
        original_names = {str(c.name) for c in table.constraints}
        assert {str(c.name) for c in copy.constraints} == original_names
        assert {str(i.name) for i in copy.indexes} == {
            str(i.name) for i in table.indexes
        }
        assert {fk.target_fullname for fk in copy.foreign_keys} == {
            fk.target_fullname for fk in table.foreign_keys
        }
    home = default.tables["meta_home"]
    assert {str(c.name) for c in home.constraints} >= {
        "pk_meta_home",
        "uq_meta_home_code",
        "ck_meta_home_positive",
    }
    assert {str(i.name) for i in home.indexes} == {"ix_meta_home_size"}


def test_metadatas_same_table_twice(tmp_path: t.Any) -> None:
    """Two registered MetaData with a table of the same name on one engine is a
    clear error.
    """
    twin = sa.MetaData()
    sa.Table("meta_home", twin, sa.Column("id", sa.Integer, primary_key=True))
    app = two_engines(tmp_path)
    db = SessionORM(app, metadata=[MetaBase, twin])
    with app.app_context():
        with pytest.raises(RuntimeError, match="'meta_home' is defined in two"):
            db.metadatas  # noqa: B018


def test_metadatas_without_default_engine(tmp_path: t.Any) -> None:
    """A table with no bind in an app without a "default" engine is an error
    that names the table and the engines.
    """
    app = two_engines(
        tmp_path, SESSION_ORM_ENGINES={"other": "sqlite://", "more": "sqlite://"}
    )
    db = SessionORM(app, metadata=MetaBase)
    with app.app_context():
        with pytest.raises(
            RuntimeError,
            match=r"'meta_home' has no bind.*'default', which is not configured"
            r".*: more, other\.",
        ):
            db.metadatas  # noqa: B018


def test_metadatas_foreign_key_across_engines(tmp_path: t.Any) -> None:
    """A foreign key from a table of one engine to a table of another is an
    error naming both tables and engines.
    """
    metadata = sa.MetaData()
    sa.Table("meta_here", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "meta_bytable",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("here_id", sa.ForeignKey("meta_here.id")),
    )
    app = two_engines(tmp_path)
    db = SessionORM(app, metadata=metadata)
    with app.app_context():
        with pytest.raises(
            RuntimeError,
            match=r"'meta_bytable' \(engine 'other'\) has a foreign key to"
            r" 'meta_here' \(engine 'default'\)",
        ):
            db.metadatas  # noqa: B018


def test_engines_by_flask_sqlalchemy_keys(tmp_path: t.Any) -> None:
    """None is the default engine in db.engines and get_engine(bind=...), as
    Flask-Migrate's templates ask; bind_names() lists the other engines.
    """
    app = two_engines(tmp_path)
    db = SessionORM(app)
    with app.app_context():
        engines = db.engines
        assert list(engines) == ["default", "other"]
        assert engines[None] is engines["default"] is db.engine  # type: ignore[index]
        assert engines.get(None) is db.engine  # type: ignore[call-overload]
        assert len(engines) == 2
        with pytest.raises(TypeError):
            engines["x"] = db.engine  # type: ignore[index]
        assert db.get_engine(bind=None) is db.engine
        assert db.get_engine(None) is db.engine
        assert db.get_engine(bind="other") is engines["other"]
        assert db.get_engine("other") is engines["other"]
        with pytest.raises(KeyError, match="No engine named 'nope'"):
            db.get_engine(bind="nope")
        assert db.bind_names() == ["other"]


def test_bind_name(tmp_path: t.Any) -> None:
    """bind_name names the engine of a table, a model class or instance, a
    mapper or a statement, as the session routes them.
    """
    app = two_engines(tmp_path)
    db = SessionORM(app)
    with app.app_context():
        assert db.bind_name(ByTableName.__table__) == "other"
        assert db.bind_name(ByClassPath.__table__) == "other"
        assert db.bind_name(ByKey) == "other"
        assert db.bind_name(ByKey()) == "other"
        assert db.bind_name(sa.inspect(Home)) == "default"
        assert db.bind_name(link) == "default"
        assert db.bind_name(sa.select(ByClassPath.id)) == "other"
        assert db.bind_name(sa.text("SELECT 1")) == "default"
        with pytest.raises(TypeError, match="bind_name\\(\\) takes a Table.*'int'"):
            db.bind_name(42)


def test_get_bind_table(tmp_path: t.Any) -> None:
    """get_bind answers the engine of a table or a statement."""
    app = two_engines(tmp_path)
    db = SessionORM(app)
    with app.app_context():
        other = db.engines["other"]
        assert db.get_bind(ByTableName.__table__) is other
        assert db.get_bind(sa.delete(ByClassPath)) is other
        assert db.get_bind(link) is db.engine
        assert db.get_bind(ByKey.__table__) is db.session.get_bind(
            clause=ByKey.__table__
        )
        with pytest.raises(TypeError, match=r"a Table or a statement, got 'str'"):
            db.get_bind("meta_home")
        with pytest.raises(TypeError, match=r"got the class 'ByKey'"):
            db.get_bind(ByKey)


def test_create_all_registered(tmp_path: t.Any) -> None:
    """create_all() and drop_all() without a target work on the registered
    metadata, each table on its engine.
    """
    app = two_engines(tmp_path)
    metadata = sa.MetaData()
    for name in ("meta_a", "meta_bytable"):
        sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True))
    db = SessionORM(app, metadata=metadata)
    with app.app_context():
        db.create_all()
        default = sa.inspect(db.engine).get_table_names()
        other = sa.inspect(db.engines["other"]).get_table_names()
        assert (default, other) == (["meta_a"], ["meta_bytable"])
        db.drop_all()
        assert sa.inspect(db.engine).get_table_names() == []


# -- DDL while the session holds a transaction -----------------------------------

# Without the check, DROP TABLE would wait for the session's locks for ever; these
# make it fail after a few seconds instead, so a regression fails, not hangs.
LOCK_TIMEOUTS = {
    "sqlite": {"connect_args": {"timeout": 3}},
    "postgresql": {"connect_args": {"options": "-c lock_timeout=3000"}},
    "mysql": {"connect_args": {"init_command": "SET SESSION lock_wait_timeout=3"}},
}


@pytest.fixture
def ddl_db(app: flask.Flask, backend: str) -> t.Iterator[SessionORM]:
    app.config["SESSION_ORM_ENGINE_OPTIONS"] = LOCK_TIMEOUTS[backend]
    db = SessionORM(app, metadata=Base)
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield db
    if flask.has_request_context():
        db.session.close()
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def test_drop_all_with_open_transaction(
    app: flask.Flask, ddl_db: SessionORM, outside_requests: None
) -> None:
    """drop_all in an app context whose session read a table raises an error
    naming the fix, instead of waiting for the session's locks; after closing
    the session it works.
    """
    with app.app_context():
        ddl_db.session.add(Item(name="kept"))
        ddl_db.session.commit()
        assert ddl_db.session.scalars(sa.select(Item.name)).all() == ["kept"]
        with pytest.raises(
            RuntimeError,
            match=r"db\.drop_all\(\) was called while db\.session has a transaction"
            r".*db\.session\.close\(\)",
        ):
            ddl_db.drop_all()
        ddl_db.session.close()
        ddl_db.drop_all()
        assert not sa.inspect(ddl_db.engine).has_table(Item.__tablename__)
        ddl_db.create_all()


def test_create_all_with_open_transaction_in_request(
    app: flask.Flask, ddl_db: SessionORM
) -> None:
    """Inside a (test) request, a pending change in the request's session makes
    create_all an error too; committing first makes it work.
    """
    with app.test_request_context():
        ddl_db.session.add(Item(name="pending"))
        with pytest.raises(RuntimeError, match=r"db\.create_all\(\) was called"):
            ddl_db.create_all()
        ddl_db.session.commit()
        ddl_db.create_all()
        assert ddl_db.session.scalar(sa.select(Item.name)) == "pending"
        ddl_db.session.close()


def test_ddl_inside_isolation_with_open_transaction(
    app: flask.Flask, ddl_db: SessionORM, backend: str, outside_requests: None
) -> None:
    """Inside db.isolation() the session shares the DDL's connection, so an open
    transaction is no reason to refuse create_all.
    """
    if backend == "mysql":
        pytest.skip("DDL inside db.isolation() is refused on MariaDB/MySQL")
    extra = sa.Table(
        "meta_isolated", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)
    )
    with ddl_db.isolation(app), app.app_context():
        ddl_db.session.add(Item(name="isolated"))
        ddl_db.session.flush()
        ddl_db.create_all(extra.metadata)
        assert ddl_db.session.scalar(sa.select(sa.func.count()).select_from(extra)) == 0
    with app.app_context():
        assert not sa.inspect(ddl_db.engine).has_table("meta_isolated")
