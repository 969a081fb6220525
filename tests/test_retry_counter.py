"""The counter experiment on PostgreSQL: concurrent requests increment one row
under SERIALIZABLE, without and with retry, in-process, under Werkzeug's
threaded server and under gunicorn.

Without retry the database aborts most of the overlapping transactions: 500
responses, lost increments. With as many attempts as clients (each failure is
caused by another request's commit, so no request can fail more often) every
request succeeds, the counter ends at exactly the number of requests, and each
committed request ran its on_commit callback once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import flask
import pytest
from werkzeug.serving import make_server

from .retry_support import counter_app

CLIENTS = 12
SUPPORT = Path(__file__).parent / "retry_support"


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip("TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    return url


@pytest.fixture
def tables(postgres_url: str) -> t.Iterator[flask.Flask]:
    """An app on the same database, to create, read and drop the tables."""
    app = counter_app.create_app(postgres_url)
    counter_app.reset(app)
    yield app
    counter_app.drop(app)


def check(outcome: counter_app.Outcome, attempts: int) -> None:
    """The experiment's expected result, without retry or with enough of it."""
    successes = CLIENTS - outcome.failures
    # Exactly the requests that answered 200 were stored, and each ran its
    # on_commit callback once.
    assert outcome.value == successes
    assert outcome.callbacks == successes
    if attempts == 1:
        assert outcome.failures > 0
        assert set(outcome.statuses) == {200, 500}
        assert outcome.max_attempt == 1
    else:
        assert outcome.statuses == [200] * CLIENTS
        assert outcome.value == CLIENTS
        assert 1 < outcome.max_attempt <= attempts


@pytest.mark.parametrize("attempts", [1, CLIENTS])
def test_counter_in_process(
    tables: flask.Flask, postgres_url: str, attempts: int
) -> None:
    """Threads posting through the test client: lost updates without retry,
    none with it.
    """
    app = counter_app.create_app(postgres_url, attempts=attempts)
    try:
        check(counter_app.in_process(app, CLIENTS), attempts)
    finally:
        counter_app.dispose(app)


@pytest.mark.parametrize("attempts", [1, CLIENTS])
def test_counter_threaded_server(
    tables: flask.Flask, postgres_url: str, attempts: int
) -> None:
    """The same over HTTP, against Werkzeug's threaded server on loopback."""
    app = counter_app.create_app(postgres_url, attempts=attempts)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check(counter_app.over_http(tables, server.server_port, CLIENTS), attempts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        counter_app.dispose(app)


@pytest.mark.parametrize("attempts", [1, CLIENTS])
def test_counter_gunicorn(
    tables: flask.Flask, postgres_url: str, attempts: int, tmp_path: Path
) -> None:
    """The same against gunicorn: two processes with eight threads each."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    log = tmp_path / "gunicorn.log"
    env = dict(
        os.environ,
        RETRY_TEST_DATABASE_URL=postgres_url,
        RETRY_TEST_ATTEMPTS=str(attempts),
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"fd://{fd}",
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "8",
                "--chdir",
                str(SUPPORT),
                "--log-level",
                "warning",
                "counter_app:create_app()",
            ],
            env=env,
            pass_fds=(fd,),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    try:
        wait_until_serving(port, process, log)
        check(counter_app.over_http(tables, port, CLIENTS), attempts)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until gunicorn answers on ``port``; fail with its log if it exits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /missing HTTP/1.0\r\n\r\n")
                if probe.recv(12).startswith(b"HTTP/1."):
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer within 30 seconds: {log.read_text()}")
