"""Throw-away database servers for tests that stop, restart or break them.

The machine's own PostgreSQL and MariaDB are shared with other tests, so a test
that restarts a server starts its own: a fresh data directory under the
system's temporary directory, a free port on 127.0.0.1, no Unix socket in a
shared place, and the process stopped by its own id at the end::

    with PostgresServer() as server:
        server.run_sql("CREATE TABLE t (x int)")
        engine = sa.create_engine(server.url)
        server.restart()

Both classes have the same small API: :meth:`~Server.start`,
:meth:`~Server.stop`, :meth:`~Server.restart`, :meth:`~Server.cleanup` (stop and
delete the data directory), :attr:`~Server.url`, :attr:`~Server.port`,
:attr:`~Server.pid` and :meth:`~Server.run_sql`. When run as root, the server
runs as the ``postgres`` or ``mysql`` OS user, as the distributions' own
servers do (PostgreSQL refuses to run as root). A missing program raises
:class:`ServerUnavailable`, which a fixture turns into a skip (or a failure on
CI).

:meth:`PostgresServer.standby` makes a streaming replica of a running server
with ``pg_basebackup``; the standby is a :class:`PostgresServer` like any other.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t

import sqlalchemy as sa

HOST = "127.0.0.1"
_S = t.TypeVar("_S", bound="Server")


class ServerUnavailable(RuntimeError):
    """The programs needed to run a throw-away server are not installed."""


def start_or_skip(server_class: type[_S], **kwargs: t.Any) -> _S:
    """Start a server for a fixture; skip the test when its programs are
    missing, unless ``CI`` is set (CI must run every test), then fail.
    """
    import pytest

    try:
        server = server_class(**kwargs)
    except ServerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e} (CI is set, so this test must run)")
        pytest.skip(str(e))
    return server.__enter__()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _as_user(user: str) -> list[str]:
    """The command prefix that runs a program as ``user`` when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerUnavailable("runuser is not installed: cannot drop root")
    return [runuser, "-u", user, "--"]


def _own(path: str, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user, user)


def _run(argv: list[str], timeout: float = 120) -> str:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{os.path.basename(argv[0])} failed ({done.returncode}):"
            f" {' '.join(argv)}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our child, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    return True


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.05)
    return not is_running(pid)


class Server:
    """What both servers share: a data directory, a port, a process."""

    #: The OS user the server runs as when the tests run as root.
    os_user = ""
    #: The prefix of the temporary data directory.
    prefix = "fso-db-"

    def __init__(self, *, port: int | None = None, datadir: str | None = None):
        self.port = port or free_port()
        #: The temporary directory this object made (deleted by cleanup); the
        #: data directory and the log are in it.
        self._parent = ""
        if datadir is None:
            self._parent = tempfile.mkdtemp(prefix=self.prefix)
            _own(self._parent, self.os_user)
            datadir = os.path.join(self._parent, "data")
        self.datadir = datadir
        self.pid = 0

    # -- the API ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for the server's test database."""
        raise NotImplementedError

    def start(self) -> None:
        """Create the data directory on first use, start, wait until it serves."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (fast shutdown), by its process id."""
        raise NotImplementedError

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def run_sql(self, sql: str, params: t.Any = None) -> list[tuple[t.Any, ...]]:
        """Run one statement in autocommit mode; its rows, or ``[]``."""
        engine = sa.create_engine(self.url, poolclass=sa.NullPool)
        try:
            with engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                result = connection.exec_driver_sql(sql, params or ())
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def cleanup(self) -> None:
        """Stop the server and delete a data directory this object created."""
        try:
            self.stop()
        finally:
            if self._parent:
                shutil.rmtree(self._parent, ignore_errors=True)

    def log(self) -> str:
        """The server's log, for failure messages."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    @property
    def log_path(self) -> str:
        return os.path.join(self._files, "server.log")

    @property
    def _files(self) -> str:
        """Where the log (and MariaDB's socket and pid file) live: beside the
        data directory, not in it.
        """
        return os.path.dirname(os.path.abspath(self.datadir))

    def __enter__(self: _S) -> _S:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- helpers ----------------------------------------------------------------

    def _owns(self, pid: int) -> bool:
        """Whether process ``pid`` is this server (it names our data directory)."""
        return is_running(pid) and self.datadir in _command_line(pid)

    def _kill(self, timeout: float = 20) -> None:
        """Stop the server process by its id: SIGTERM, then SIGKILL.

        Only while the process with that id is still this server (its command
        line names the data directory): a pid freed by a clean stop may already
        belong to another program.
        """
        if not self.pid:
            return
        if not self._owns(self.pid):
            self.pid = 0
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            if _wait_gone(self.pid, timeout):
                break
        self.pid = 0


class PostgresServer(Server):
    """A PostgreSQL cluster of its own (``initdb``, ``pg_ctl``), TCP only.

    :param version: The major version under ``/usr/lib/postgresql``; the
        newest by default.
    :param settings: More ``postgresql.conf`` settings.
    :param datadir: An existing data directory (a base backup) to run; then
        ``initdb`` is not run and the directory is not deleted by
        :meth:`cleanup`.
    :param database: The database :attr:`url` names (created at first start).
    """

    os_user = "postgres"
    prefix = "fso-pg-"
    #: Durability is not needed for a test's data; speed is.
    FAST = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "16MB",
        "max_connections": "60",
    }

    def __init__(
        self,
        *,
        version: str | None = None,
        port: int | None = None,
        settings: t.Mapping[str, str] | None = None,
        datadir: str | None = None,
        database: str = "fso_test",
    ) -> None:
        super().__init__(port=port, datadir=datadir)
        self.bindir = self._find_bindir(version)
        self.settings = {**self.FAST, **(settings or {})}
        self.database = database
        self._created = False

    @staticmethod
    def _find_bindir(version: str | None) -> str:
        pattern = f"/usr/lib/postgresql/{version or '*'}/bin/pg_ctl"
        found = sorted(glob.glob(pattern), key=lambda p: int(p.split("/")[4]))
        if not found:
            raise ServerUnavailable(
                f"PostgreSQL server programs not found ({pattern}): install the"
                " Debian package 'postgresql'"
            )
        return os.path.dirname(found[-1])

    def _bin(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{self.database}"

    def admin_url(self) -> str:
        """The URL of the ``postgres`` database (always there)."""
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"

    def start(self) -> None:
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            _run(
                [
                    *_as_user(self.os_user),
                    self._bin("initdb"),
                    "--pgdata",
                    self.datadir,
                    "--username",
                    "postgres",
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ]
            )
        self._write_settings()
        _run(
            [
                *_as_user(self.os_user),
                self._bin("pg_ctl"),
                "--pgdata",
                self.datadir,
                "--log",
                self.log_path,
                "--wait",
                "--timeout",
                "60",
                "start",
            ]
        )
        self.pid = self._read_pid()
        if not self._created:
            exists = self._admin_sql(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            )
            if not exists:
                self._admin_sql(f'CREATE DATABASE "{self.database}"')
            self._created = True

    def stop(self, mode: str = "fast") -> None:
        if not self.pid:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run(
                [
                    *_as_user(self.os_user),
                    self._bin("pg_ctl"),
                    "--pgdata",
                    self.datadir,
                    "--mode",
                    mode,
                    "--wait",
                    "--timeout",
                    "30",
                    "stop",
                ],
                timeout=60,
            )
        # pg_ctl signals the pid in postmaster.pid; make sure, by our own pid.
        self._kill()

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``: stop (``mode``) and start on the same port."""
        self.stop(mode)
        self.start()

    def standby(self, *, port: int | None = None) -> PostgresServer:
        """A streaming standby of this server: ``pg_basebackup -R`` into a new
        directory, not started yet. Its :meth:`cleanup` deletes the directory.
        """
        parent = tempfile.mkdtemp(prefix=self.prefix + "standby-")
        _own(parent, self.os_user)
        datadir = os.path.join(parent, "data")
        _run(
            [
                *_as_user(self.os_user),
                self._bin("pg_basebackup"),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--username",
                "postgres",
                "--pgdata",
                datadir,
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                "--checkpoint",
                "fast",
                "--no-sync",
            ]
        )
        standby = PostgresServer(
            version=os.path.basename(os.path.dirname(self.bindir)),
            port=port,
            settings=self.settings,
            datadir=datadir,
            database=self.database,
        )
        standby._created = True
        standby._parent = parent
        return standby

    def _write_settings(self) -> None:
        # One included file, rewritten at every start: a base backup copies the
        # include line, and its own start writes its own port.
        settings = {
            **self.settings,
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",
        }
        lines = [f"{name} = '{value}'" for name, value in settings.items()]
        path = os.path.join(self.datadir, "fso_test.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        _own(path, self.os_user)
        conf = os.path.join(self.datadir, "postgresql.conf")
        with open(conf) as f:
            included = "include_if_exists = 'fso_test.conf'" in f.read()
        if not included:
            with open(conf, "a") as f:
                f.write("\ninclude_if_exists = 'fso_test.conf'\n")

    def _read_pid(self) -> int:
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            return int(f.readline())

    def _admin_sql(self, sql: str, params: t.Any = None) -> list[tuple[t.Any, ...]]:
        database, self.database = self.database, "postgres"
        try:
            return self.run_sql(sql, params)
        finally:
            self.database = database


class MariaDBServer(Server):
    """A MariaDB server of its own (``mariadb-install-db``, ``mariadbd``).

    ``root`` connects without a password over TCP from 127.0.0.1.

    :param database: The database :attr:`url` names (created at first start).
    """

    os_user = "mysql"
    prefix = "fso-mariadb-"

    def __init__(
        self,
        *,
        port: int | None = None,
        datadir: str | None = None,
        database: str = "fso_test",
    ) -> None:
        super().__init__(port=port, datadir=datadir)
        self.database = database
        self.mariadbd = shutil.which("mariadbd") or shutil.which(
            "mariadbd", path="/usr/sbin:/usr/local/sbin"
        )
        self.install_db = shutil.which("mariadb-install-db")
        if self.mariadbd is None or self.install_db is None:
            raise ServerUnavailable(
                "mariadbd or mariadb-install-db not found: install the Debian"
                " package 'mariadb-server'"
            )
        self._process: subprocess.Popen[bytes] | None = None
        self._created = False

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@{HOST}:{self.port}/{self.database}"

    def start(self) -> None:
        user = ["--user=" + self.os_user] if os.geteuid() == 0 else []
        if not os.path.isdir(os.path.join(self.datadir, "mysql")):
            _run(
                [
                    t.cast(str, self.install_db),
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    *user,
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ]
            )
        argv = [
            t.cast(str, self.mariadbd),
            "--no-defaults",
            f"--datadir={self.datadir}",
            *user,
            f"--port={self.port}",
            f"--bind-address={HOST}",
            f"--socket={os.path.join(self._files, 'mariadbd.sock')}",
            f"--pid-file={os.path.join(self._files, 'mariadbd.pid')}",
            f"--log-error={self.log_path}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--max-connections=60",
        ]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self._process.pid
        self._wait_ready(60)
        if not self._created:
            database, self.database = self.database, ""
            try:
                self.run_sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            finally:
                self.database = database
            self._created = True

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(
                    f"mariadbd exited with {self._process.returncode}:\n{self.log()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    pass
                database, self.database = self.database, ""
                try:
                    self.run_sql("SELECT 1")
                finally:
                    self.database = database
                return
            except (OSError, sa.exc.OperationalError):
                time.sleep(0.1)
        raise RuntimeError(f"mariadbd did not answer in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if not self.pid:
            return
        self._kill(timeout=30)
        if self._process is not None:
            self._process.wait(timeout=10)
            self._process = None


class PgBouncer:
    """PgBouncer of its own on a free loopback port, in front of a PostgreSQL
    server, in transaction pooling mode unless told otherwise.

    :param databases: Database name (as clients name it) to the libpq
        connection string PgBouncer uses for it; by default every name goes
        to ``server_host:server_port`` (``*``).
    :param settings: More ``[pgbouncer]`` settings.

    It runs as the ``postgres`` OS user when the tests run as root (PgBouncer
    refuses to run as root), with trust authentication for the users in its
    own user list, and is stopped by its process id.
    """

    def __init__(
        self,
        *,
        server_host: str = HOST,
        server_port: int = 5432,
        user: str = "postgres",
        databases: t.Mapping[str, str] | None = None,
        pool_mode: str = "transaction",
        settings: t.Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = shutil.which("pgbouncer") or shutil.which(
            "pgbouncer", path="/usr/sbin:/usr/local/sbin"
        )
        if self.binary is None:
            raise ServerUnavailable(
                "pgbouncer is not installed: install the Debian package 'pgbouncer'"
            )
        self.port = port or free_port()
        self.user = user
        self.databases = dict(
            databases or {"*": f"host={server_host} port={server_port}"}
        )
        self.settings = {
            "listen_addr": HOST,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "pool_mode": pool_mode,
            "default_pool_size": "20",
            "max_client_conn": "500",
            "admin_users": user,
            "server_login_retry": "0.5",
            **(settings or {}),
        }
        self.directory = tempfile.mkdtemp(prefix="fso-pgbouncer-")
        self.pid = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ini_path(self) -> str:
        return os.path.join(self.directory, "pgbouncer.ini")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "pgbouncer.log")

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for ``database`` through PgBouncer."""
        return f"postgresql+psycopg://{self.user}@{HOST}:{self.port}/{database}"

    def version(self) -> str:
        """PgBouncer's version, e.g. ``"1.18.0"``."""
        out = _run([t.cast(str, self.binary), "--version"])
        return out.split()[1]

    def start(self, timeout: float = 20) -> None:
        run_as = "postgres" if os.geteuid() == 0 else None
        lines = ["[databases]"]
        lines += [f"{name} = {conn}" for name, conn in self.databases.items()]
        lines.append("[pgbouncer]")
        settings = {
            **self.settings,
            "auth_file": os.path.join(self.directory, "userlist.txt"),
            "logfile": self.log_path,
            "pidfile": os.path.join(self.directory, "pgbouncer.pid"),
        }
        lines += [f"{name} = {value}" for name, value in settings.items()]
        with open(self.ini_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(settings["auth_file"], "w") as f:
            f.write(f'"{self.user}" ""\n')
        if run_as:
            for path in (self.directory, self.ini_path, settings["auth_file"]):
                _own(path, run_as)
        self._process = subprocess.Popen(
            [t.cast(str, self.binary), "--quiet", self.ini_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=run_as,
            group=run_as,
        )
        self.pid = self._process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self._process.returncode}:\n{self.log()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop PgBouncer by its process id: SIGTERM (immediate), then SIGKILL."""
        if not self.pid:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                if self._process is not None:
                    self._process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.pid = 0
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, command: str) -> list[tuple[t.Any, ...]]:
        """Run a command on PgBouncer's admin console (``SHOW POOLS``, ...)."""
        import psycopg

        with psycopg.connect(
            host=HOST,
            port=self.port,
            user=self.user,
            dbname="pgbouncer",
            autocommit=True,
            prepare_threshold=None,
        ) as connection:
            cursor = connection.execute(command)
            return [tuple(row) for row in cursor.fetchall()]

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
