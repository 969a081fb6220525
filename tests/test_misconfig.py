"""Every bad input gets a clear error that names what is wrong, and no password
ever shows: not in the message, not in a logged traceback, not on a command line.

Each case of the table below is one misconfiguration or misuse, done through the
public API as an application would do it. Every URL carries a password so that a
leak anywhere shows up. Nothing here needs a database server: engines are created
without connecting, and the one test that connects points at a closed port.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import traceback
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm

from flask_session_orm import SessionORM

PASSWORD = "Rel-Pw-4471x"
#: Nothing listens on port 1, and none of these URLs is ever connected to but one.
PG = f"postgresql+psycopg://user:{PASSWORD}@127.0.0.1:1/db"
MYSQL = f"mysql+pymysql://user:{PASSWORD}@127.0.0.1:1/db"


class MisBase(orm.DeclarativeBase):
    pass


class MisItem(MisBase):
    __tablename__ = "rel_mis_item"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(20), default="")


class MisArchived(MisBase):
    __tablename__ = "rel_mis_archived"
    __bind_key__ = "archive"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class CommandFailed(Exception):
    """A CLI command exited non-zero; the message is what it printed."""


def make_app(tmp: str, **config: t.Any) -> flask.Flask:
    app = flask.Flask(__name__, instance_path=os.path.join(tmp, "instance"))
    app.config.update(TESTING=True, **config)
    return app


def init(tmp: str, **config: t.Any) -> SessionORM:
    """Create an app with ``config`` and register a SessionORM on it."""
    return SessionORM(make_app(tmp, **config))


def ready(tmp: str, **config: t.Any) -> tuple[flask.Flask, SessionORM]:
    """An app on PostgreSQL (never connected to) with the extension registered."""
    app = make_app(tmp, SESSION_ORM_DATABASE_URL=PG, **config)
    return app, SessionORM(app)


def cli(app: flask.Flask, *args: str) -> str:
    """Run a CLI command of ``app``; raise :class:`CommandFailed` if it fails."""
    result = app.test_cli_runner().invoke(args=list(args))
    if result.exit_code != 0:
        raise CommandFailed(result.output)
    return result.output


# -- the actions -------------------------------------------------------------------


def init_twice(tmp: str) -> None:
    app, db = ready(tmp)
    db.init_app(app)


def session_outside_context(tmp: str) -> None:
    _, db = ready(tmp)
    db.session.execute(sa.text("SELECT 1"))


def engine_of_unregistered_app(tmp: str) -> None:
    _, db = ready(tmp)
    other = make_app(tmp, SESSION_ORM_DATABASE_URL=PG)
    with other.app_context():
        db.engine.connect()


def unknown_engine_name(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.get_engine("reporting")


def bind_key_names_unknown_engine(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.session.get(MisArchived, 1)


def get_bind_of_a_string(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.get_bind(PG)


def object_session_of_unmapped(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.object_session(sa.make_url(PG))


def has_changes_unknown_attribute(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.has_changes(MisItem(name="x"), attrs=["nmae"])


def mark_for_rollback_outside_request(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.mark_for_rollback()


def nested_isolation(tmp: str) -> None:
    app = make_app(tmp, SESSION_ORM_DATABASE_URL="sqlite://")
    db = SessionORM(app)
    with db.isolation(app), db.isolation(app):
        pass


def create_all_of_a_string(tmp: str) -> None:
    app, db = ready(tmp)
    with app.app_context():
        db.create_all("MisBase")


def db_shell_unknown_bind(tmp: str) -> None:
    app, _ = ready(tmp, SESSION_ORM_ENGINES={"replica": MYSQL})
    cli(app, "db-shell", "--bind", "reporting")


def db_shell_client_args_with_statement(tmp: str) -> None:
    app, _ = ready(tmp)
    cli(app, "db-shell", "-c", "SELECT 1", "--", "--quiet")


def db_shell_json_without_statement(tmp: str) -> None:
    app, _ = ready(tmp)
    cli(app, "db-shell", "--json")


def db_shell_unreachable_database(tmp: str) -> None:
    app, _ = ready(tmp)
    cli(app, "db-shell", "-c", "SELECT 1")


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    action: t.Callable[[str], object]
    error: type[BaseException]
    #: A regular expression the message must match: it names the key or argument.
    match: str


def config_case(
    id: str, error: type[BaseException], match: str, **config: t.Any
) -> Case:
    return Case(id, lambda tmp: init(tmp, **config), error, match)


def constructor_case(
    id: str, error: type[BaseException], match: str, **arguments: t.Any
) -> Case:
    def action(tmp: str) -> None:
        SessionORM(make_app(tmp, SESSION_ORM_DATABASE_URL=PG), **arguments)

    return Case(id, action, error, match)


CASES = [
    # -- URLs, dialects and drivers
    config_case(
        "no-database-but-flask-sqlalchemy-key",
        RuntimeError,
        r"'SQLALCHEMY_DATABASE_URI'.*'SESSION_ORM_DATABASE_URL'",
        SQLALCHEMY_DATABASE_URI=PG,
    ),
    config_case(
        "unparseable-url",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL' is not a valid database URL",
        SESSION_ORM_DATABASE_URL=f"postgresql//user:{PASSWORD}@127.0.0.1/db",
    ),
    config_case(
        "url-with-bad-port",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL' is not a valid database URL",
        SESSION_ORM_DATABASE_URL=f"postgresql://user:{PASSWORD}@127.0.0.1:pg/db",
    ),
    config_case(
        "unknown-dialect",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL'.*'default'.*postgres95",
        SESSION_ORM_DATABASE_URL=f"postgres95://user:{PASSWORD}@127.0.0.1/db",
    ),
    config_case(
        "unknown-driver",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL'.*postgresql\+psycopg4",
        SESSION_ORM_DATABASE_URL=f"postgresql+psycopg4://user:{PASSWORD}@h/db",
    ),
    config_case(
        "driver-not-installed",
        ValueError,
        r"\"SESSION_ORM_ENGINES\['legacy'\]\".*'legacy'.*MySQLdb",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINES={"legacy": f"mysql+mysqldb://user:{PASSWORD}@h/db"},
    ),
    config_case(
        "unknown-engine-in-a-bind",
        ValueError,
        r"'SESSION_ORM_BINDS' binds 'rel_mis_item' to the unknown engine 'reporting'"
        r".*default, replica",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINES={"replica": MYSQL},
        SESSION_ORM_BINDS={"rel_mis_item": "reporting"},
    ),
    config_case(
        "url-and-default-engine-both-set",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL'.*'SESSION_ORM_ENGINES\[\"default\"\]'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINES={"default": MYSQL},
    ),
    # -- a wrong type for every key
    config_case(
        "database-url-not-a-string",
        TypeError,
        r"'SESSION_ORM_DATABASE_URL' must be a URL string.*5432 \(type int\)",
        SESSION_ORM_DATABASE_URL=5432,
    ),
    config_case(
        "engines-a-string",
        TypeError,
        r"'SESSION_ORM_ENGINES' must be a dict.*\(type str\)",
        SESSION_ORM_ENGINES=PG,
    ),
    config_case(
        "engine-name-not-a-string",
        TypeError,
        r"'SESSION_ORM_ENGINES' must have non-empty string engine names, got 1",
        SESSION_ORM_ENGINES={1: PG},
    ),
    config_case(
        "engine-dict-without-url",
        ValueError,
        r"\"SESSION_ORM_ENGINES\['replica'\]\" is a dict without a 'url' entry",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINES={"replica": {"pool_size": 2, "password": PASSWORD}},
    ),
    config_case(
        "engine-url-not-a-string",
        TypeError,
        r"\"SESSION_ORM_ENGINES\['replica'\]\" must be a URL string",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINES={"replica": {"url": ("127.0.0.1", 5432)}},
    ),
    config_case(
        "engine-options-not-a-dict",
        TypeError,
        r"'SESSION_ORM_ENGINE_OPTIONS' must be a dict",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINE_OPTIONS=[("pool_size", 5)],
    ),
    config_case(
        "engine-option-misspelt",
        ValueError,
        r"'SESSION_ORM_DATABASE_URL'.*'default'.*'pool_sise'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINE_OPTIONS={"pool_sise": 5},
    ),
    config_case(
        "binds-not-a-dict",
        TypeError,
        r"'SESSION_ORM_BINDS' must be a dict",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_BINDS=["rel_mis_item"],
    ),
    config_case(
        "bind-value-a-url",
        TypeError,
        r"'SESSION_ORM_BINDS' maps 'rel_mis_item' to .*the value must be an engine"
        r" name",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_BINDS={"rel_mis_item": sa.make_url(MYSQL)},
    ),
    config_case(
        "bind-key-malformed",
        ValueError,
        r"'SESSION_ORM_BINDS' has the key 'tests.test_misconfig:'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_BINDS={"tests.test_misconfig:": "default"},
    ),
    config_case(
        "expire-on-commit-not-a-bool",
        TypeError,
        r"'SESSION_ORM_EXPIRE_ON_COMMIT' must be True or False, got 'no'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_EXPIRE_ON_COMMIT="no",
    ),
    config_case(
        "autoflush-not-a-bool",
        TypeError,
        r"'SESSION_ORM_AUTOFLUSH' must be True or False, got 0",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_AUTOFLUSH=0,
    ),
    config_case(
        "session-options-not-a-dict",
        TypeError,
        r"'SESSION_ORM_SESSION_OPTIONS' must be a dict",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_SESSION_OPTIONS="autoflush=False",
    ),
    config_case(
        "session-option-misspelt",
        TypeError,
        r"'SESSION_ORM_SESSION_OPTIONS' has 'expire_on_comit'.*'expire_on_commit'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_SESSION_OPTIONS={"expire_on_comit": False},
    ),
    config_case(
        "session-option-reserved",
        ValueError,
        r"'SESSION_ORM_SESSION_OPTIONS' sets 'binds'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_SESSION_OPTIONS={"binds": {MisItem: sa.make_url(MYSQL)}},
    ),
    config_case(
        "commit-on-success-not-a-bool",
        TypeError,
        r"'SESSION_ORM_COMMIT_ON_SUCCESS' must be True or False, got 'false'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_COMMIT_ON_SUCCESS="false",
    ),
    config_case(
        "echo-not-a-bool",
        TypeError,
        r"'SESSION_ORM_ECHO' must be True or False, got None",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ECHO=None,
    ),
    config_case(
        "ping-idle-after-not-a-number",
        TypeError,
        r"'SESSION_ORM_PING_IDLE_AFTER' must be a number of seconds or None, got"
        r" True",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_PING_IDLE_AFTER=True,
    ),
    config_case(
        "ping-idle-after-negative",
        ValueError,
        r"'SESSION_ORM_PING_IDLE_AFTER' must be a finite number of seconds, 0 or"
        r" more, got -2",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_PING_IDLE_AFTER=-2,
    ),
    config_case(
        "unknown-key",
        KeyError,
        r"'SESSION_ORM_ENGINE'.*Did you mean 'SESSION_ORM_ENGINES'",
        SESSION_ORM_DATABASE_URL=PG,
        SESSION_ORM_ENGINE={"replica": MYSQL},
    ),
    constructor_case(
        "constructor-engine-options-not-a-dict",
        TypeError,
        r"argument 'engine_options' must be a dict",
        engine_options=PG,
    ),
    constructor_case(
        "constructor-session-option-reserved",
        ValueError,
        r"argument 'session_options' sets 'bind'",
        session_options={"bind": sa.create_engine(MYSQL)},
    ),
    constructor_case(
        "constructor-session-option-misspelt",
        TypeError,
        r"argument 'session_options' has 'autofush'.*'autoflush'",
        session_options={"autofush": False},
    ),
    # -- misuse of the extension
    Case("init-app-twice", init_twice, RuntimeError, r"'init_app' was already called"),
    Case(
        "session-outside-a-context",
        session_outside_context,
        RuntimeError,
        r"outside of application context.*'with app.app_context\(\):'",
    ),
    Case(
        "app-not-registered",
        engine_of_unregistered_app,
        RuntimeError,
        r"not registered with this SessionORM.*'db.init_app\(app\)'",
    ),
    Case(
        "unknown-engine-name",
        unknown_engine_name,
        KeyError,
        r"No engine named 'reporting'. The engines that exist are: default",
    ),
    Case(
        "bind-key-names-unknown-engine",
        bind_key_names_unknown_engine,
        ValueError,
        r"'tests.test_misconfig:MisArchived' has __bind_key__ = 'archive'.*default",
    ),
    Case(
        "get-bind-of-a-string",
        get_bind_of_a_string,
        TypeError,
        r"get_bind\(\) takes a model instance.*got 'str'",
    ),
    Case(
        "object-session-of-unmapped",
        object_session_of_unmapped,
        TypeError,
        r"mapped class, got 'URL'",
    ),
    Case(
        "has-changes-unknown-attribute",
        has_changes_unknown_attribute,
        ValueError,
        r"Argument 'attrs' names nmae",
    ),
    Case(
        "mark-for-rollback-outside-request",
        mark_for_rollback_outside_request,
        RuntimeError,
        r"'mark_for_rollback\(\)' works inside a request only",
    ),
    Case(
        "isolation-nested",
        nested_isolation,
        RuntimeError,
        r"db.isolation\(\) is already active",
    ),
    Case(
        "create-all-of-a-string",
        create_all_of_a_string,
        TypeError,
        r"create_all\(\) and drop_all\(\) take a declarative base or a MetaData",
    ),
    # -- the CLI
    Case(
        "db-shell-unknown-bind",
        db_shell_unknown_bind,
        CommandFailed,
        r"'--bind'.*No engine named 'reporting'. The engines that exist are:"
        r" default, replica",
    ),
    Case(
        "db-shell-statement-with-client-args",
        db_shell_client_args_with_statement,
        CommandFailed,
        r"'-c SQL'.*takes no client arguments \(got '--quiet'\)",
    ),
    Case(
        "db-shell-json-without-statement",
        db_shell_json_without_statement,
        CommandFailed,
        r"'--json' works with '-c SQL' only",
    ),
    Case(
        "db-shell-unreachable-database",
        db_shell_unreachable_database,
        CommandFailed,
        r"127\.0\.0\.1.*(refused|failed)",
    ),
]


def _formatted(error: BaseException) -> str:
    """The exception as a log or a crash report would show it, causes included."""
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_error(
    case: Case, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each misconfiguration or misuse raises an error naming the key or argument,
    and the password shows neither in it, its traceback, nor the logs."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(case.error, match=case.match) as info:
        case.action(str(tmp_path))
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in _formatted(info.value)
    assert PASSWORD not in caplog.text


def test_at_least_twenty_cases() -> None:
    """The table covers at least twenty distinct misconfigurations and misuses."""
    assert len({case.id for case in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("url", [PG, MYSQL], ids=["postgresql", "mysql"])
def test_unreachable_database_logs_no_password(
    url: str, tmp_path: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that cannot reach its database gets a 500, and what is logged
    names the server but not the password."""
    caplog.set_level(logging.DEBUG)
    app = make_app(str(tmp_path), SESSION_ORM_DATABASE_URL=url)
    app.config["TESTING"] = False
    db = SessionORM(app)

    @app.get("/")
    def index() -> str:
        db.session.execute(sa.text("SELECT 1"))
        return "unreachable"

    response = app.test_client().get("/")
    assert response.status_code == 500
    assert "127.0.0.1" in caplog.text
    assert "Exception on / [GET]" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD not in response.get_data(as_text=True)
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


@pytest.mark.parametrize(
    ("url", "program", "variable"),
    [(PG, "psql", "PGPASSWORD"), (MYSQL, "mariadb", "MYSQL_PWD")],
    ids=["postgresql", "mysql"],
)
def test_db_shell_keeps_the_password_off_the_command_line(
    url: str,
    program: str,
    variable: str,
    tmp_path: t.Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``flask db-shell`` starts the client with the password in its environment
    only: the command line the OS shows has none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "record"
    # A stand-in for the client program that writes down what it was given.
    script = bin_dir / program
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$0" "$@" > "{record}.argv"\n'
        f'printf "%s" "${variable}" > "{record}.env"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    app = make_app(str(tmp_path), SESSION_ORM_DATABASE_URL=url)
    SessionORM(app)
    output = cli(app, "db-shell", "--", "--version")
    argv = (tmp_path / "record.argv").read_text()
    assert "--version" in argv
    assert PASSWORD not in argv
    assert PASSWORD not in output
    assert (tmp_path / "record.env").read_text() == PASSWORD
