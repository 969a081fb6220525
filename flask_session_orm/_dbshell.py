"""The command line that starts a database's own client program for an engine.

The settings are read from what the engine's dialect hands to the driver
(``create_connect_args``) plus the engine's ``connect_args``, so a URL, its query
string and the driver's own spelling of a setting (``db`` or ``database``,
``unix_socket``, ``ssl_ca``...) mean the same thing in the app and in the client.
The password is given to the client through its environment, never its arguments.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import threading
import typing as t

import click

from ._binds import DEFAULT
from ._config import is_sqlite_memory
from ._config import render_url

if t.TYPE_CHECKING:
    from ._state import AppState


@dataclasses.dataclass
class ClientCommand:
    """A client program to start: its arguments, and variables for its environment."""

    argv: list[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Target:
    """What the engine's dialect would pass to the driver's ``connect()``."""

    args: list[t.Any]
    params: dict[str, t.Any]
    driver: str


# libpq keywords (as psycopg and psycopg2 take them) that psql reads from its
# environment: that keeps secrets off the command line and lets arguments given
# after "--" override them. The variable is "PG" + the keyword without
# underscores, but for two older names.
# fmt: off
_LIBPQ_KEYWORDS = (
    "password", "passfile", "service", "hostaddr", "options", "application_name",
    "client_encoding", "connect_timeout", "target_session_attrs",
    "load_balance_hosts", "channel_binding", "require_auth", "requirepeer",
    "sslmode", "sslnegotiation", "sslrootcert", "sslcert", "sslkey", "sslcrl",
    "sslcrldir", "sslsni", "sslcertmode", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "gssencmode", "krbsrvname", "gsslib",
)
# fmt: on
_LIBPQ_VARIABLES = {
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}

# These drivers always connect over TCP unless given a socket, while the client
# would use the local socket for "localhost", where another account may apply.
_MYSQL_TCP_DRIVERS = frozenset({"pymysql", "mysqlconnector", "aiomysql", "asyncmy"})
# The client reads these only as its very first arguments.
# fmt: off
_MYSQL_FIRST_OPTIONS = (
    "--no-defaults", "--print-defaults", "--defaults-file=", "--defaults-extra-file=",
    "--defaults-group-suffix=",
)
# fmt: on
_MARIADB_TLS_MODES = {
    "DISABLED": ["--skip-ssl"],
    "REQUIRED": ["--ssl"],
    # MariaDB's client checks the certificate and the host name together.
    "VERIFY_CA": ["--ssl", "--ssl-verify-server-cert"],
    "VERIFY_IDENTITY": ["--ssl", "--ssl-verify-server-cert"],
}


def _text(value: t.Any) -> str | None:
    """A setting as command-line text, or None for what a client cannot take."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return str(value)
    return None


def _truthy(value: t.Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def postgresql_command(
    program: str, target: _Target, extra: list[str]
) -> ClientCommand:
    """The ``psql`` command for a PostgreSQL engine."""
    params = dict(target.params)
    # pg8000 spells the database and the socket differently from libpq.
    if "database" in params:
        params.setdefault("dbname", params.pop("database"))
    socket = _text(params.pop("unix_sock", None))
    if socket:
        params["host"] = os.path.dirname(socket)
    argv = [program]
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        value = _text(params.get(key))
        if value:
            argv += [flag, value]
    # psql takes its options before the database name.
    argv += extra
    dbname = _text(params.get("dbname"))
    if dbname:
        argv.append(dbname)
    env = {}
    for key in _LIBPQ_KEYWORDS:
        value = _text(params.get(key))
        if value is not None:
            variable = "PG" + key.replace("_", "").upper()
            env[_LIBPQ_VARIABLES.get(key, variable)] = value
    return ClientCommand(argv, env)


def mysql_command(program: str, target: _Target, extra: list[str]) -> ClientCommand:
    """The ``mariadb`` (or ``mysql``) command for a MariaDB or MySQL engine."""
    params = target.params
    first = [arg for arg in extra if arg.startswith(_MYSQL_FIRST_OPTIONS)]
    rest = [arg for arg in extra if not arg.startswith(_MYSQL_FIRST_OPTIONS)]
    argv = [program, *first]
    defaults_file = _text(params.get("read_default_file"))
    if defaults_file and not first:
        argv.append(f"--defaults-extra-file={defaults_file}")
    socket = _text(params.get("unix_socket"))
    for key, option in (
        ("user", "--user"),
        ("host", "--host"),
        ("port", "--port"),
        ("unix_socket", "--socket"),
        ("charset", "--default-character-set"),
    ):
        value = _text(params.get(key))
        if value:
            argv.append(f"{option}={value}")
    if target.driver in _MYSQL_TCP_DRIVERS and not socket:
        argv.append("--protocol=TCP")
    argv += _mysql_tls_options(program, params)
    argv += rest
    database = _text(params.get("database", params.get("db")))
    if database:
        argv.append(database)
    password = _text(params.get("password", params.get("passwd")))
    return ClientCommand(argv, {"MYSQL_PWD": password} if password else {})


def _mysql_tls_options(program: str, params: t.Mapping[str, t.Any]) -> list[str]:
    # PyMySQL and mysqlclient get an "ssl" dict from SQLAlchemy; mysql-connector and
    # MariaDB Connector/Python take flat "ssl_*" arguments.
    ssl = params.get("ssl")
    ssl = ssl if isinstance(ssl, t.Mapping) else {}
    options = []
    for name in ("ca", "capath", "cert", "key", "cipher", "crl", "crlpath"):
        value = _text(ssl.get(name, params.get(f"ssl_{name}")))
        if value:
            options.append(f"--ssl-{name}={value}")
    mode = _text(params.get("ssl_mode"))
    if mode:
        mode = mode.upper()
    elif _truthy(params.get("ssl_disabled")):
        mode = "DISABLED"
    elif _truthy(params.get("ssl_verify_identity")):
        mode = "VERIFY_IDENTITY"
    elif _truthy(params.get("ssl_verify_cert")):
        mode = "VERIFY_CA"
    elif ssl or params.get("ssl") is True:
        # As PyMySQL does: given a CA, check the certificate, and the host name
        # unless check_hostname is false.
        if not (ssl.get("ca") or ssl.get("capath")):
            mode = "REQUIRED"
        elif _truthy(ssl.get("check_hostname", True)):
            mode = "VERIFY_IDENTITY"
        else:
            mode = "VERIFY_CA"
    if mode is None:
        return options
    if _is_mariadb_client(program):
        return options + _MARIADB_TLS_MODES.get(mode, [])
    return [*options, f"--ssl-mode={mode}"]


def _is_mariadb_client(program: str) -> bool:
    """Whether ``program`` is MariaDB's client, which spells TLS modes differently."""
    if os.path.basename(os.path.realpath(program)).startswith("mariadb"):
        return True
    try:
        version = subprocess.run(
            [program, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "mariadb" in version.lower()


def sqlite_command(program: str, target: _Target, extra: list[str]) -> ClientCommand:
    """The ``sqlite3`` command for a SQLite engine."""
    # sqlite3 reads the SQL to run as the argument after the file name, and takes
    # options anywhere, so extra arguments go last.
    return ClientCommand([program, str(target.args[0]), *extra])


_Builder = t.Callable[[str, _Target, list[str]], ClientCommand]

# backend name -> (kind of database, programs by preference, Debian package, builder)
_CLIENTS: dict[str, tuple[str, tuple[str, ...], str, _Builder]] = {
    "postgresql": ("PostgreSQL", ("psql",), "postgresql-client", postgresql_command),
    "mysql": ("MariaDB/MySQL", ("mariadb", "mysql"), "mariadb-client", mysql_command),
    "mariadb": ("MariaDB/MySQL", ("mariadb", "mysql"), "mariadb-client", mysql_command),
    "sqlite": ("SQLite", ("sqlite3",), "sqlite3", sqlite_command),
}


def client_command(
    state: AppState, name: str, extra: t.Sequence[str] = ()
) -> ClientCommand:
    """The client command for the engine ``name`` of an app.

    :raises click.ClickException: No client is known for the engine, it cannot be
        reached by another program, or its program is not installed.
    """
    engine = state.engines[name]
    url = engine.url
    backend = url.get_backend_name()
    bind_option = "" if name == DEFAULT else f" --bind {name}"
    hint = f'run one statement without it: flask db-shell{bind_option} -c "SQL".'
    if backend not in _CLIENTS:
        raise click.ClickException(
            f"flask db-shell knows no client program for the {backend!r} engine"
            f" {name!r} ({render_url(url)}); {hint}"
        )
    kind, programs, package, build = _CLIENTS[backend]
    if is_sqlite_memory(url):
        raise click.ClickException(
            f"The engine {name!r} is an in-memory SQLite database, which exists only"
            " inside the app's process: no client program can open it. Configure a"
            " database file to use flask db-shell."
        )
    program = next(filter(None, map(shutil.which, programs)), None)
    if program is None:
        names = " or ".join(repr(program) for program in programs)
        raise click.ClickException(
            f"The {kind} client program {names} was not found on PATH. Install it"
            f" (Debian/Ubuntu: 'apt install {package}'), or {hint}"
        )
    args, params = engine.dialect.create_connect_args(url)
    options = state.config.engines[name].options
    params = {**params, **options.get("connect_args", {})}
    return build(program, _Target(list(args), params, url.get_driver_name()), [*extra])


def run_client(command: ClientCommand) -> int:
    """Run the client in the foreground and return its exit status."""
    env = {**os.environ, **command.env}
    previous: t.Any = signal.SIG_IGN
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C reaches the whole foreground process group: the client handles
        # it (psql cancels the running query), the parent must not die of it. A
        # Python handler, unlike SIG_IGN, is reset to the default in the child.
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, _ignore_signal)
    try:
        try:
            process = subprocess.Popen(command.argv, env=env)
        except OSError as e:
            raise click.ClickException(
                f"Could not start {command.argv[0]!r}: {e.strerror or e}."
            ) from None
        status = process.wait()
    finally:
        if previous is not signal.SIG_IGN:
            # None means a handler not set from Python: the default is closest.
            signal.signal(signal.SIGINT, previous or signal.SIG_DFL)
    # A client killed by a signal exits as a shell reports it: 128 + the signal.
    return 128 - status if status < 0 else status


def _ignore_signal(signum: int, frame: t.Any) -> None:
    """Let the client alone react to Ctrl-C."""
