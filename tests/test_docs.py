"""Every code example of the docs runs and does what its page says.

The examples live in ``docs/examples/*.py`` and are shown with ``literalinclude``.
Each test copies them into its own temporary directory and imports them from there,
as a user who saved the file would, so that relative SQLite paths land in a
temporary instance folder. Database examples run on every configured backend.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import datetime
import doctest
import importlib
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import types
import typing as t
import unittest
import zlib

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.pool as sa_pool

from flask_session_orm import SessionORM
from flask_session_orm import signals

DOCS = pathlib.Path(__file__).parent.parent / "docs"
EXAMPLES = DOCS / "examples"


class Examples:
    """Import docs examples from a private copy of ``docs/examples``."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.loaded: list[str] = []

    def load(self, name: str) -> types.ModuleType:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        self.loaded.append(name)
        return module


@pytest.fixture
def examples(tmp_path: pathlib.Path) -> t.Iterator[Examples]:
    directory = tmp_path / "examples"
    shutil.copytree(EXAMPLES, directory)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    loader = Examples(directory)
    try:
        yield loader
    finally:
        sys.path.remove(str(directory))
        for name in loader.loaded:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def tables(app: flask.Flask, db: SessionORM, base: t.Any) -> t.Iterator[None]:
    """Create the tables of ``base`` (dropping leftovers first), drop them after."""
    with app.app_context():
        db.drop_all(base)
        db.create_all(base)
    try:
        yield
    finally:
        with app.app_context():
            db.drop_all(base)
            for engine in db.engines.values():
                engine.dispose()


def rows(app: flask.Flask, db: SessionORM, statement: sa.Select[t.Any]) -> list[t.Any]:
    """The result of ``statement``, read through a fresh session."""
    with app.app_context(), db.sessionmaker() as session:
        return list(session.scalars(statement))


def section(path: pathlib.Path, name: str) -> str:
    """The text between ``# [name]`` and ``# [end name]`` in ``path``."""
    text = path.read_text()
    match = re.search(rf"^# \[{name}\]\n(.*?)^# \[end {name}\]$", text, re.M | re.S)
    assert match is not None, f"no section {name!r} in {path.name}"
    return match.group(1)


def settings(name: str, **env: str) -> dict[str, t.Any]:
    """Execute one section of ``settings.py`` and return the config it sets."""
    namespace: dict[str, t.Any] = {}
    code = "import os\nimport sqlalchemy as sa\n" + section(
        EXAMPLES / "settings.py", name
    )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        exec(compile(code, f"settings.py[{name}]", "exec"), namespace)
    return {k: v for k, v in namespace.items() if k.startswith("SESSION_ORM_")}


def init(
    tmp_path: pathlib.Path, config: dict[str, t.Any]
) -> tuple[flask.Flask, SessionORM]:
    app = flask.Flask("docs_settings", instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app, SessionORM(app)


# -- index ---------------------------------------------------------------------


def test_index_example(examples: Examples) -> None:
    """The index page's example stores a note in instance/notes.db and lists it."""
    notes = examples.load("notes")
    try:
        client = notes.app.test_client()
        assert client.post("/notes", data={"text": "hello"}).status_code == 201
        assert client.get("/notes").json == ["hello"]
        assert (examples.directory / "instance" / "notes.db").is_file()
    finally:
        with notes.app.app_context():
            notes.db.engine.dispose()


# -- quickstart ----------------------------------------------------------------


def test_quickstart_default_database(examples: Examples) -> None:
    """The quickstart app's default database is todo.db in the instance folder."""
    todo = examples.load("todo")
    app = todo.create_app()
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "Created the tables." in result.output
    with app.app_context():
        assert todo.db.engine.url.database == str(
            examples.directory / "instance" / "todo.db"
        )
        todo.db.engine.dispose()


def test_quickstart_environment(
    examples: Examples, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """FLASK_SESSION_ORM_DATABASE_URL in the environment replaces the default URL."""
    url = f"sqlite:///{tmp_path}/from-env.db"
    monkeypatch.setenv("FLASK_SESSION_ORM_DATABASE_URL", url)
    todo = examples.load("todo")
    app = todo.create_app()
    with app.app_context():
        assert todo.db.engine.url.database == f"{tmp_path}/from-env.db"


def test_quickstart_views(examples: Examples, database_url: str) -> None:
    """Quickstart views: 201 stores, 400 stores nothing, 404 for a missing to-do."""
    todo = examples.load("todo")
    app = todo.create_app({"TESTING": True, "SESSION_ORM_DATABASE_URL": database_url})
    with tables(app, todo.db, todo.Base):
        client = app.test_client()
        created = client.post("/todos", json={"title": "write docs"})
        assert created.status_code == 201
        assert created.json == {"id": 1, "title": "write docs", "done": False}
        assert client.post("/todos", json={"title": " "}).status_code == 400
        assert client.post("/todos/1/done").json["done"] is True
        assert client.post("/todos/99/done").status_code == 404
        assert client.get("/todos").json == [
            {"id": 1, "title": "write docs", "done": True}
        ]


# -- configuration -------------------------------------------------------------


def test_settings_sections_are_all_tested() -> None:
    """Every section of settings.py is one that a test below executes."""
    names = re.findall(
        r"^# \[(?!end )([\w-]+)\]$", (EXAMPLES / "settings.py").read_text(), re.M
    )
    assert sorted(names) == sorted(
        [
            "database-url",
            "database-url-object",
            "sqlite",
            "engines",
            "engine-options",
            "binds",
            "expire-on-commit",
            "autoflush",
            "session-options",
            "commit-on-success",
            "echo",
            "retry",
            "ping-idle-after",
            "pgbouncer",
        ]
    )


def test_config_defaults(tmp_path: pathlib.Path) -> None:
    """With only a URL set, every other key has the default the page states."""
    app, db = init(tmp_path, {"SESSION_ORM_DATABASE_URL": "sqlite://"})
    with app.app_context():
        assert db.sessionmaker.kw["expire_on_commit"] is True
        assert db.sessionmaker.kw["autoflush"] is True
        assert list(db.engines) == ["default"]
        assert not db.engine.echo


def test_config_database_url(tmp_path: pathlib.Path) -> None:
    """A URL string names the default engine; network databases get pre-ping."""
    app, db = init(tmp_path, settings("database-url"))
    with app.app_context():
        assert db.engine.url.host == "db.internal"
        assert db.engine.url.port == 5432
        assert db.engine.pool._pre_ping is False  # type: ignore[attr-defined]
    engine = app.extensions["session_orm"].config.engines["default"]
    assert engine.ping_idle_after == 1.0


def test_config_database_url_object(tmp_path: pathlib.Path) -> None:
    """A URL object carries a password with any character, never shown in a repr."""
    password = "p@ss:w/rd%"
    app, db = init(tmp_path, settings("database-url-object", SHOP_DB_PASSWORD=password))
    with app.app_context():
        assert db.engine.url.password == password
        assert password not in repr(db.engine)


def test_config_sqlite_relative(tmp_path: pathlib.Path) -> None:
    """A relative SQLite path lands in the instance folder, which init_app creates."""
    app, db = init(tmp_path, settings("sqlite"))
    assert (tmp_path / "instance").is_dir()
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "instance" / "shop.db")


def test_config_sqlite_memory(tmp_path: pathlib.Path) -> None:
    """sqlite:// is one in-memory database shared by every session of the engine."""
    app, db = init(tmp_path, {"SESSION_ORM_DATABASE_URL": "sqlite://"})
    with app.app_context():
        assert isinstance(db.engine.pool, sa_pool.StaticPool)
        with db.sessionmaker.begin() as session:
            session.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            session.execute(sa.text("INSERT INTO t VALUES (1)"))
    seen: list[int] = []

    def read() -> None:
        with app.app_context(), db.sessionmaker() as session:
            seen.append(session.scalar(sa.text("SELECT x FROM t")))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert seen == [1]


def test_config_engines(tmp_path: pathlib.Path) -> None:
    """SESSION_ORM_ENGINES names engines; a dict value carries per-engine options."""
    app, db = init(tmp_path, settings("engines"))
    with app.app_context():
        assert sorted(db.engines) == ["cache", "default", "replica"]
        assert db.get_engine("replica").pool.size() == 2  # type: ignore[attr-defined]
        assert db.get_engine("cache").url.database == str(
            tmp_path / "instance" / "cache.db"
        )
        with pytest.raises(KeyError, match="The engines that exist are: cache"):
            db.get_engine("audit")


def test_config_engine_options(tmp_path: pathlib.Path) -> None:
    """SESSION_ORM_ENGINE_OPTIONS apply to every engine; per-engine options win."""
    config = settings("engine-options")
    config.update(
        SESSION_ORM_ENGINES={
            "default": "postgresql+psycopg://shop@db.internal/shop",
            "replica": {"url": "postgresql+psycopg://r@replica/shop", "pool_size": 2},
        }
    )
    app, db = init(tmp_path, config)
    with app.app_context():
        assert db.engine.pool.size() == 10  # type: ignore[attr-defined]
        assert db.engine.pool.timeout() == 5  # type: ignore[attr-defined]
        assert db.get_engine("replica").pool.size() == 2  # type: ignore[attr-defined]


def test_config_mysql_recycle(tmp_path: pathlib.Path) -> None:
    """MySQL and MariaDB engines recycle connections after an hour unless told."""
    app, db = init(tmp_path, {"SESSION_ORM_DATABASE_URL": "mysql+pymysql://u@h/d"})
    with app.app_context():
        assert db.engine.pool._recycle == 3600  # type: ignore[attr-defined]
    assert app.extensions["session_orm"].config.engines["default"].ping_idle_after
    app, db = init(
        tmp_path,
        {
            "SESSION_ORM_DATABASE_URL": "mysql+pymysql://u@h/d",
            "SESSION_ORM_ENGINE_OPTIONS": {"pool_recycle": 600, "pool_pre_ping": False},
        },
    )
    with app.app_context():
        assert db.engine.pool._recycle == 600  # type: ignore[attr-defined]
        assert db.engine.pool._pre_ping is False  # type: ignore[attr-defined]


def test_config_ping_idle_after(tmp_path: pathlib.Path) -> None:
    """The threshold reaches network engines; 0 is pool_pre_ping, None no ping."""
    config = settings("ping-idle-after")
    config["SESSION_ORM_DATABASE_URL"] = "postgresql+psycopg://shop@db.internal/shop"
    app, db = init(tmp_path, config)
    assert app.extensions["session_orm"].config.engines["default"].ping_idle_after == 5
    for value, pre_ping in ((0, True), (None, False)):
        config["SESSION_ORM_PING_IDLE_AFTER"] = value
        app, db = init(tmp_path, config)
        engine = app.extensions["session_orm"].config.engines["default"]
        assert engine.ping_idle_after is None
        with app.app_context():
            assert db.engine.pool._pre_ping is pre_ping  # type: ignore[attr-defined]


def test_config_pgbouncer(tmp_path: pathlib.Path) -> None:
    """The PgBouncer settings turn psycopg's prepared statements off and keep
    the idle ping (tests/test_pgbouncer.py runs them through a real PgBouncer).
    """
    app, _ = init(tmp_path, settings("pgbouncer"))
    engine = app.extensions["session_orm"].config.engines["default"]
    assert engine.options["connect_args"] == {"prepare_threshold": None}
    assert engine.ping_idle_after == 1.0
    assert engine.url.port == 6432


def test_config_binds(tmp_path: pathlib.Path) -> None:
    """SESSION_ORM_BINDS accepts class paths and table names naming known engines."""
    config = settings("binds")
    config["SESSION_ORM_ENGINES"] = {
        "default": "sqlite://",
        "audit": "sqlite://",
        "replica": "sqlite://",
    }
    init(tmp_path, config)
    del config["SESSION_ORM_ENGINES"]["audit"]
    with pytest.raises(ValueError, match="unknown engine 'audit'"):
        init(tmp_path, config)


def test_config_session_keys(tmp_path: pathlib.Path) -> None:
    """The session keys reach the sessionmaker; the dedicated keys win."""
    config = {"SESSION_ORM_DATABASE_URL": "sqlite://"}
    config.update(settings("expire-on-commit"))
    config.update(settings("autoflush"))
    config.update(settings("session-options"))
    app, db = init(tmp_path, config)
    with app.app_context():
        kw = db.sessionmaker.kw
        assert kw["expire_on_commit"] is False
        assert kw["autoflush"] is False
        assert kw["info"] == {"component": "web"}
        assert db.session.info["component"] == "web"
    config["SESSION_ORM_SESSION_OPTIONS"] = {"binds": {}}
    with pytest.raises(ValueError, match="'binds', which flask-session-orm manages"):
        init(tmp_path, config)


def test_config_commit_on_success(tmp_path: pathlib.Path) -> None:
    """With SESSION_ORM_COMMIT_ON_SUCCESS off, a successful request commits nothing."""
    config = {"SESSION_ORM_DATABASE_URL": f"sqlite:///{tmp_path}/c.db"}
    config.update(settings("commit-on-success"))
    app, db = init(tmp_path, config)
    with app.app_context(), db.sessionmaker.begin() as session:
        session.execute(sa.text("CREATE TABLE t (x INTEGER)"))

    @app.post("/")
    def view() -> str:
        db.session.execute(sa.text("INSERT INTO t VALUES (1)"))
        return "ok"

    assert app.test_client().post("/").status_code == 200
    with app.app_context():
        assert db.session.scalar(sa.text("SELECT count(*) FROM t")) == 0
        db.engine.dispose()


def test_config_echo(tmp_path: pathlib.Path) -> None:
    """SESSION_ORM_ECHO turns on SQL logging for every engine."""
    config = settings("echo")
    config["SESSION_ORM_ENGINES"] = {"default": "sqlite://", "other": "sqlite://"}
    app, db = init(tmp_path, config)
    with app.app_context():
        assert all(engine.echo for engine in db.engines.values())


def test_config_retry(tmp_path: pathlib.Path) -> None:
    """The retry section's keys are read as the page states."""
    config = settings("retry")
    config["SESSION_ORM_DATABASE_URL"] = "sqlite://"
    app, _ = init(tmp_path, config)
    read = app.extensions["session_orm"].config
    assert (read.retry_attempts, read.retry_backoff, read.retry_backoff_max) == (
        3,
        0.05,
        0.5,
    )


def test_config_unknown_key(tmp_path: pathlib.Path) -> None:
    """A misspelt SESSION_ORM_ key is an error naming the likely right key."""
    with pytest.raises(KeyError, match="Did you mean 'SESSION_ORM_ECHO'"):
        init(
            tmp_path, {"SESSION_ORM_DATABASE_URL": "sqlite://", "SESSION_ORM_ECHOS": 1}
        )


def test_config_flask_sqlalchemy_key(tmp_path: pathlib.Path) -> None:
    """Flask-SQLAlchemy's URL key alone is an error that names the right key."""
    with pytest.raises(RuntimeError, match="reads 'SESSION_ORM_DATABASE_URL'"):
        init(tmp_path, {"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_config_bool_type(tmp_path: pathlib.Path) -> None:
    """Switches must be real booleans: a string is an error, not a truthy value."""
    with pytest.raises(TypeError, match="'SESSION_ORM_ECHO' must be True or False"):
        init(
            tmp_path,
            {"SESSION_ORM_DATABASE_URL": "sqlite://", "SESSION_ORM_ECHO": "no"},
        )


# -- request lifecycle ---------------------------------------------------------


@pytest.fixture
def lifecycle(
    examples: Examples, database_url: str
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("lifecycle")
    app = module.create_app({"SESSION_ORM_DATABASE_URL": database_url})
    with tables(app, module.db, module.Base):
        yield module, app


def account_names(module: types.ModuleType, app: flask.Flask) -> list[str]:
    return rows(app, module.db, sa.select(module.Account.name).order_by("name"))


def test_lifecycle_success(lifecycle: tuple[types.ModuleType, flask.Flask]) -> None:
    """A view answering 201 has its changes committed."""
    module, app = lifecycle
    assert app.test_client().post("/accounts", data={"name": "ann"}).status_code == 201
    assert account_names(module, app) == ["ann"]


def test_lifecycle_failures(lifecycle: tuple[types.ModuleType, flask.Flask]) -> None:
    """A returned 400, an abort(403) and an exception (500) all roll back."""
    module, app = lifecycle
    client = app.test_client()
    assert client.post("/accounts/checked", data={"name": "al"}).status_code == 400
    assert client.post("/accounts/checked", data={"name": "admin"}).status_code == 403
    assert client.post("/accounts/checked", data={"name": "crash"}).status_code == 500
    assert account_names(module, app) == []
    assert client.post("/accounts/checked", data={"name": "bob"}).status_code == 201
    assert account_names(module, app) == ["bob"]


def test_lifecycle_commit_error(
    lifecycle: tuple[types.ModuleType, flask.Flask],
) -> None:
    """A commit that fails reaches the app's error handler: 409, nothing stored."""
    module, app = lifecycle
    client = app.test_client()
    assert client.post("/accounts", data={"name": "ann"}).status_code == 201
    response = client.post("/accounts", data={"name": "ann"})
    assert (response.status_code, response.text) == (409, "this name is taken")
    assert account_names(module, app) == ["ann"]


def test_lifecycle_handled_exception(
    lifecycle: tuple[types.ModuleType, flask.Flask],
) -> None:
    """A view that raised is rolled back though its handler answers a redirect."""
    module, app = lifecycle
    client = app.test_client()
    response = client.post("/accounts/paid", data={"name": "cy", "card": "declined"})
    assert response.status_code == 302
    assert client.post("/accounts/paid", data={"name": "di"}).status_code == 201
    assert account_names(module, app) == ["di"]


def test_lifecycle_streaming(lifecycle: tuple[types.ModuleType, flask.Flask]) -> None:
    """A streamed body can read with db.session; it commits its own writes."""
    module, app = lifecycle
    client = app.test_client()
    response = client.post("/accounts/bulk", data={"name": ["ann", "bob"]})
    assert response.text == "ann\nbob\n"
    assert client.get("/accounts.csv").text == "id,name\n1,ann\n2,bob\n"
    assert account_names(module, app) == ["ann", "bob"]


def test_lifecycle_streaming_uncommitted(
    lifecycle: tuple[types.ModuleType, flask.Flask],
) -> None:
    """Without its own commit, a generator's writes are rolled back at the end."""
    module, app = lifecycle

    @app.get("/stream")
    def stream() -> flask.Response:
        def body() -> t.Iterator[str]:
            module.db.session.add(module.Account(name="lost"))
            module.db.session.flush()
            yield "done"

        return flask.Response(flask.stream_with_context(body()))

    assert app.test_client().get("/stream").text == "done"
    assert account_names(module, app) == []


def test_lifecycle_after_request(
    lifecycle: tuple[types.ModuleType, flask.Flask],
) -> None:
    """Changes made in an after_request function are committed with the view's."""
    module, app = lifecycle
    assert app.test_client().post("/accounts", data={"name": "ann"}).status_code == 201
    assert account_names(module, app) == ["ann"]
    events = rows(app, module.db, sa.select(module.Event.text))
    assert events == ["/accounts answered 201"]


def test_lifecycle_cli(lifecycle: tuple[types.ModuleType, flask.Flask]) -> None:
    """A CLI command commits itself; outside requests nothing else commits."""
    module, app = lifecycle
    result = app.test_cli_runner().invoke(args=["open-account"])
    assert result.exit_code == 0, result.output
    assert account_names(module, app) == ["ops"]


def test_lifecycle_outside_request_warns(
    lifecycle: tuple[types.ModuleType, flask.Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Uncommitted changes at the end of an app context are rolled back, logged."""
    module, app = lifecycle
    with app.app_context():
        module.db.session.add(module.Account(name="forgotten"))
    assert account_names(module, app) == []
    assert "Rolled back 1 new, 0 modified and 0 deleted object(s)" in caplog.text


def test_lifecycle_no_session_no_connection(
    lifecycle: tuple[types.ModuleType, flask.Flask],
) -> None:
    """A request that never uses db.session creates no session."""
    _, app = lifecycle
    created: list[object] = []

    @app.get("/static-page")
    def static_page() -> str:
        return "hello"

    with signals.session_created.connected_to(
        lambda sender, session: created.append(session), app
    ):
        assert app.test_client().get("/static-page").text == "hello"
        assert created == []
        assert app.test_client().get("/accounts.csv").text == "id,name\n"
        assert len(created) == 1


# -- binds ---------------------------------------------------------------------


@pytest.fixture
def shop(
    examples: Examples, database_url: str, tmp_path: pathlib.Path
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("shop")
    config = examples.load("shop_config")
    engines = dict(config.SESSION_ORM_ENGINES)
    assert list(engines) == ["default", "audit"]
    # Two databases: the backend under test, and a SQLite file.
    engines.update(default=database_url, audit=f"sqlite:///{tmp_path}/audit.db")
    app = module.create_app(
        {
            "SESSION_ORM_ENGINES": engines,
            "SESSION_ORM_BINDS": {"login_attempt": "audit"},
        }
    )
    with tables(app, module.db, module.Base):
        yield module, app


def test_binds_routing(shop: tuple[types.ModuleType, flask.Flask]) -> None:
    """Each model and table lives on its engine; one request commits both."""
    module, app = shop
    client = app.test_client()
    response = client.post("/orders", data={"product": "tea", "user": "ann"})
    assert response.status_code == 201
    assert client.get("/audit/count").json == {"count": 1}
    with app.app_context():
        default, audit = module.db.get_engine("default"), module.db.get_engine("audit")
        assert module.db.get_bind(module.Order(product="x")) is default
        assert module.db.get_bind(module.AuditEntry(message="x")) is audit
        with audit.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM audit_entry")) == 1
            assert (
                connection.scalar(sa.text("SELECT username FROM login_attempt"))
                == "ann"
            )
        with default.connect() as connection:
            assert connection.scalar(sa.text("SELECT product FROM shop_order")) == "tea"
            assert "audit_entry" not in sa.inspect(connection).get_table_names()


def test_binds_failure_rolls_back_both(
    shop: tuple[types.ModuleType, flask.Flask],
) -> None:
    """A failing request rolls back its writes on both databases."""
    module, app = shop

    @app.post("/fail")
    def fail() -> tuple[str, int]:
        module.db.session.add(module.Order(product="x"))
        module.db.session.add(module.AuditEntry(message="x"))
        module.db.session.flush()
        return "no", 400

    assert app.test_client().post("/fail").status_code == 400
    assert rows(app, module.db, sa.select(module.Order)) == []
    assert rows(app, module.db, sa.select(module.AuditEntry)) == []


def test_binds_override(
    examples: Examples, database_url: str, tmp_path: pathlib.Path
) -> None:
    """SESSION_ORM_BINDS naming a base class wins over its __bind_key__."""
    module = examples.load("shop")
    config = examples.load("shop_config")
    assert config.SESSION_ORM_BINDS == {
        "shop:AuditBase": "default",
        "login_attempt": "audit",
    }
    app = module.create_app(
        {
            "SESSION_ORM_ENGINES": {
                "default": database_url,
                "audit": f"sqlite:///{tmp_path}/audit.db",
            },
            "SESSION_ORM_BINDS": config.SESSION_ORM_BINDS,
        }
    )
    with tables(app, module.db, module.Base), app.app_context():
        entry = module.AuditEntry(message="x")
        assert module.db.get_bind(entry) is module.db.get_engine("default")


# -- hooks ---------------------------------------------------------------------


@pytest.fixture
def hooks(
    examples: Examples, database_url: str
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("hooks")
    app = module.create_app({"SESSION_ORM_DATABASE_URL": database_url})
    with tables(app, module.db, module.Base):
        yield module, app


def emails(module: types.ModuleType, app: flask.Flask) -> list[str]:
    return rows(app, module.db, sa.select(module.User.email).order_by("email"))


def test_hooks_on_commit(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """The welcome mail goes out after a commit, never after a rollback."""
    module, app = hooks
    client = app.test_client()
    form = {"email": "a@example.com", "name": "A"}
    assert client.post("/signup", data=form).status_code == 400
    assert module.outbox == []
    assert client.post("/signup", data={**form, "terms": "accepted"}).status_code == 201
    assert module.outbox == ["Welcome, a@example.com!"]
    assert emails(module, app) == ["a@example.com"]


def test_hooks_signals(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """The signal receivers count one commit and one rollback."""
    _, app = hooks
    client = app.test_client()
    form = {"email": "a@example.com", "name": "A"}
    client.post("/signup", data=form)
    client.post("/signup", data={**form, "terms": "accepted"})
    assert app.extensions["stats"] == {"commits": 1, "rollbacks": 1}


def test_hooks_describe(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """describe() tells transient, unchanged, changed, deleted and detached apart."""
    module, app = hooks
    with app.app_context():
        user = module.User(email="a@example.com", name="A")
        assert module.describe(user) == "not in a session"
        module.db.session.add(user)
        module.db.session.commit()
        assert module.describe(user) == "unchanged"
        user.name = "B"
        assert module.describe(user) == "changed"
        module.db.session.delete(user)
        assert module.describe(user) == "deleted"
        module.db.session.rollback()
        module.db.session.expunge(user)
        assert module.describe(user) == "not in a session"
    client = app.test_client()
    assert client.post("/users/1/rename", data={"name": "A"}).text == "unchanged"
    assert client.post("/users/1/rename", data={"name": "C"}).text == "changed"


def test_hooks_no_autocommit(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """The import view stores all lines or, with one bad line, none; a 200 both ways."""
    module, app = hooks
    client = app.test_client()
    bad = client.post("/users/import", data="a@example.com,A\nnobody,N")
    assert bad.status_code == 200
    assert bad.json == {"imported": 0, "errors": ["line 2: 'nobody' is not an address"]}
    assert emails(module, app) == []
    good = client.post("/users/import", data="a@example.com,A\nb@example.com,B")
    assert good.json == {"imported": 2, "errors": []}
    assert emails(module, app) == ["a@example.com", "b@example.com"]


def test_hooks_mark_for_rollback(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """A dry run answers 200 with an id but stores nothing and sends no mail."""
    module, app = hooks
    client = app.test_client()
    form = {"email": "a@example.com", "name": "A"}
    response = client.post("/users/preview?dry_run=1", data=form)
    assert response.status_code == 200
    assert isinstance(response.json["id"], int)
    assert emails(module, app) == []
    assert module.outbox == []
    assert client.post("/users/preview", data=form).status_code == 200
    assert emails(module, app) == ["a@example.com"]


def test_hooks_invalidate(hooks: tuple[types.ModuleType, flask.Flask]) -> None:
    """db.invalidate() discards the connection: nothing is committed, signal sent."""
    module, app = hooks
    invalidated: list[object] = []

    @app.post("/discard")
    def discard() -> str:
        module.sign_up("a@example.com", "A")
        module.db.session.flush()
        module.db.invalidate()
        return "ok"

    with signals.session_invalidated.connected_to(
        lambda sender, session: invalidated.append(session), app
    ):
        assert app.test_client().post("/discard").text == "ok"
    assert len(invalidated) == 1
    assert emails(module, app) == []
    assert module.outbox == []
    assert app.test_client().post("/reports/slow").json == {"users": 0}


# -- background jobs -----------------------------------------------------------


@pytest.fixture
def jobs(
    examples: Examples, database_url: str
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("jobs")
    app = module.create_app({"SESSION_ORM_DATABASE_URL": database_url})
    with tables(app, module.db, module.Base):
        yield module, app


def statuses(module: types.ModuleType, app: flask.Flask) -> list[str]:
    return rows(app, module.db, sa.select(module.Report.status).order_by("id"))


def test_jobs_thread_after_commit(jobs: tuple[types.ModuleType, flask.Flask]) -> None:
    """The view's job starts after the commit, in a thread, and finds the report."""
    module, app = jobs
    before = set(threading.enumerate())
    response = app.test_client().post("/reports")
    assert (response.status_code, response.json) == (202, {"id": 1})
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=10)
    assert statuses(module, app) == ["done"]


def test_jobs_sessionmaker(jobs: tuple[types.ModuleType, flask.Flask]) -> None:
    """A job with db.sessionmaker.begin() commits when its block ends."""
    module, app = jobs
    with app.app_context():
        module.db.session.add_all([module.Report(status="done") for _ in range(2)])
        module.db.session.commit()
    module.reset_reports(app)
    assert statuses(module, app) == ["pending", "pending"]


def test_jobs_detached_after_request(
    jobs: tuple[types.ModuleType, flask.Flask],
) -> None:
    """An object kept from a request is detached: loading its attributes fails."""
    module, app = jobs
    kept: list[t.Any] = []

    @app.post("/keep")
    def keep() -> str:
        report = module.Report()
        module.db.session.add(report)
        kept.append(report)
        return "ok"

    app.test_client().post("/keep")
    assert module.db.object_session(kept[0]) is None
    with pytest.raises(
        sa.orm.exc.DetachedInstanceError, match="not bound to a Session"
    ):
        kept[0].status  # noqa: B018


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_jobs_fork(jobs: tuple[types.ModuleType, flask.Flask]) -> None:
    """Forked workers use their own connections; the parent's pool still works."""
    module, app = jobs
    with app.app_context():
        module.db.session.add_all([module.Report() for _ in range(3)])
        module.db.session.commit()
        # The parent holds a pooled connection while the children run.
        parent = module.db.session
        parent.execute(sa.select(module.Report.id)).all()
        assert module.build_reports_in_processes(app, [1, 2, 3]) == [0, 0, 0]
        parent.execute(sa.select(module.Report.id)).all()
        parent.commit()
    assert statuses(module, app) == ["done", "done", "done"]


# -- migrating from Flask-SQLAlchemy -------------------------------------------


def exercise_blog(app: flask.Flask) -> None:
    client = app.test_client()
    assert client.post("/authors", data={"name": "Bo"}).json == {"id": 1}
    assert client.post("/authors", data={"name": "Al"}).json == {"id": 2}
    assert client.get("/authors/1").json == {"name": "Bo"}
    assert client.get("/authors/9").status_code == 404
    assert client.get("/authors").json == ["Al", "Bo"]


def test_migrate_after(
    examples: Examples, database_url: str, tmp_path: pathlib.Path
) -> None:
    """The migrated blog stores authors in one database and visits in the other."""
    module = examples.load("migrate_after")
    app = module.create_app(
        {
            "SESSION_ORM_DATABASE_URL": database_url,
            "SESSION_ORM_ENGINES": {"stats": f"sqlite:///{tmp_path}/stats.db"},
        }
    )
    try:
        exercise_blog(app)
        with app.app_context():
            stats = module.db.get_engine("stats")
            with stats.connect() as connection:
                assert connection.scalar(sa.text("SELECT count(*) FROM visit")) == 2
    finally:
        with app.app_context():
            module.db.drop_all(module.Base)
            for engine in module.db.engines.values():
                engine.dispose()


def test_migrate_after_default_paths(examples: Examples) -> None:
    """Both SQLite files of the migrated blog land in the instance folder."""
    module = examples.load("migrate_after")
    app = module.create_app({})
    with app.app_context():
        for engine in module.db.engines.values():
            assert (
                pathlib.Path(engine.url.database).parent
                == examples.directory / "instance"
            )
            engine.dispose()


def test_migrate_before(examples: Examples, tmp_path: pathlib.Path) -> None:
    """The Flask-SQLAlchemy original behaves the same (when that package is here)."""
    pytest.importorskip("flask_sqlalchemy")
    module = examples.load("migrate_before")
    app = module.create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/blog.db",
            "SQLALCHEMY_BINDS": {"stats": f"sqlite:///{tmp_path}/stats.db"},
        }
    )
    exercise_blog(app)
    with app.app_context():
        module.db.engines["stats"].dispose()
        module.db.engine.dispose()


def test_config_constructor(examples: Examples, tmp_path: pathlib.Path) -> None:
    """Constructor arguments are defaults; SESSION_ORM_ENGINE_OPTIONS overrides them."""
    db = examples.load("constructor").db
    app = flask.Flask("docs_a", instance_path=str(tmp_path / "a"))
    app.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///a.db"
    db.init_app(app)
    other = flask.Flask("docs_b", instance_path=str(tmp_path / "b"))
    other.config["SESSION_ORM_DATABASE_URL"] = "sqlite:///b.db"
    other.config["SESSION_ORM_ENGINE_OPTIONS"] = {"pool_size": 5}
    db.init_app(other)
    with app.app_context():
        assert db.engine.pool.size() == 20  # type: ignore[attr-defined]
        assert db.sessionmaker.kw["expire_on_commit"] is False
    with other.app_context():
        assert db.engine.pool.size() == 5  # type: ignore[attr-defined]


# -- command line --------------------------------------------------------------


def code_blocks(page: str, language: str) -> list[str]:
    """The dedented contents of the ``code-block:: language`` blocks of a page."""
    text = (DOCS / page).read_text()
    pattern = rf"^\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)"
    blocks = re.findall(pattern, text, re.M)
    return [textwrap.dedent(block).strip("\n") + "\n" for block in blocks]


def console_commands(page: str) -> list[tuple[str, str]]:
    """Each ``$ command`` of the page's console blocks, with the output shown."""
    commands = []
    for block in code_blocks(page, "console"):
        for chunk in re.split(r"^(?=\$ )", block, flags=re.M):
            if chunk:
                command, _, output = chunk.partition("\n")
                commands.append((command[2:], output.strip("\n")))
    return commands


@pytest.fixture
def todo_project(examples: Examples) -> t.Iterator[flask.Flask]:
    """The quickstart app on its default SQLite file, in the state the CLI page uses."""
    todo = examples.load("todo")
    app = todo.create_app()
    with app.app_context():
        todo.db.create_all(todo.Base)
    client = app.test_client()
    client.post("/todos", json={"title": "write docs"})
    client.post("/todos", json={"title": "test them"})
    client.post("/todos/1/done")
    yield app
    with app.app_context():
        todo.db.engine.dispose()


def test_cli_page_commands(examples: Examples, todo_project: flask.Flask) -> None:
    """Every flask command of the CLI page prints what the page shows."""
    commands = console_commands("cli.rst")
    assert len(commands) >= 6
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("FLASK_SESSION_ORM_")
    }
    for command, expected in commands:
        argv = shlex.split(command)
        assert argv[:3] == ["flask", "--app", "todo"], command
        if "-c" not in argv and shutil.which("sqlite3") is None:
            pytest.skip("the sqlite3 program is not installed")
        result = subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "flask"), *argv[1:]],
            cwd=examples.directory,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip("\n") == expected, command


def test_cli_page_shell(todo_project: flask.Flask) -> None:
    """The flask shell session of the CLI page runs in the shell's namespace."""
    (block,) = code_blocks("cli.rst", "pycon")
    session = block.split("\n", 1)[1]
    with todo_project.app_context():
        namespace = todo_project.make_shell_context()
        assert {"db", "sa", "Todo"} <= set(namespace)
        test = doctest.DocTestParser().get_doctest(session, namespace, "cli", None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0
        assert namespace["db"].session.get(namespace["Todo"], 2).done is True


def test_config_sqlite_memory_shares_transaction(tmp_path: pathlib.Path) -> None:
    """What the page warns of: sqlite:// sessions share one transaction."""
    app, db = init(tmp_path, {"SESSION_ORM_DATABASE_URL": "sqlite://"})
    with app.app_context():
        with db.sessionmaker.begin() as session:
            session.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        with db.sessionmaker() as writer, db.sessionmaker() as other:
            writer.execute(sa.text("INSERT INTO t VALUES (1)"))
            other.execute(sa.text("SELECT 1"))
            other.commit()
            writer.rollback()
        assert db.session.scalar(sa.text("SELECT count(*) FROM t")) == 1


# -- the docs' own machinery ---------------------------------------------------


@pytest.mark.parametrize("name", ["python", "flask", "sqlalchemy"])
def test_inventories_match_sources(name: str) -> None:
    """Each shipped intersphinx inventory is its text source, compressed."""
    directory = DOCS / "_inventories"
    data = (directory / f"{name}.inv").read_bytes()
    header, _, body = data.partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2\n")
    lines = zlib.decompress(body).decode().splitlines()
    source = (directory / f"{name}.txt").read_text().splitlines()
    expected = [line for line in source if line.strip() and not line.startswith("#")]
    assert lines == expected
    for line in lines:
        fields = line.split(" ", 4)
        assert len(fields) == 5, line
        assert ":" in fields[1], line


def test_jobs_page_tests(examples: Examples, database_url: str) -> None:
    """The background page's tests pass when pytest runs them, jobs run inline."""
    environ = {**os.environ, "DATABASE_URL": database_url}
    if database_url.startswith("sqlite"):
        del environ["DATABASE_URL"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "jobs_test.py",
        ],
        cwd=examples.directory,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert "2 passed" in result.stdout, result.stdout
    assert result.returncode == 0


# -- schema migrations ---------------------------------------------------------


def sqlite_tables(path: pathlib.Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("module", "databases"),
    [
        ("migrations", {"app.db": {"user", "followers"}}),
        (
            "migrations_multidb",
            {"shop.db": {"order"}, "audit.db": {"audit_entry", "login_attempt"}},
        ),
    ],
)
def test_migrations_page_commands(
    examples: Examples, module: str, databases: dict[str, set[str]]
) -> None:
    """The migrations page's flask db commands put each table of its examples in
    the database the page says.
    """
    commands = [
        command
        for command, _ in console_commands("migrations.rst")
        if f"--app {module} " in command
    ]
    assert len(commands) == 3
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("FLASK_SESSION_ORM_")
    }
    for command in commands:
        argv = shlex.split(command)
        result = subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "flask"), *argv[1:]],
            cwd=examples.directory,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}"
    for name, tables in databases.items():
        path = examples.directory / "instance" / name
        assert sqlite_tables(path) == {*tables, "alembic_version"}


def test_migrations_page_bind_lookup(examples: Examples) -> None:
    """The migrations page's table -> engine lookups answer what it shows."""
    module = examples.load("migrations_multidb")
    (block,) = code_blocks("migrations.rst", "pycon")
    test = doctest.DocTestParser().get_doctest(block, {}, "bind", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test, clear_globs=False)
    assert runner.summarize(verbose=False).failed == 0
    with test.globs["app"].app_context():
        for engine in module.db.engines.values():
            engine.dispose()


# -- pagination ----------------------------------------------------------------


@pytest.fixture
def posts(
    examples: Examples, database_url: str
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("posts")
    app = module.create_app(
        {"SECRET_KEY": "docs", "SESSION_ORM_DATABASE_URL": database_url}
    )
    with tables(app, module.db, module.Base):
        yield module, app


def add_posts(module: types.ModuleType, app: flask.Flask, count: int) -> None:
    """Posts 1..count; every third one shares its time with the one before."""
    start = datetime.datetime(2025, 5, 1)
    with app.app_context(), module.db.sessionmaker() as session:
        session.add_all(
            module.Post(
                id=i,
                slug=f"post-{i}",
                title=f"Post {i}",
                created=start + datetime.timedelta(hours=i - i % 3),
            )
            for i in range(1, count + 1)
        )
        session.commit()


def test_pagination_or_404(posts: tuple[types.ModuleType, flask.Flask]) -> None:
    """The 404 helpers answer the post, or a 404 with the page's description."""
    module, app = posts
    client = app.test_client()
    empty = client.get("/posts/latest")
    assert (empty.status_code, "Nothing published yet." in empty.text) == (404, True)
    add_posts(module, app, 4)
    assert client.get("/posts/2").json == {"title": "Post 2"}
    missing = client.get("/posts/9")
    assert (missing.status_code, "There is no post 9." in missing.text) == (404, True)
    assert client.get("/posts/by-slug/post-3").json == {"title": "Post 3"}
    assert client.get("/posts/by-slug/nope").status_code == 404
    assert client.get("/posts/latest").json == {"title": "Post 4"}


def test_pagination_template(posts: tuple[types.ModuleType, flask.Flask]) -> None:
    """The Flask-SQLAlchemy template renders numbered pages from the query string."""
    module, app = posts
    add_posts(module, app, 95)
    client = app.test_client()
    html = client.get("/posts/?page=5&per_page=5").text
    assert '<li><a href="/posts/21">Post 21</a></li>' in html
    assert "Posts 21 to 25 of 95" in html
    assert '<a href="/posts/?page=4">Previous</a>' in html
    assert '<a href="/posts/?page=6">Next</a>' in html
    pages = re.findall(r"page=(\d+)\">\d+<|<strong>(\d+)</strong>|(…)", html)
    assert ["".join(page) for page in pages] == [
        *("1", "2", "3", "4", "5", "6", "7", "8", "9"),
        *("…", "18", "19"),
    ]
    assert client.get("/posts/?page=99").status_code == 404
    assert client.get("/posts/?per_page=500").text.count("<li>") == 50


def test_pagination_keyset_api(posts: tuple[types.ModuleType, flask.Flask]) -> None:
    """Following the API's next links, then its prev links, visits every post."""
    module, app = posts
    add_posts(module, app, 45)
    # Newest first; posts 3k, 3k+1 and 3k+2 share a time: the higher id first.
    newest_first = sorted(range(1, 46), key=lambda i: (i - i % 3, i), reverse=True)
    client = app.test_client()
    page = client.get("/api/posts?per_page=10").json
    seen = [post["id"] for post in page["posts"]]
    while page["next"]:
        page = client.get(page["next"] + "&per_page=10").json
        seen += [post["id"] for post in page["posts"]]
    assert seen == newest_first
    back = [post["id"] for post in page["posts"]]
    while page["prev"]:
        page = client.get(page["prev"] + "&per_page=10").json
        back[:0] = [post["id"] for post in page["posts"]]
    assert back == newest_first
    assert client.get("/api/posts?after=forged").status_code == 400


# -- retry ---------------------------------------------------------------------


@pytest.fixture
def retry_shop(
    examples: Examples, database_url: str
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    module = examples.load("retry")
    module.outbox.clear()
    app = module.create_app(
        {"SESSION_ORM_DATABASE_URL": database_url, "SESSION_ORM_RETRY_BACKOFF": 0.005}
    )
    with tables(app, module.db, module.Base):
        with app.app_context(), module.db.sessionmaker.begin() as session:
            session.add(module.Product(id=1, name="lamp", stock=3))
        yield module, app


def test_retry_page_orders(retry_shop: tuple[types.ModuleType, flask.Flask]) -> None:
    """Orders take stock until none is left; each stored order sends one mail."""
    module, app = retry_shop
    client = app.test_client()
    first = client.post("/products/1/orders", data={"quantity": "2"})
    assert first.status_code == 201
    assert first.json == {"order": 1, "attempt": 1}
    assert client.post("/products/1/orders", data={"quantity": "2"}).status_code == 409
    assert module.outbox == ["order 1: 2 x lamp"]


def test_retry_page_concurrent_orders(
    retry_shop: tuple[types.ModuleType, flask.Flask],
) -> None:
    """Concurrent orders for the last items: as many succeed as there is stock,
    the others get 409, none a 500, and the stock ends at zero.
    """
    module, app = retry_shop
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def order() -> None:
        barrier.wait(10)
        response = app.test_client().post("/products/1/orders", data={"quantity": "1"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=order) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201, 201, 201, 409]
    assert rows(app, module.db, sa.select(module.Product.stock)) == [0]
    assert len(module.outbox) == 3
    assert all(attempt > 1 for attempt in app.extensions["retried"])


# -- migrating from Flask-SQLAlchemy: what the steps change ---------------------


def drop_blog(module: types.ModuleType, app: flask.Flask) -> None:
    with app.app_context():
        module.db.session.close()
        module.db.drop_all()
        for engine in module.db.engines.values():
            engine.dispose()


@pytest.mark.parametrize("name", ["migrate_before", "migrate_after"])
def test_migrate_side_effects(
    examples: Examples, database_url: str, tmp_path: pathlib.Path, name: str
) -> None:
    """Before and after the move, the welcome mail and the flashed message are
    sent only for authors that were stored, and the async view counts them.
    """
    if name == "migrate_before":
        pytest.importorskip("flask_sqlalchemy")
        prefix = "SQLALCHEMY_DATABASE_URI", "SQLALCHEMY_BINDS"
    else:
        prefix = "SESSION_ORM_DATABASE_URL", "SESSION_ORM_ENGINES"
    module = examples.load(name)
    app = module.create_app(
        {prefix[0]: database_url, prefix[1]: {"stats": f"sqlite:///{tmp_path}/s.db"}}
    )
    try:
        client = app.test_client()
        assert client.post("/authors", data={"name": "Bo"}).json == {"id": 1}
        assert client.post("/authors", data={"name": "Bo"}).status_code == 500
        assert module.OUTBOX == ["Welcome, Bo!"]
        assert client.post("/signup", data={"name": "Al"}).status_code == 302
        assert client.get("/messages").json == ["Welcome aboard!"]
        assert client.post("/signup", data={"name": "Al"}).status_code == 500
        assert client.get("/messages").json == []
        assert client.get("/authors/count").json == {"count": 2}
    finally:
        drop_blog(module, app)


def test_migrating_flash_before_failed_commit(tmp_path: pathlib.Path) -> None:
    """What the page warns of: without its commit, a view's flashed message
    outlives the automatic commit that failed; one flashed by on_commit is kept
    exactly when the commit worked.
    """

    class Base(sa.orm.DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = "author"
        id = sa.Column(sa.Integer, primary_key=True)
        name = sa.Column(sa.String(9), unique=True)

    app, db = init(tmp_path, {"SESSION_ORM_DATABASE_URL": "sqlite:///flash.db"})
    app.config["SECRET_KEY"] = "docs"
    with app.app_context():
        db.create_all(Base)

    @app.post("/signup")
    def sign_up() -> flask.Response:
        db.session.add(Author(name="Al"))
        flask.flash("Welcome aboard!")
        db.on_commit(flask.flash, "stored")
        return flask.redirect("/messages")

    @app.get("/messages")
    def messages() -> list[str]:
        return flask.get_flashed_messages()

    client = app.test_client()
    assert client.post("/signup").status_code == 302
    assert client.get("/messages").json == ["Welcome aboard!", "stored"]
    assert client.post("/signup").status_code == 500
    assert client.get("/messages").json == ["Welcome aboard!"]
    with app.app_context():
        db.engine.dispose()


def test_migrate_search_listeners(
    examples: Examples, database_url: str, tmp_path: pathlib.Path
) -> None:
    """Listeners registered at import on the Session class index the authors of
    every committed request, flushed or not, and none of a rolled-back one.
    """
    module = examples.load("migrate_after")
    search = examples.load("migrate_search")
    app = module.create_app(
        {
            "SESSION_ORM_DATABASE_URL": database_url,
            "SESSION_ORM_ENGINES": {"stats": f"sqlite:///{tmp_path}/s.db"},
        }
    )
    try:
        client = app.test_client()
        client.post("/authors", data={"name": "Bo"})
        client.post("/signup", data={"name": "Al"})
        assert client.post("/authors", data={"name": "Al"}).status_code == 500
        assert sorted(search.INDEX) == ["Al", "Bo"]
    finally:
        sa.event.remove(search.Session, "after_flush", search.remember_new)
        sa.event.remove(search.Session, "after_commit", search.index_new)
        sa.event.remove(search.Session, "after_rollback", search.forget_new)
        drop_blog(module, app)


def run_unittest(module: types.ModuleType) -> tuple[unittest.TestResult, t.Any]:
    """Run the example's test case; the result, and the case to clean up after."""
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    (case,) = [case for group in suite for case in t.cast(t.Any, group)]
    result = unittest.TestResult()
    suite.run(result)
    return result, case


def test_migrate_unittest_teardown(
    examples: Examples, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's unittest teardown passes on every backend; without its
    db.session.close(), drop_all() raises the page's error instead of hanging.
    """
    monkeypatch.setenv("TEST_DATABASE_URL", database_url)
    db = examples.load("migrate_after").db
    result, case = run_unittest(examples.load("migrate_unittest"))
    with case.app.app_context():
        for engine in db.engines.values():
            engine.dispose()
    assert (result.testsRun, result.errors, result.failures) == (1, [], [])
    text = (examples.directory / "migrate_unittest.py").read_text()
    close = "        db.session.close()  # was db.session.remove(); or commit\n"
    assert close in text
    bare = examples.directory / "migrate_unittest_bare.py"
    bare.write_text(text.replace(close, ""))
    result, case = run_unittest(examples.load("migrate_unittest_bare"))
    # The failed tearDown left its app context pushed, with the transaction.
    db.session.close()
    db.drop_all()
    for engine in db.engines.values():
        engine.dispose()
    case.app_context.pop()
    ((_, error),) = result.errors
    assert "RuntimeError: db.drop_all() was called while db.session" in error


# -- snippets show their imports -----------------------------------------------


def included_snippets(page: str) -> list[tuple[str, str]]:
    """The file and the code of each ``literalinclude`` of a page, cut the way
    Sphinx cuts it with ``start-after``, ``end-before`` and ``dedent``.
    """
    text = (DOCS / page).read_text()
    pattern = r"^ *\.\. literalinclude:: (\S+)\n((?: +:[\w-]+:.*\n)*)"
    snippets = []
    for match in re.finditer(pattern, text, re.M):
        options = dict(re.findall(r":([\w-]+):(.*)", match.group(2)))
        lines = (DOCS / match.group(1)).read_text().splitlines()
        if "start-after" in options:
            marker = options["start-after"].strip()
            start = next(i for i, line in enumerate(lines) if marker in line)
            lines = lines[start + 1 :]
        if "end-before" in options:
            marker = options["end-before"].strip()
            end = next(i for i, line in enumerate(lines) if marker in line)
            lines = lines[:end]
        snippets.append((match.group(1), textwrap.dedent("\n".join(lines))))
    return snippets


def bound_and_loaded(code: str) -> tuple[set[str], set[str]]:
    """The names a piece of code binds, and the names it reads."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, loaded


@pytest.mark.parametrize("page", ["quickstart.rst", "migrating.rst"])
def test_snippets_show_their_imports(page: str) -> None:
    """Every name an included snippet reads from an import is imported in that
    snippet or in an earlier one of the same file on the page.
    """
    shown: dict[str, set[str]] = {}
    snippets = included_snippets(page)
    assert snippets
    for path, code in snippets:
        module = (DOCS / path).read_text()
        imported = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(ast.parse(module))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        bound, loaded = bound_and_loaded(code)
        earlier = shown.setdefault(path, set())
        missing = (loaded - bound - earlier - set(dir(builtins))) & imported
        assert not missing, f"{page}: a snippet of {path} does not import {missing}"
        earlier |= bound


# -- read replicas -------------------------------------------------------------


@pytest.fixture
def replicas_app(
    examples: Examples, tmp_path: pathlib.Path
) -> t.Iterator[tuple[types.ModuleType, flask.Flask]]:
    """The replicas page's app on two SQLite files: the "replica" never
    receives the primary's writes, so what it answers shows where reads go."""
    module = examples.load("replicas")
    primary = f"sqlite:///{tmp_path}/primary.db"
    replica = f"sqlite:///{tmp_path}/replica.db"
    engine = sa.create_engine(replica)
    module.Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(module.Article),
            [{"title": "only on the replica"}, {"title": "stale"}],
        )
    engine.dispose()
    app = module.create_app(
        {
            "SESSION_ORM_DATABASE_URL": primary,
            "SESSION_ORM_REPLICAS": {"default": [replica]},
        }
    )
    with tables(app, module.db, module.Base):
        yield module, app
        with app.app_context():
            for engine in module.db.replica_engines["default"]:
                engine.dispose()


def test_replicas_config() -> None:
    """The page's configuration is accepted: two replicas, the second with its
    own pool size."""
    namespace: dict[str, t.Any] = {}
    text = (EXAMPLES / "replicas.py").read_text()
    match = re.search(r"^ *# \[config\]\n(.*?)^ *# \[end config\]$", text, re.M | re.S)
    assert match is not None
    code = textwrap.dedent(match.group(1))
    app = flask.Flask("docs_replicas")
    namespace["app"] = app
    exec(compile(code, "replicas.py[config]", "exec"), namespace)
    db = SessionORM(app)
    with app.app_context():
        first, second = db.replica_engines["default"]
        assert second.pool.size() == 20  # type: ignore[attr-defined]
        assert first.url.host == "replica1.db"


def test_replicas_routing(replicas_app: tuple[types.ModuleType, flask.Flask]) -> None:
    """GET reads the replica; the POST writes to the primary and its redirect
    reads it back there; another client still reads the replica; marked views
    and the blueprint read where the page says."""
    _module, app = replicas_app
    client = app.test_client()
    assert client.get("/articles").json == ["only on the replica", "stale"]
    response = client.post("/articles", data={"title": "new"}, follow_redirects=True)
    assert response.text == "new"
    assert client.get("/articles").json == ["new"]
    other = app.test_client()
    assert other.get("/articles").json == ["only on the replica", "stale"]
    assert other.get("/articles/1/edit").text == "new"
    assert other.post("/articles/search", data={"q": "only"}).json == [
        "only on the replica"
    ]
    assert other.get("/admin/articles").json == {"total": 2}
    result = app.test_cli_runner().invoke(args=["count-articles"])
    assert result.output == "2 articles\n"
