"""Reading app.config into engines and sessionmaker options."""

from __future__ import annotations

import os
import threading
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm
import sqlalchemy.pool as sa_pool

from flask_session_orm import FlaskSQLAlchemyConfigWarning
from flask_session_orm import SessionORM

from .conftest import Base
from .conftest import Item


def make_app(tmp_path: t.Any, **config: t.Any) -> flask.Flask:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


def init(tmp_path: t.Any, **config: t.Any) -> tuple[flask.Flask, SessionORM]:
    app = make_app(tmp_path, **config)
    return app, SessionORM(app)


def test_defaults(tmp_path: t.Any) -> None:
    """Every session key has the contract's default when the config is silent."""
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL="sqlite://")
    with app.app_context():
        maker = db.sessionmaker
        assert maker.kw["expire_on_commit"] is True
        assert maker.kw["autoflush"] is True
        assert list(db.engines) == ["default"]
        assert not db.engine.echo
        state = app.extensions["session_orm"]
        assert state.config.commit_on_success is True
        assert state.config.binds == {}


def test_session_options(tmp_path: t.Any) -> None:
    """Dedicated keys, SESSION_OPTIONS and constructor defaults reach sessions."""
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_EXPIRE_ON_COMMIT=False,
        SESSION_ORM_AUTOFLUSH=False,
        SESSION_ORM_SESSION_OPTIONS={"info": {"k": 1}},
    )
    db = SessionORM(app, session_options={"twophase": False, "info": {"k": 0}})
    with app.app_context():
        session = db.session
        assert session.expire_on_commit is False
        assert session.autoflush is False
        assert session.info["k"] == 1
        assert session.twophase is False


def test_session_options_dedicated_key_wins(tmp_path: t.Any) -> None:
    """SESSION_ORM_EXPIRE_ON_COMMIT overrides the same option in SESSION_OPTIONS."""
    app, db = init(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_SESSION_OPTIONS={"expire_on_commit": False},
        SESSION_ORM_EXPIRE_ON_COMMIT=True,
    )
    with app.app_context():
        assert db.session.expire_on_commit is True


def test_session_options_without_dedicated_key(tmp_path: t.Any) -> None:
    """An option set only in SESSION_OPTIONS is not reset by the dedicated default."""
    app, db = init(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_SESSION_OPTIONS={"expire_on_commit": False},
    )
    with app.app_context():
        assert db.session.expire_on_commit is False


@pytest.mark.parametrize(
    "value",
    [
        "sqlite:///a.db",
        sa.make_url("sqlite:///a.db"),
        {"url": "sqlite:///a.db", "pool_size": 3},
    ],
    ids=["str", "URL", "dict"],
)
def test_url_forms(tmp_path: t.Any, value: t.Any) -> None:
    """An engine URL may be a string, a URL object or a dict with options."""
    app, db = init(tmp_path, SESSION_ORM_ENGINES={"default": value})
    with app.app_context():
        assert db.engine.url.database == os.path.join(app.instance_path, "a.db")
        if isinstance(value, dict):
            assert t.cast(t.Any, db.engine.pool).size() == 3


def test_engine_options_overridden_per_engine(tmp_path: t.Any) -> None:
    """SESSION_ORM_ENGINE_OPTIONS apply to every engine; a per-engine dict wins."""
    app, db = init(
        tmp_path,
        SESSION_ORM_ENGINES={
            "default": "sqlite:///a.db",
            "other": {"url": "sqlite:///b.db", "pool_size": 2},
        },
        SESSION_ORM_ENGINE_OPTIONS={"pool_size": 7, "pool_timeout": 3},
    )
    with app.app_context():
        default = t.cast(t.Any, db.get_engine("default").pool)
        other = t.cast(t.Any, db.get_engine("other").pool)
        assert (default.size(), default._timeout) == (7, 3)
        assert (other.size(), other._timeout) == (2, 3)


def test_constructor_engine_options_are_defaults(tmp_path: t.Any) -> None:
    """engine_options given to SessionORM() are overridden by the app's config."""
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite:///a.db",
        SESSION_ORM_ENGINE_OPTIONS={"pool_size": 4},
    )
    db = SessionORM(app, engine_options={"pool_size": 9, "pool_timeout": 2})
    with app.app_context():
        pool = t.cast(t.Any, db.engine.pool)
        assert (pool.size(), pool._timeout) == (4, 2)


def test_echo(tmp_path: t.Any) -> None:
    """SESSION_ORM_ECHO turns on SQL logging for every engine."""
    app, db = init(
        tmp_path,
        SESSION_ORM_ENGINES={"default": "sqlite://", "b": "sqlite://"},
        SESSION_ORM_ECHO=True,
    )
    with app.app_context():
        assert all(engine.echo for engine in db.engines.values())


def test_database_url_and_default_engine_conflict(tmp_path: t.Any) -> None:
    """Setting both DATABASE_URL and ENGINES['default'] is an error naming both."""
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_ENGINES={"default": "sqlite://"},
    )
    with pytest.raises(
        ValueError, match="SESSION_ORM_DATABASE_URL.*SESSION_ORM_ENGINES"
    ):
        SessionORM(app)


def test_database_url_with_other_engines(tmp_path: t.Any) -> None:
    """DATABASE_URL is the default engine next to other named engines."""
    app, db = init(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite:///a.db",
        SESSION_ORM_ENGINES={"audit": "sqlite:///b.db"},
    )
    with app.app_context():
        assert sorted(db.engines) == ["audit", "default"]


def test_relative_sqlite_path_in_instance_path(tmp_path: t.Any) -> None:
    """A relative SQLite path is placed in the instance folder, created if missing."""
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL="sqlite:///data/app.db")
    assert os.path.isdir(app.instance_path)
    with app.app_context():
        assert db.engine.url.database == os.path.join(
            app.instance_path, "data", "app.db"
        )


def test_absolute_sqlite_path_kept(tmp_path: t.Any) -> None:
    """An absolute SQLite path is used as given."""
    path = str(tmp_path / "abs.db")
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL=f"sqlite:///{path}")
    with app.app_context():
        assert db.engine.url.database == path


def test_sqlite_memory_is_shared_across_threads(tmp_path: t.Any) -> None:
    """sqlite:// is one in-memory database per engine, usable from other threads."""
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL="sqlite://")
    with app.app_context():
        assert isinstance(db.engine.pool, sa_pool.StaticPool)
        db.create_all(Base)
        db.session.add(Item(name="from-main"))
        db.session.commit()
    seen: list[str] = []

    def worker() -> None:
        with app.app_context():
            seen.extend(db.session.scalars(sa.select(Item.name)))
            db.session.add(Item(name="from-thread"))
            db.session.commit()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == ["from-main"]
    with app.app_context():
        names = set(db.session.scalars(sa.select(Item.name)))
        assert names == {"from-main", "from-thread"}


def test_sqlite_memory_engines_are_separate(tmp_path: t.Any) -> None:
    """Two in-memory engines are two databases."""
    app, db = init(
        tmp_path, SESSION_ORM_ENGINES={"default": "sqlite://", "b": "sqlite://"}
    )
    with app.app_context():
        db.engine.dispose()
        with db.engine.begin() as connection:
            Base.metadata.create_all(connection)
        with db.get_engine("b").connect() as connection:
            assert not sa.inspect(connection).has_table(Item.__tablename__)


def test_network_databases_pre_ping(tmp_path: t.Any) -> None:
    """Network databases ping connections idle over SESSION_ORM_PING_IDLE_AFTER
    by default; an explicit pool_pre_ping option wins."""
    app, db = init(
        tmp_path,
        SESSION_ORM_ENGINES={
            "pg": "postgresql+psycopg://u:secret@127.0.0.1:1/x",
            "my": {"url": "mysql+pymysql://u@127.0.0.1:1/x", "pool_pre_ping": False},
        },
    )
    engines = app.extensions["session_orm"].config.engines
    assert engines["pg"].ping_idle_after == 1.0
    assert engines["my"].ping_idle_after is None
    with app.app_context():
        assert db.get_engine("pg").pool._pre_ping is False  # type: ignore[attr-defined]
        assert db.get_engine("my").pool._pre_ping is False  # type: ignore[attr-defined]


def test_init_app_opens_no_connection(tmp_path: t.Any) -> None:
    """init_app on an app whose database is down succeeds: it connects to nothing."""
    app, db = init(
        tmp_path,
        SESSION_ORM_DATABASE_URL="postgresql+psycopg://u:secret@127.0.0.1:1/nothing",
    )

    @app.get("/")
    def index() -> str:
        return "up"

    assert app.test_client().get("/").data == b"up"
    with app.app_context():
        assert t.cast(t.Any, db.engine.pool).checkedout() == 0


def test_commit_on_success_off(tmp_path: t.Any) -> None:
    """SESSION_ORM_COMMIT_ON_SUCCESS=False is read into the app's state."""
    app, _db = init(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SESSION_ORM_COMMIT_ON_SUCCESS=False,
    )
    assert app.extensions["session_orm"].config.commit_on_success is False


def test_later_config_changes_ignored(tmp_path: t.Any) -> None:
    """The config is read once, by init_app."""
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL="sqlite:///a.db")
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///b.db"
    with app.app_context():
        assert db.engine.url.database.endswith("a.db")  # type: ignore[union-attr]


def test_sessionmaker_is_configured(tmp_path: t.Any) -> None:
    """db.sessionmaker makes sessions of the app's configured class."""
    app, db = init(tmp_path, SESSION_ORM_DATABASE_URL="sqlite://")
    with app.app_context(), db.sessionmaker() as session:
        assert isinstance(session, orm.Session)
        assert session.get_bind() is db.engine


SECRET = "s3cr3t-pw"
PG = f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db"


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({}, RuntimeError, "SESSION_ORM_DATABASE_URL"),
        ({"SQLALCHEMY_DATABASE_URI": PG}, RuntimeError, "SQLALCHEMY_DATABASE_URI"),
        (
            {"SESSION_ORM_DATABASE_URL": f"not a url :{SECRET}@x"},
            ValueError,
            "SESSION_ORM_DATABASE_URL",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": f"postgresql://u:{SECRET}@x:{SECRET}@h:p/d"},
            ValueError,
            "SESSION_ORM_DATABASE_URL",
        ),
        ({"SESSION_ORM_DATABASE_URL": 42}, TypeError, "SESSION_ORM_DATABASE_URL.*42"),
        (
            {"SESSION_ORM_DATABASE_URL": f"nosuchdb://u:{SECRET}@h/d"},
            ValueError,
            "SESSION_ORM_DATABASE_URL.*nosuchdb",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": f"postgresql+nodriver://u:{SECRET}@h/d"},
            ValueError,
            "SESSION_ORM_DATABASE_URL",
        ),
        ({"SESSION_ORM_ENGINES": ["sqlite://"]}, TypeError, "SESSION_ORM_ENGINES"),
        (
            {"SESSION_ORM_ENGINES": {"default": {"pool_size": 1}}},
            ValueError,
            "SESSION_ORM_ENGINES\\['default'\\].*'url'",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_ENGINE_OPTIONS": "x"},
            TypeError,
            "SESSION_ORM_ENGINE_OPTIONS",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_ENGINE_OPTIONS": {"nope": 1}},
            ValueError,
            "'default'.*nope",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_EXPIRE_ON_COMMIT": "yes"},
            TypeError,
            "SESSION_ORM_EXPIRE_ON_COMMIT.*'yes'",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_AUTOFLUSH": 1},
            TypeError,
            "SESSION_ORM_AUTOFLUSH",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_COMMIT_ON_SUCCESS": None},
            TypeError,
            "SESSION_ORM_COMMIT_ON_SUCCESS",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_ECHO": "debug"},
            TypeError,
            "SESSION_ORM_ECHO",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_SESSION_OPTIONS": {"x": 1}},
            TypeError,
            "SESSION_ORM_SESSION_OPTIONS.*'x'",
        ),
        (
            {
                "SESSION_ORM_DATABASE_URL": PG,
                "SESSION_ORM_SESSION_OPTIONS": {"bind": 1},
            },
            ValueError,
            "SESSION_ORM_SESSION_OPTIONS.*'bind'",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_BINDS": {"t": "nope"}},
            ValueError,
            "SESSION_ORM_BINDS.*'nope'.*default",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_BINDS": {"a:": "default"}},
            ValueError,
            "SESSION_ORM_BINDS.*'a:'",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_BINDS": {"t": 1}},
            TypeError,
            "SESSION_ORM_BINDS",
        ),
        (
            {"SESSION_ORM_DATABASE_URL": PG, "SESSION_ORM_DATABASE_URI": PG},
            KeyError,
            "SESSION_ORM_DATABASE_URI.*Did you mean 'SESSION_ORM_DATABASE_URL'",
        ),
    ],
)
def test_config_errors(
    tmp_path: t.Any, config: dict[str, t.Any], error: type[Exception], match: str
) -> None:
    """Bad config fails in init_app, naming the key and value, never the password."""
    app = make_app(tmp_path, **config)
    with pytest.raises(error, match=match) as info:
        SessionORM(app)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)


def test_constructor_options_type_error(tmp_path: t.Any) -> None:
    """A bad constructor argument is named as such."""
    app = make_app(tmp_path, SESSION_ORM_DATABASE_URL="sqlite://")
    with pytest.raises(TypeError, match="argument 'engine_options'"):
        SessionORM(app, engine_options=t.cast(t.Any, ["pool_size"]))


# -- Flask-SQLAlchemy's keys -----------------------------------------------------


def test_flask_sqlalchemy_key_warns(tmp_path: t.Any) -> None:
    """A leftover SQLALCHEMY_DATABASE_URI next to SESSION_ORM_DATABASE_URL is
    named, with its replacement, in one warning pointing at the init_app call.
    """
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SQLALCHEMY_DATABASE_URI="sqlite:///test-only.db",
    )
    with pytest.warns(
        FlaskSQLAlchemyConfigWarning,
        match=r"'SQLALCHEMY_DATABASE_URI' \(use 'SESSION_ORM_DATABASE_URL'\)",
    ) as record:
        SessionORM(app)
    assert len(record) == 1
    assert record[0].filename == __file__
    assert issubclass(FlaskSQLAlchemyConfigWarning, UserWarning)


def test_flask_sqlalchemy_keys_in_one_warning(tmp_path: t.Any) -> None:
    """Every database key of Flask-SQLAlchemy that is set is named in a single
    warning, each with what replaces it.
    """
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SQLALCHEMY_BINDS={"stats": "sqlite://"},
        SQLALCHEMY_ENGINE_OPTIONS={"pool_recycle": 600},
        SQLALCHEMY_ECHO=True,
        SQLALCHEMY_POOL_SIZE=5,
    )
    db = SessionORM()
    with pytest.warns(FlaskSQLAlchemyConfigWarning) as record:
        db.init_app(app)
    assert len(record) == 1
    message = str(record[0].message)
    for key, replacement in [
        ("SQLALCHEMY_BINDS", "'SESSION_ORM_ENGINES'"),
        ("SQLALCHEMY_ENGINE_OPTIONS", "'SESSION_ORM_ENGINE_OPTIONS'"),
        ("SQLALCHEMY_ECHO", "'SESSION_ORM_ECHO'"),
        ("SQLALCHEMY_POOL_SIZE", "'SESSION_ORM_ENGINE_OPTIONS' {'pool_size': ...}"),
    ]:
        assert f"'{key}' (use {replacement}" in message
    assert record[0].filename == __file__


def test_flask_sqlalchemy_defaults_do_not_warn(tmp_path: t.Any) -> None:
    """The defaults Flask-SQLAlchemy's init_app writes (None, {}, False), and its
    keys that configure no database, are no reason to warn.
    """
    app = make_app(
        tmp_path,
        SESSION_ORM_DATABASE_URL="sqlite://",
        SQLALCHEMY_DATABASE_URI=None,
        SQLALCHEMY_BINDS={},
        SQLALCHEMY_ENGINE_OPTIONS={},
        SQLALCHEMY_ECHO=False,
        SQLALCHEMY_RECORD_QUERIES=True,
        SQLALCHEMY_TRACK_MODIFICATIONS=True,
    )
    SessionORM(app)  # filterwarnings = error: a warning would fail the test
    assert "session_orm" in app.extensions
