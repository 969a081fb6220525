"""Load generator, fault injector and bookkeeping for the reliability run.

Everything runs on loopback and is bounded: a server is started on 127.0.0.1 with
a socket the test binds itself, the load stops after a number of requests or a
deadline, and every background thread stops when told to.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t

import psycopg
import sqlalchemy as sa

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN_APP_NAME = "rel_admin"

#: What each kind of request must get back when nothing goes wrong.
EXPECTED_STATUS = {"read": 200, "write": 201, "raise": 500, "conflict": 409, "dup": 409}
#: The default mix of request kinds (weights).
MIX = {"read": 40, "write": 35, "raise": 10, "conflict": 10, "dup": 5}
#: Extra time after a fault during which a request that started before it may fail.
KILL_GRACE = 0.25
#: How soon after PostgreSQL is back every request must succeed again.
RECOVERY_LIMIT = 1.0
#: The summary tables of this test session, printed at its end by conftest.py.
SUMMARIES: list[str] = []


def conninfo(url: str, application_name: str = ADMIN_APP_NAME) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL."""
    parsed = sa.make_url(url).set(drivername="postgresql")
    parsed = parsed.update_query_dict({"application_name": application_name})
    return parsed.render_as_string(hide_password=False)


def with_password(url: str, password: str) -> str:
    """``url`` with its password set (trust auth ignores it), to catch leaks."""
    return sa.make_url(url).set(password=password).render_as_string(hide_password=False)


def connect_admin(url: str, timeout: float = 3) -> psycopg.Connection[t.Any]:
    return psycopg.connect(conninfo(url), autocommit=True, connect_timeout=timeout)


# -- the server ------------------------------------------------------------------


class Server:
    """gunicorn with the gthread worker, serving ``reliability_app`` on loopback."""

    def __init__(
        self,
        *,
        database_url: str,
        app_name: str,
        table: str,
        workdir: str,
        workers: int = 1,
        threads: int = 8,
        pool_size: int = 4,
        max_overflow: int = 4,
        preload: bool = False,
        extra_env: t.Mapping[str, str] | None = None,
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.database_url = database_url
        self.app_name = app_name
        self.table = table
        self.workers = workers
        self.threads = threads
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.preload = preload
        self.report_dir = os.path.join(workdir, "reports")
        self.log_path = os.path.join(workdir, "gunicorn.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.argv: list[str] = []

    @property
    def connection_limit(self) -> int:
        """How many connections the app's pools may hold at once, all processes."""
        processes = self.workers + (1 if self.preload else 0)
        return processes * (self.pool_size + self.max_overflow)

    def start(self, timeout: float = 30) -> None:
        os.makedirs(self.report_dir, exist_ok=True)
        # The test binds the socket and hands it over, so there is no race for a
        # free port and nothing but 127.0.0.1 is ever bound.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        self.port = listener.getsockname()[1]
        fd = listener.fileno()
        os.set_inheritable(fd, True)
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"fd://{fd}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--keep-alive",
            "60",
            "--timeout",
            "60",
            "--graceful-timeout",
            "20",
            "--config",
            os.path.join(HERE, "reliability_gunicorn_conf.py"),
            "--chdir",
            HERE,
            "--log-level",
            "warning",
        ]
        if self.preload:
            self.argv.append("--preload")
        self.argv.append("reliability_app:create_app()")
        env = dict(os.environ)
        env.update(
            RELIABILITY_DATABASE_URL=self.database_url,
            RELIABILITY_APP_NAME=self.app_name,
            RELIABILITY_TABLE=self.table,
            RELIABILITY_POOL_SIZE=str(self.pool_size),
            RELIABILITY_MAX_OVERFLOW=str(self.max_overflow),
            RELIABILITY_REPORT_DIR=self.report_dir,
        )
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                start_new_session=True,
            )
        listener.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with status {self.process.returncode}:\n"
                    + self.log()
                )
            try:
                status, _ = self.get("/rel/pool")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer in {timeout} s:\n" + self.log())

    def get(self, path: str) -> tuple[int, t.Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            return response.status, json.loads(body) if body else None
        finally:
            connection.close()

    def pids(self) -> list[int]:
        """The master's and its workers' process ids."""
        if self.process is None:
            return []
        master = self.process.pid
        pids = [master]
        try:
            with open(f"/proc/{master}/task/{master}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        return pids

    def command_lines(self) -> list[str]:
        """The command lines of the master and its workers, as the OS shows them."""
        lines = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode())
            except OSError:
                pass
        return lines

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # The process group is the one this object started (start_new_session).
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def worker_reports(self) -> list[dict[str, t.Any]]:
        reports = []
        for name in sorted(os.listdir(self.report_dir)):
            with open(os.path.join(self.report_dir, name)) as f:
                reports.append(json.load(f))
        return reports

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# -- the load --------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One request and what came back."""

    kind: str
    key: str
    start: float
    end: float = 0.0
    #: HTTP status, or None when the request failed below HTTP.
    status: int | None = None
    #: The exception behind a 500 (from the app), or the transport error.
    error: str = ""
    #: The app had sent COMMIT when the 500 happened.
    commit_started: bool = False
    #: For reads: whether the acknowledged key was found.
    found: bool | None = None

    @property
    def ok(self) -> bool:
        if self.status != EXPECTED_STATUS[self.kind]:
            return False
        if self.kind == "raise":
            return self.error == "DeliberateError"
        if self.kind == "dup":
            return self.error == "IntegrityError"
        if self.kind == "read":
            return self.found is True
        return True


class Load:
    """A bounded load: ``requests`` requests from ``concurrency`` threads, each
    with its own keep-alive connection, stopping at ``deadline`` seconds at most.
    """

    def __init__(
        self,
        port: int,
        *,
        requests: int,
        concurrency: int,
        run_id: str,
        deadline: float,
        mix: t.Mapping[str, int] = MIX,
        seed: int = 0,
    ) -> None:
        self.port = port
        self.requests = requests
        self.concurrency = concurrency
        self.run_id = run_id
        self.deadline = deadline
        self.kinds = list(mix)
        self.weights = [mix[k] for k in self.kinds]
        self.seed = seed
        self.results: list[Result] = []
        self.acked: list[str] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.started = 0.0
        self.finished = 0.0

    @property
    def done(self) -> int:
        return len(self.results)

    def run(self) -> list[Result]:
        self.started = time.monotonic()
        stop_at = self.started + self.deadline
        threads = [
            threading.Thread(target=self._client, args=(n, stop_at), daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.deadline + 30)
        self.finished = time.monotonic()
        return self.results

    def _client(self, number: int, stop_at: float) -> None:
        rng = random.Random(self.seed * 1000 + number)
        connection: http.client.HTTPConnection | None = None
        try:
            while time.monotonic() < stop_at:
                index = next(self._next)
                if index >= self.requests:
                    return
                if connection is None:
                    connection = http.client.HTTPConnection(
                        "127.0.0.1", self.port, timeout=30
                    )
                result = self._one(connection, index, rng)
                with self._lock:
                    self.results.append(result)
                    if result.kind == "write" and result.status == 201:
                        self.acked.append(result.key)
                if result.status is None:
                    connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    def _one(
        self, connection: http.client.HTTPConnection, index: int, rng: random.Random
    ) -> Result:
        kind = rng.choices(self.kinds, self.weights)[0]
        key = f"{self.run_id}-{index}"
        if kind in ("read", "dup"):
            with self._lock:
                if self.acked:
                    key = rng.choice(self.acked)
                else:
                    kind = "write"
        method, path = {
            "read": ("GET", f"/rel/read/{key}"),
            "write": ("POST", f"/rel/write/{key}"),
            "dup": ("POST", f"/rel/write/{key}"),
            "raise": ("POST", f"/rel/raise/{key}"),
            "conflict": ("POST", f"/rel/conflict/{key}"),
        }[kind]
        result = Result(kind=kind, key=key, start=time.monotonic())
        try:
            connection.request(method, path, headers={"Content-Length": "0"})
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            result.end = time.monotonic()
            result.error = type(e).__name__
            return result
        result.end = time.monotonic()
        result.status = response.status
        if response.status == 500:
            result.error = response.getheader("X-Rel-Error", "unknown")
            result.commit_started = response.getheader("X-Rel-Commit-Started") == "yes"
        elif body:
            data = json.loads(body)
            result.error = data.get("error", "")
            if kind == "read" and response.status == 200:
                result.found = bool(data.get("found"))
        return result


# -- faults and monitoring ---------------------------------------------------------


@dataclasses.dataclass
class Kill:
    start: float
    end: float
    terminated: int


@dataclasses.dataclass
class Restart:
    start: float
    #: When PostgreSQL refused connections first.
    down: float = 0.0
    #: When PostgreSQL accepted a connection again.
    back: float = 0.0
    returncode: int | None = None


def postgres_version() -> str:
    return sorted(os.listdir("/etc/postgresql"))[-1]


def restart_postgres_command() -> list[str]:
    return [
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        "--mode",
        "fast",
        postgres_version(),
        "main",
        "restart",
    ]


def postgres_is_ready() -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False
    )
    return done.returncode == 0


def ensure_postgres_running(timeout: float = 90) -> None:
    """Start the PostgreSQL cluster if it is not running, and wait for it."""
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        if postgres_is_ready():
            return
        if not started:
            subprocess.run(
                [
                    "pg_ctlcluster",
                    "--skip-systemctl-redirect",
                    postgres_version(),
                    "main",
                    "start",
                ],
                check=False,
            )
            started = True
        time.sleep(0.5)
    raise RuntimeError("PostgreSQL did not come back up")


class Faults(threading.Thread):
    """Terminate every backend of ``app_name`` every ``interval`` seconds, and
    restart PostgreSQL once when ``progress()`` reaches ``restart_at``.
    """

    def __init__(
        self,
        url: str,
        app_name: str,
        *,
        interval: float = 2.0,
        restart_at: float | None = None,
        progress: t.Callable[[], float] = lambda: 0.0,
        restart_server: t.Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        #: How to restart the server; None: the machine's cluster, with
        #: pg_ctlcluster (the long run on a dedicated machine).
        self.restart_server = restart_server
        self.url = url
        self.app_name = app_name
        self.interval = interval
        self.restart_at = restart_at
        self.progress = progress
        self.kills: list[Kill] = []
        self.restart: Restart | None = None
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(180)

    def run(self) -> None:
        next_kill = time.monotonic() + self.interval
        while not self._stop_event.wait(0.02):
            if (
                self.restart is None
                and self.restart_at is not None
                and self.progress() >= self.restart_at
            ):
                self._restart()
                next_kill = time.monotonic() + self.interval
            elif time.monotonic() >= next_kill:
                self._kill()
                next_kill += self.interval

    def _kill(self) -> None:
        start = time.monotonic()
        try:
            with connect_admin(self.url) as connection:
                terminated = connection.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name = %s",
                    (self.app_name,),
                ).fetchone()
        except psycopg.Error as e:
            self.errors.append(f"kill: {type(e).__name__}: {e}")
            return
        n = int(terminated[0]) if terminated else 0
        self.kills.append(Kill(start, time.monotonic(), n))

    def _restart(self) -> None:
        restart = Restart(start=time.monotonic())
        self.restart = restart
        if self.restart_server is not None:
            process: _Restarter | subprocess.Popen[bytes] = _Restarter(
                self.restart_server
            )
        else:
            process = subprocess.Popen(
                restart_postgres_command(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = restart.start + 120
        while time.monotonic() < deadline:
            up = _can_connect(self.url)
            now = time.monotonic()
            if not up and not restart.down:
                restart.down = now
            if up and restart.down:
                restart.back = now
                break
            if process.poll() is not None and not restart.down and up:
                # Went down and up between two probes.
                restart.down = restart.back = now
                break
            time.sleep(0.01)
        try:
            restart.returncode = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            restart.returncode = process.wait()


class _Restarter(threading.Thread):
    """Runs a restart function in a thread, with Popen's poll/wait/kill."""

    def __init__(self, restart: t.Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._restart = restart
        self.returncode: int | None = None
        self.start()

    def run(self) -> None:
        try:
            self._restart()
            self.returncode = 0
        except Exception:
            self.returncode = 1

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.join(timeout)
        if self.is_alive():
            raise subprocess.TimeoutExpired("restart", timeout or 0)
        return self.returncode if self.returncode is not None else 1

    def kill(self) -> None:
        pass


def _can_connect(url: str) -> bool:
    try:
        with connect_admin(url, timeout=1) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


class ConnectionSampler(threading.Thread):
    """Count the app's backends in ``pg_stat_activity`` every ``interval`` s."""

    def __init__(self, url: str, app_name: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.app_name = app_name
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    @property
    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(30)

    def run(self) -> None:
        connection: psycopg.Connection[t.Any] | None = None
        try:
            while not self._stop_event.wait(self.interval):
                try:
                    if connection is None:
                        connection = connect_admin(self.url, timeout=1)
                    row = connection.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = %s",
                        (self.app_name,),
                    ).fetchone()
                    self.samples.append((time.monotonic(), int(row[0]) if row else 0))
                except psycopg.Error:
                    if connection is not None:
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()


def app_backends(url: str, app_name: str) -> list[tuple[str, str]]:
    """(state, query) of every backend of the app right now."""
    with connect_admin(url) as connection:
        rows = connection.execute(
            "SELECT coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity"
            " WHERE application_name = %s",
            (app_name,),
        ).fetchall()
    return [(str(state), str(query)) for state, query in rows]


def stored_keys(url: str, table: str, run_id: str) -> list[str]:
    with connect_admin(url) as connection:
        rows = connection.execute(
            f"SELECT key FROM {table} WHERE key LIKE %s",  # table is ours: rel_*
            (f"{run_id}-%",),
        ).fetchall()
    return [str(row[0]) for row in rows]


# -- the verdict -----------------------------------------------------------------


def fork_violations(reports: t.Iterable[t.Mapping[str, t.Any]]) -> list[str]:
    """What the workers' reports show about connections shared across a fork."""
    violations = []
    owners: dict[int, int] = {}
    for report in reports:
        pid = report["pid"]
        if (
            report["startup_pid"] != pid
            and report["startup_backend"] in report["backends"]
        ):
            violations.append(
                f"worker {pid} used the connection (backend"
                f" {report['startup_backend']}) its master opened before forking"
            )
        for backend in report["backends"]:
            other = owners.setdefault(backend, pid)
            if other != pid:
                violations.append(
                    f"workers {other} and {pid} both used backend {backend}"
                )
    return violations


_TRACEBACK_END = re.compile(r"^(?P<name>[A-Za-z_][\w.]*)(?::|$)")


#: What flask_session_orm logs (with a traceback) when ending a session fails.
EXTENSION_MESSAGES = (
    "Rolling back the session failed",
    "Invalidating the session failed",
    "Ending the database session failed",
    "Closing the database session failed",
)


def _is_context(lines: list[str], start: int) -> bool:
    """Whether the exception that ended before ``start`` led to another one."""
    for line in lines[start:]:
        if line.startswith(("The above exception", "During handling")):
            return True
        if line.startswith("Traceback (most recent call last):") or re.match(
            r"\[\d{4}-", line
        ):
            return False
    return False


def logged_exceptions(log: str) -> dict[str, int]:
    """The exception ending each logged traceback, with counts.

    A chained traceback ("During handling of the above exception...") counts
    once, by its last exception: the earlier ones are its context.
    """
    lines = log.splitlines()
    counts: dict[str, int] = {}
    in_traceback = False
    for number, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if not in_traceback or line.startswith((" ", "\t")) or not line.strip():
            continue
        match = _TRACEBACK_END.match(line)
        if match is None:
            continue
        in_traceback = False
        if _is_context(lines, number + 1):
            continue
        name = match.group("name")
        counts[name] = counts.get(name, 0) + 1
    return counts


@dataclasses.dataclass
class Summary:
    """What one run did and every invariant it broke."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    failures_by_error: dict[str, int] = dataclasses.field(default_factory=dict)
    acknowledged: int = 0
    missing: int = 0
    phantom: int = 0
    stale_reads: int = 0
    server_errors_5xx: int = 0
    five_xx_stored_after_commit: int = 0
    transport_errors: int = 0
    failures_in_kill_windows: int = 0
    failures_in_restart_window: int = 0
    unexplained_failures: int = 0
    kills: int = 0
    backends_terminated: int = 0
    restart_seconds: float | None = None
    recovery_seconds: float | None = None
    peak_connections: int = 0
    connection_limit: int = 0
    checked_out_at_end: int = 0
    logged: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Lines the extension logged when ending a session failed, by message.
    extension_logged: dict[str, int] = dataclasses.field(default_factory=dict)
    violations: list[str] = dataclasses.field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        errors = ", ".join(
            f"{k} {v}" for k, v in sorted(self.failures_by_error.items())
        )
        logged = ", ".join(f"{k} {v}" for k, v in sorted(self.logged.items()))
        rps = self.requests / self.seconds if self.seconds else 0.0
        rows = [
            ("requests", f"{self.requests} in {self.seconds:.1f} s ({rps:.0f}/s)"),
            ("by kind", kinds),
            ("failed requests by error", errors or "none"),
            (
                "failures: kill windows / restart window / unexplained",
                f"{self.failures_in_kill_windows} / {self.failures_in_restart_window}"
                f" / {self.unexplained_failures}",
            ),
            ("5xx other than the deliberate ones", str(self.server_errors_5xx)),
            ("transport errors", str(self.transport_errors)),
            ("acknowledged writes", str(self.acknowledged)),
            ("missing (acknowledged, not stored)", str(self.missing)),
            ("phantom (refused or failed, but stored)", str(self.phantom)),
            (
                "5xx during COMMIT that stored the row",
                str(self.five_xx_stored_after_commit),
            ),
            ("stale reads of acknowledged keys", str(self.stale_reads)),
            (
                "backends terminated (kills)",
                f"{self.backends_terminated} ({self.kills} kills)",
            ),
            (
                "PostgreSQL restart: down for",
                "-"
                if self.restart_seconds is None
                else f"{self.restart_seconds:.2f} s",
            ),
            (
                "recovery after PostgreSQL was back",
                "-"
                if self.recovery_seconds is None
                else f"{self.recovery_seconds:.3f} s",
            ),
            (
                "peak connections / pool limit",
                f"{self.peak_connections} / {self.connection_limit}",
            ),
            ("connections checked out at the end", str(self.checked_out_at_end)),
            ("tracebacks in the server log", logged or "none"),
            (
                "of which the extension logged",
                ", ".join(f"{k!r} {v}" for k, v in self.extension_logged.items())
                or "none",
            ),
            ("invariants broken", str(len(self.violations))),
        ]
        return rows

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"reliability run: {self.name}"]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [f"  ! {v}" for v in self.violations]
        return "\n".join(lines)


def _overlaps(result: Result, start: float, end: float) -> bool:
    return result.start <= end and result.end >= start


def analyse(
    name: str,
    load: Load,
    stored: t.Iterable[str],
    *,
    faults: Faults | None,
    peak_connections: int,
    connection_limit: int,
    checked_out_at_end: int,
    log: str,
    allowed_logged: t.Collection[str] = (),
) -> Summary:
    """Check every invariant of one run and count what happened."""
    results = load.results
    summary = Summary(name=name, requests=len(results))
    summary.seconds = load.finished - load.started
    summary.peak_connections = peak_connections
    summary.connection_limit = connection_limit
    summary.checked_out_at_end = checked_out_at_end
    for r in results:
        summary.by_kind[r.kind] = summary.by_kind.get(r.kind, 0) + 1

    # Which request owns each key: every key but a read's or a dup's is new.
    owners = {r.key: r for r in results if r.kind not in ("read", "dup")}
    stored_set = set(stored)
    for key in stored_set:
        owner = owners.get(key)
        if owner is None:
            summary.phantom += 1
            summary.violations.append(f"stored key {key!r} was never written")
        elif owner.kind != "write" or owner.status is None:
            summary.phantom += 1
            summary.violations.append(
                f"key {key!r} of a {owner.kind!r} request ({owner.status}) is stored"
            )
        elif owner.status >= 500:
            if owner.commit_started:
                summary.five_xx_stored_after_commit += 1
            else:
                summary.phantom += 1
                summary.violations.append(
                    f"key {key!r} failed with {owner.status} before COMMIT but is"
                    " stored"
                )
        elif owner.status >= 300:
            summary.phantom += 1
            summary.violations.append(
                f"key {key!r} was refused with {owner.status} but is stored"
            )
    for r in results:
        if r.kind == "write" and r.status is not None and 200 <= r.status < 400:
            summary.acknowledged += 1
            if r.key not in stored_set:
                summary.missing += 1
                summary.violations.append(
                    f"key {r.key!r} was acknowledged ({r.status}) but is not stored"
                )
        if r.kind == "read" and r.status == 200 and r.found is False:
            summary.stale_reads += 1
            summary.violations.append(f"acknowledged key {r.key!r} read as missing")
        if r.kind == "dup" and r.status is not None and r.status < 400:
            summary.violations.append(f"duplicate write of {r.key!r} got {r.status}")

    kills = faults.kills if faults is not None else []
    restart = faults.restart if faults is not None else None
    summary.kills = len(kills)
    summary.backends_terminated = sum(k.terminated for k in kills)
    for r in results:
        if r.ok:
            continue
        if r.status is None:
            label = f"transport {r.error}"
            summary.transport_errors += 1
        elif r.status >= 500:
            label = f"{r.status} {r.error}"
            if not (r.kind == "raise" and r.error == "DeliberateError"):
                summary.server_errors_5xx += 1
        else:
            label = f"{r.status} {r.error or 'unexpected'} ({r.kind})"
        summary.failures_by_error[label] = summary.failures_by_error.get(label, 0) + 1
        if restart is not None and _overlaps(
            r, restart.start, restart.back + RECOVERY_LIMIT
        ):
            summary.failures_in_restart_window += 1
        elif any(_overlaps(r, k.start, k.end + KILL_GRACE) for k in kills):
            summary.failures_in_kill_windows += 1
        else:
            summary.unexplained_failures += 1
    if summary.transport_errors:
        summary.violations.append(
            f"{summary.transport_errors} requests failed below HTTP"
        )
    if summary.unexplained_failures:
        summary.violations.append(
            f"{summary.unexplained_failures} requests failed outside any fault window"
        )
    if summary.failures_in_kill_windows > summary.backends_terminated:
        summary.violations.append(
            f"{summary.failures_in_kill_windows} requests failed around the kills,"
            f" more than the {summary.backends_terminated} backends terminated: only"
            " requests in flight may fail"
        )
    if faults is None and summary.server_errors_5xx:
        summary.violations.append(
            f"{summary.server_errors_5xx} unexpected 5xx responses without faults"
        )
    if restart is not None:
        if not restart.back:
            summary.violations.append("PostgreSQL did not come back during the run")
        else:
            summary.restart_seconds = restart.back - restart.down
            served = [
                r.end
                for r in results
                if r.ok and r.kind in ("read", "write") and r.start >= restart.back
            ]
            if served:
                summary.recovery_seconds = max(0.0, min(served) - restart.back)
                if summary.recovery_seconds > RECOVERY_LIMIT:
                    summary.violations.append(
                        f"the app served again {summary.recovery_seconds:.2f} s after"
                        f" PostgreSQL was back (limit {RECOVERY_LIMIT} s)"
                    )
            else:
                summary.violations.append("no request succeeded after the restart")
    if peak_connections > connection_limit:
        summary.violations.append(
            f"PostgreSQL saw {peak_connections} connections of the app, more than"
            f" the pools allow ({connection_limit})"
        )
    if checked_out_at_end:
        summary.violations.append(
            f"{checked_out_at_end} connections still checked out at the end"
        )
    summary.logged = logged_exceptions(log)
    for message in EXTENSION_MESSAGES:
        count = log.count(message)
        if count:
            summary.extension_logged[message] = count
    unexpected = {k: v for k, v in summary.logged.items() if k not in allowed_logged}
    if unexpected:
        summary.violations.append(f"unexpected tracebacks in the log: {unexpected}")
    return summary
