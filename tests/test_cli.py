"""``flask db-shell`` and the ``flask shell`` context.

Client programs are checked two ways: stand-ins placed first on PATH record the
exact arguments and environment they are started with (no server needed), and the
real psql, mariadb and sqlite3 run a query against each configured backend.
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import time
import typing as t

import flask
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as orm
from click.testing import Result

from flask_session_orm import SessionORM
from flask_session_orm._cli import format_table

from .conftest import Item
from .conftest import count_items

SUPPORT = pathlib.Path(__file__).parent / "cli_support"
PASSWORD = "s3cr3t-Pw"


class CliBase(orm.DeclarativeBase):
    pass


class CliElsewhere(CliBase):
    """Bound to an engine the test apps do not have."""

    __tablename__ = "cli_elsewhere"
    __bind_key__ = "elsewhere"

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)


class StandIns:
    """Stand-in client programs in a directory that is the whole PATH."""

    def __init__(self, directory: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
        self.directory = directory
        self.record = directory / "record.jsonl"
        directory.mkdir()
        monkeypatch.setenv("PATH", str(directory))
        monkeypatch.setenv("CLI_RECORD", str(self.record))

    def add(self, *programs: str) -> None:
        for program in programs:
            path = self.directory / program
            path.write_text(
                f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(SUPPORT)!r})"
                "\nimport recorder\nrecorder.main()\n"
            )
            path.chmod(0o755)

    def calls(self) -> list[dict[str, t.Any]]:
        lines = self.record.read_text().splitlines()
        return [json.loads(line) for line in lines]

    def call(self) -> dict[str, t.Any]:
        """The only recorded call."""
        calls = self.calls()
        assert len(calls) == 1, calls
        return calls[0]


@pytest.fixture
def stand_ins(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> StandIns:
    return StandIns(tmp_path / "bin", monkeypatch)


def make_app(tmp_path: pathlib.Path, url: str, **engines: str) -> flask.Flask:
    """An app for ``url`` (never connected to: the engine is created lazily)."""
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SESSION_ORM_DATABASE_URL=url, SESSION_ORM_ENGINES=engines)
    SessionORM(app)
    return app


def invoke(app: flask.Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["db-shell", *args])


def assert_no_password(result: Result, call: dict[str, t.Any] | None = None) -> None:
    assert PASSWORD not in result.output
    if call is not None:
        assert PASSWORD not in json.dumps(call["argv"])
        assert PASSWORD not in json.dumps(call["cmdline"])


# -- the client's command line, recorded by stand-ins ---------------------------

PG = f"postgresql+psycopg://alice:{PASSWORD}@db.example:6543/shop"
MY = f"mysql+pymysql://bob:{PASSWORD}@db.example:3307/shop"


@pytest.mark.parametrize(
    ("url", "args", "argv", "env"),
    [
        pytest.param(
            PG,
            [],
            ["psql", "-h", "db.example", "-p", "6543", "-U", "alice", "shop"],
            {"PGPASSWORD": PASSWORD},
            id="psql",
        ),
        pytest.param(
            PG,
            ["--", "-X", "-c", "SELECT 1"],
            [
                "psql",
                "-h",
                "db.example",
                "-p",
                "6543",
                "-U",
                "alice",
                "-X",
                "-c",
                "SELECT 1",
                "shop",
            ],
            {"PGPASSWORD": PASSWORD},
            id="psql-extra-args-before-database",
        ),
        pytest.param(
            "postgresql+psycopg://alice@/shop?host=/var/run/postgresql",
            [],
            ["psql", "-h", "/var/run/postgresql", "-U", "alice", "shop"],
            {},
            id="psql-socket",
        ),
        pytest.param(
            "postgresql+psycopg://alice@/shop?host=db1:5432&host=db2:5433",
            [],
            ["psql", "-h", "db1,db2", "-p", "5432,5433", "-U", "alice", "shop"],
            {},
            id="psql-several-hosts",
        ),
        pytest.param(
            f"{PG}?sslmode=verify-full&sslrootcert=/tls/ca.pem&sslcert=/tls/c.pem"
            "&sslkey=/tls/k.pem&application_name=shop-admin",
            [],
            ["psql", "-h", "db.example", "-p", "6543", "-U", "alice", "shop"],
            {
                "PGPASSWORD": PASSWORD,
                "PGSSLMODE": "verify-full",
                "PGSSLROOTCERT": "/tls/ca.pem",
                "PGSSLCERT": "/tls/c.pem",
                "PGSSLKEY": "/tls/k.pem",
                "PGAPPNAME": "shop-admin",
            },
            id="psql-tls",
        ),
        pytest.param(
            f"{MY}?charset=utf8mb4",
            [],
            [
                "mariadb",
                "--user=bob",
                "--host=db.example",
                "--port=3307",
                "--default-character-set=utf8mb4",
                "--protocol=TCP",
                "shop",
            ],
            {"MYSQL_PWD": PASSWORD},
            id="mariadb",
        ),
        pytest.param(
            MY,
            ["--", "--batch", "-e", "SELECT 1", "--defaults-file=/etc/my.cnf"],
            [
                "mariadb",
                "--defaults-file=/etc/my.cnf",
                "--user=bob",
                "--host=db.example",
                "--port=3307",
                "--protocol=TCP",
                "--batch",
                "-e",
                "SELECT 1",
                "shop",
            ],
            {"MYSQL_PWD": PASSWORD},
            id="mariadb-extra-args",
        ),
        pytest.param(
            f"mysql+pymysql://bob:{PASSWORD}@localhost/shop"
            "?unix_socket=/run/mysqld/mysqld.sock",
            [],
            [
                "mariadb",
                "--user=bob",
                "--host=localhost",
                "--socket=/run/mysqld/mysqld.sock",
                "shop",
            ],
            {"MYSQL_PWD": PASSWORD},
            id="mariadb-socket",
        ),
        pytest.param(
            f"{MY}?ssl_ca=/tls/ca.pem&ssl_cert=/tls/c.pem&ssl_key=/tls/k.pem"
            "&ssl_check_hostname=true",
            [],
            [
                "mariadb",
                "--user=bob",
                "--host=db.example",
                "--port=3307",
                "--protocol=TCP",
                "--ssl-ca=/tls/ca.pem",
                "--ssl-cert=/tls/c.pem",
                "--ssl-key=/tls/k.pem",
                "--ssl",
                "--ssl-verify-server-cert",
                "shop",
            ],
            {"MYSQL_PWD": PASSWORD},
            id="mariadb-tls",
        ),
    ],
)
def test_client_argv_and_environment(
    tmp_path: pathlib.Path,
    stand_ins: StandIns,
    url: str,
    args: list[str],
    argv: list[str],
    env: dict[str, str],
) -> None:
    """The client gets host, port, user, database, socket and TLS settings from the
    URL, extra arguments where it needs them, and the password only in its
    environment.
    """
    stand_ins.add("psql", "mariadb", "mysql")
    result = invoke(make_app(tmp_path, url), *args)
    assert result.exit_code == 0, result.output
    call = stand_ins.call()
    assert call["argv"] == argv
    added = {
        name: value
        for name, value in call["env"].items()
        if (name.startswith("PG") or name == "MYSQL_PWD")
        and os.environ.get(name) != value
    }
    assert added == env
    assert_no_password(result, call)


@pytest.mark.parametrize(
    ("query", "tls"),
    [
        ("ssl_ca=/tls/ca.pem", ["--ssl-ca=/tls/ca.pem", "--ssl-mode=VERIFY_IDENTITY"]),
        (
            "ssl_ca=/tls/ca.pem&ssl_check_hostname=false",
            ["--ssl-ca=/tls/ca.pem", "--ssl-mode=VERIFY_CA"],
        ),
        ("ssl_cert=/tls/c.pem", ["--ssl-cert=/tls/c.pem", "--ssl-mode=REQUIRED"]),
        ("charset=utf8mb4", ["--default-character-set=utf8mb4"]),
    ],
)
def test_mysql_client_when_mariadb_is_missing(
    tmp_path: pathlib.Path,
    stand_ins: StandIns,
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    tls: list[str],
) -> None:
    """Without 'mariadb' the 'mysql' client is used; when it is MySQL's own client,
    with MySQL's spelling of the TLS mode the driver would use.
    """
    stand_ins.add("mysql")
    monkeypatch.setenv("CLI_VERSION", "mysql  Ver 8.0.36 for Linux on x86_64")
    result = invoke(make_app(tmp_path, f"{MY}?{query}"))
    assert result.exit_code == 0, result.output
    argv = stand_ins.call()["argv"]
    assert argv[:4] == ["mysql", "--user=bob", "--host=db.example", "--port=3307"]
    assert sorted(argv[4:]) == sorted(["--protocol=TCP", *tls, "shop"])
    assert argv[-1] == "shop"


def test_client_uses_connect_args(tmp_path: pathlib.Path, stand_ins: StandIns) -> None:
    """Settings given as the engine's 'connect_args' reach the client too."""
    stand_ins.add("psql")
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SESSION_ORM_ENGINES"] = {
        "default": {
            "url": "postgresql+psycopg://alice@db.example/shop",
            "connect_args": {"sslmode": "require", "password": PASSWORD},
        }
    }
    SessionORM(app)
    result = invoke(app)
    assert result.exit_code == 0, result.output
    call = stand_ins.call()
    assert call["argv"] == ["psql", "-h", "db.example", "-U", "alice", "shop"]
    assert call["env"]["PGSSLMODE"] == "require"
    assert call["env"]["PGPASSWORD"] == PASSWORD
    assert_no_password(result, call)


@pytest.mark.parametrize("extra", [[], ["-header", "SELECT 1"]])
def test_sqlite_client_opens_the_resolved_file(
    tmp_path: pathlib.Path, stand_ins: StandIns, extra: list[str]
) -> None:
    """sqlite3 opens the file the engine uses (a relative path lives in the
    instance folder), with extra arguments after the file name.
    """
    stand_ins.add("sqlite3")
    args = ["--", *extra] if extra else []
    result = invoke(make_app(tmp_path, "sqlite:///app.db"), *args)
    assert result.exit_code == 0, result.output
    database = str(tmp_path / "instance" / "app.db")
    assert stand_ins.call()["argv"] == ["sqlite3", database, *extra]


def test_bind_picks_the_engine(tmp_path: pathlib.Path, stand_ins: StandIns) -> None:
    """'--bind NAME' opens the client of that engine."""
    stand_ins.add("psql", "sqlite3")
    app = make_app(tmp_path, "sqlite:///app.db", reports=PG)
    result = invoke(app, "--bind", "reports")
    assert result.exit_code == 0, result.output
    assert stand_ins.call()["argv"][0] == "psql"
    assert stand_ins.call()["argv"][-1] == "shop"


@pytest.mark.parametrize("status", [0, 3])
def test_exit_status_is_the_clients(
    tmp_path: pathlib.Path,
    stand_ins: StandIns,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> None:
    """The command exits with the client's exit status, and puts back the
    process's Ctrl-C handler it replaced while the client ran.
    """
    stand_ins.add("sqlite3")
    monkeypatch.setenv("CLI_EXIT", str(status))
    handler = signal.getsignal(signal.SIGINT)
    result = invoke(make_app(tmp_path, "sqlite:///app.db"))
    assert result.exit_code == status
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize(
    ("url", "program", "package"),
    [
        (PG, "'psql'", "apt install postgresql-client"),
        (MY, "'mariadb' or 'mysql'", "apt install mariadb-client"),
        ("sqlite:///app.db", "'sqlite3'", "apt install sqlite3"),
    ],
)
def test_missing_client_program(
    tmp_path: pathlib.Path,
    stand_ins: StandIns,
    url: str,
    program: str,
    package: str,
) -> None:
    """A missing client is named, with how to install it and a hint about '-c'."""
    result = invoke(make_app(tmp_path, url))
    assert result.exit_code == 1
    assert f"client program {program} was not found on PATH" in result.output
    assert package in result.output
    assert 'flask db-shell -c "SQL"' in result.output
    assert_no_password(result)


def test_in_memory_sqlite_has_no_client(
    tmp_path: pathlib.Path, stand_ins: StandIns
) -> None:
    """An in-memory SQLite engine is refused with a reason: no program can open it."""
    stand_ins.add("sqlite3")
    result = invoke(make_app(tmp_path, "sqlite://"))
    assert result.exit_code == 1
    assert "in-memory SQLite database" in result.output
    assert not stand_ins.record.exists()


def test_backend_without_a_client(tmp_path: pathlib.Path, stand_ins: StandIns) -> None:
    """A backend with no known client says so and points to '-c'."""
    # A real dialect registered under a name db-shell does not know.
    sa.dialects.registry.register(
        "clitestdb", "sqlalchemy.dialects.sqlite.pysqlite", "SQLiteDialect_pysqlite"
    )
    result = invoke(make_app(tmp_path, "clitestdb:////tmp/x.db"))
    assert result.exit_code == 1
    assert "knows no client program for the 'clitestdb' engine" in result.output
    assert 'flask db-shell -c "SQL"' in result.output


def test_unknown_bind_lists_the_engines(tmp_path: pathlib.Path) -> None:
    """An unknown '--bind' is a usage error that lists the engines that exist."""
    app = make_app(tmp_path, "sqlite:///app.db", reports="sqlite:///r.db")
    result = invoke(app, "--bind", "nope", "-c", "SELECT 1")
    assert result.exit_code == 2
    assert "No engine named 'nope'" in result.output
    assert "The engines that exist are: default, reports." in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "'--json' works with '-c SQL' only."),
        (["-c", "SELECT 1", "--", "-X"], "takes no client arguments"),
        (["-c", "  "], "The statement is empty."),
    ],
)
def test_usage_errors(tmp_path: pathlib.Path, args: list[str], message: str) -> None:
    """Options that do not go together are usage errors, not silently ignored."""
    result = invoke(make_app(tmp_path, "sqlite:///app.db"), *args)
    assert result.exit_code == 2
    assert message in result.output


# -- flask db-shell -c, through the engine, on every backend ---------------------


@pytest.fixture
def items(app: flask.Flask, db: SessionORM) -> None:
    with app.app_context():
        db.session.add_all([Item(id=1, name="alpha"), Item(id=2, name="beta")])
        db.session.commit()


def test_sql_prints_a_table(app: flask.Flask, items: None) -> None:
    """'-c' prints the rows as an aligned table with a header and the row count."""
    result = invoke(app, "-c", "SELECT id, name FROM orm_test_item ORDER BY id")
    assert result.exit_code == 0, result.output
    assert result.output == (
        " id | name\n----+-------\n  1 | alpha\n  2 | beta\n(2 rows)\n"
    )


def test_sql_prints_json(app: flask.Flask, items: None) -> None:
    """'-c' with '--json' prints the rows as a JSON array of objects."""
    result = invoke(
        app, "--json", "-c", "SELECT id, name FROM orm_test_item ORDER BY id"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"id": 1, "name": "alpha"},
        {"id": 2, "name": "beta"},
    ]


def test_sql_is_sent_as_written(app: flask.Flask, db: SessionORM) -> None:
    """The statement reaches the database as written: no bind parameters."""
    result = invoke(app, "--json", "-c", "SELECT '100%' AS p, ':name' AS q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"p": "100%", "q": ":name"}]


@pytest.mark.parametrize("as_json", [False, True])
def test_sql_write_is_committed(
    app: flask.Flask, db: SessionORM, items: None, as_json: bool
) -> None:
    """A statement without rows prints the affected row count and is committed."""
    args = ["--json"] if as_json else []
    result = invoke(app, *args, "-c", "DELETE FROM orm_test_item WHERE id > 0")
    assert result.exit_code == 0, result.output
    expected = '{"rowcount": 2}\n' if as_json else "2 rows affected\n"
    assert result.output == expected
    assert count_items(db, app) == 0


def test_sql_error_is_one_line(app: flask.Flask, db: SessionORM) -> None:
    """A failed statement prints one line without a traceback and exits 1."""
    result = invoke(app, "-c", "SELECT * FROM cli_no_such_table")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "cli_no_such_table" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/shop",
        f"mysql+pymysql://bob:{PASSWORD}@127.0.0.1:1/shop",
    ],
)
def test_sql_connection_error_hides_password(tmp_path: pathlib.Path, url: str) -> None:
    """A connection failure is one line that never shows the password."""
    result = invoke(make_app(tmp_path, url), "-c", "SELECT 1")
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1, result.output
    assert "OperationalError" in result.output
    assert_no_password(result)


def test_sql_stays_inside_isolation(
    app: flask.Flask, db: SessionORM, items: None
) -> None:
    """Under db.isolation() a '-c' write is rolled back with everything else."""
    with db.isolation(app):
        result = invoke(app, "-c", "DELETE FROM orm_test_item")
        assert result.exit_code == 0, result.output
        assert result.output == "2 rows affected\n"
    assert count_items(db, app) == 2


def test_table_format() -> None:
    """Numbers align right, text left, NULL and control characters are visible, and
    wide characters count double.
    """
    table = format_table(
        ["n", "text"], [(1, "a\tb"), (None, "日本"), (10, None), (2.5, b"\x01")]
    )
    assert table.splitlines() == [
        "  n   | text",
        "------+------",
        "    1 | a\\tb",
        " NULL | 日本",
        "   10 | NULL",
        "  2.5 | \\x01",
        "(4 rows)",
    ]
    assert format_table(["only"], []) == " only\n------\n(0 rows)"


# -- the real command line: flask in a subprocess --------------------------------


def run_flask(
    tmp_path: pathlib.Path, url: str, *args: str, **kwargs: t.Any
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CLI_TEST_DATABASE_URL": url,
        "CLI_TEST_INSTANCE": str(tmp_path / "instance"),
        **kwargs.pop("env", {}),
    }
    command = [sys.executable, "-m", "flask", "--app", str(SUPPORT / "cli_app.py")]
    # flask starts with Ctrl-C at its default, as from an interactive shell, even
    # when this test run was started in the background (which ignores SIGINT and
    # passes that on to every child).
    kwargs.setdefault("preexec_fn", _default_sigint)
    return subprocess.run(
        [*command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


REAL_CLIENT_ARGS = {
    "sqlite": ("sqlite3", ["SELECT name FROM orm_test_item ORDER BY name"]),
    "postgresql": (
        "psql",
        ["-X", "-A", "-t", "-c", "SELECT name FROM orm_test_item ORDER BY name"],
    ),
    "mysql": (
        "mariadb",
        ["--batch", "--skip-column-names", "-e", "SELECT name FROM orm_test_item"],
    ),
}


def test_real_client_runs_a_query(
    tmp_path: pathlib.Path, backend: str, database_url: str, items: None
) -> None:
    """'flask db-shell -- <the client's own one-command flag>' prints the rows."""
    program, args = REAL_CLIENT_ARGS[backend]
    if shutil.which(program) is None and not (
        program == "mariadb" and shutil.which("mysql")
    ):
        pytest.skip(f"the {program!r} client program is not installed")
    result = run_flask(tmp_path, database_url, "db-shell", "--", *args)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["alpha", "beta"]


def test_real_client_exit_status(tmp_path: pathlib.Path) -> None:
    """A failing real client's exit status becomes flask's."""
    if shutil.which("sqlite3") is None:
        pytest.skip("the 'sqlite3' client program is not installed")
    result = run_flask(
        tmp_path, "sqlite:///app.db", "db-shell", "--", "-bail", "SELECT * FROM nope"
    )
    assert result.returncode == 1
    assert "no such table: nope" in result.stderr


def test_ctrl_c_goes_to_the_client(tmp_path: pathlib.Path, stand_ins: StandIns) -> None:
    """Ctrl-C (SIGINT to the foreground process group) reaches the client, whose
    handlers are its own, and does not stop flask, which waits for the client and
    exits with its status.
    """
    stand_ins.add("sqlite3")
    result = run_flask(
        tmp_path,
        "sqlite:///app.db",
        "db-shell",
        env={"CLI_SEND_SIGINT": "5"},
        # Its own process group, so the signal reaches flask and not pytest.
        start_new_session=True,
    )
    assert result.returncode == 5, result.stderr
    assert "Aborted" not in result.stderr
    assert stand_ins.call()["sigint_ignored"] is False


def wait_for(pid: int, timeout: float) -> int | None:
    """The exit status of the child ``pid``, or None if it still runs at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def test_ctrl_c_in_a_terminal_cancels_the_query(
    tmp_path: pathlib.Path, database_url: str, backend: str
) -> None:
    """In a terminal, Ctrl-C during a query cancels the query in psql, and the
    session goes on until the user quits; flask exits 0 with it.
    """
    if backend != "postgresql" or shutil.which("psql") is None:
        pytest.skip("needs PostgreSQL and psql: psql cancels a query on Ctrl-C")
    pty = pytest.importorskip("pty")
    env = {
        **os.environ,
        "CLI_TEST_DATABASE_URL": database_url,
        "CLI_TEST_INSTANCE": str(tmp_path / "instance"),
    }
    command = [sys.executable, "-m", "flask", "--app", str(SUPPORT / "cli_app.py")]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes flask
        # No pager: with no terminal size psql would page even one row.
        os.execve(
            sys.executable, [*command, "db-shell", "--", "-X", "-P", "pager=off"], env
        )
    output = bytearray()

    def read_until(text: bytes) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    output.extend(os.read(fd, 4096))
                except OSError:
                    return False
                if text in output:
                    return True
        return False

    code = None
    try:
        assert read_until(b"=#"), output
        os.write(fd, b"SELECT pg_sleep(60);\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT
        assert read_until(b"canceling statement due to user request"), output
        os.write(fd, b"SELECT 41 + 1 AS answer;\n")
        assert read_until(b"42"), output
        os.write(fd, b"\\q\n")
        code = wait_for(pid, timeout=30)
    finally:
        os.close(fd)
        if code is None:
            # Still running: end the session pty.fork() started for it.
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert code == 0, output


def test_password_only_in_environment_of_real_process(
    tmp_path: pathlib.Path, stand_ins: StandIns
) -> None:
    """Started by the real flask command, the client's /proc cmdline has no
    password; its environment has it.
    """
    stand_ins.add("psql")
    result = run_flask(tmp_path, PG, "db-shell")
    assert result.returncode == 0, result.stderr
    call = stand_ins.call()
    assert call["env"]["PGPASSWORD"] == PASSWORD
    assert call["cmdline"] is None or call["cmdline"][2:] == call["argv"][1:]
    assert PASSWORD not in result.stdout + result.stderr
    assert PASSWORD not in json.dumps(call["cmdline"])


# -- flask shell -----------------------------------------------------------------


def test_shell_context(app: flask.Flask, db: SessionORM) -> None:
    """'flask shell' has db, sa and the models the app can route, by class name."""
    namespace = app.make_shell_context()
    assert namespace["db"] is db
    assert namespace["sa"] is sa
    assert namespace["Item"] is Item
    assert "CliElsewhere" not in namespace


def test_flask_shell_command(tmp_path: pathlib.Path) -> None:
    """The real 'flask shell' starts with db, sa and the app's models."""
    result = run_flask(
        tmp_path,
        "sqlite:///app.db",
        "shell",
        input="print(type(db).__name__, sa.__name__, CliGadget.__tablename__)\n",
    )
    assert result.returncode == 0, result.stderr
    assert "SessionORM sqlalchemy cli_gadget" in result.stdout
