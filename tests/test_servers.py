"""The throw-away servers of ``tests/servers.py`` start, restart, replicate and
stop cleanly, so that the tests built on them can trust them."""

from __future__ import annotations

import os
import time
import typing as t

import pytest

from .servers import MariaDBServer
from .servers import PostgresServer
from .servers import Server
from .servers import is_running
from .servers import start_or_skip


def gone(pid: int) -> bool:
    return not is_running(pid)


@pytest.mark.parametrize("cls", [PostgresServer, MariaDBServer])
def test_start_restart_cleanup(cls: type[Server]) -> None:
    """A server answers on its loopback port, restarts on the same port with a
    new process and keeps its data, and cleanup stops it by its process id and
    deletes its directory."""
    server: Server = start_or_skip(cls)
    try:
        assert server.url.split("@", 1)[1].startswith(f"127.0.0.1:{server.port}/")
        server.run_sql("CREATE TABLE kept (x int)")
        server.run_sql("INSERT INTO kept VALUES (7)")
        first = server.pid
        server.restart()
        assert server.pid != first
        assert gone(first)
        assert server.run_sql("SELECT x FROM kept") == [(7,)]
    finally:
        pid, directory = server.pid, server.datadir
        server.cleanup()
    assert gone(pid)
    assert not os.path.exists(directory)


def test_postgres_listens_on_tcp_only() -> None:
    """The PostgreSQL cluster has no Unix socket anywhere."""
    server = start_or_skip(PostgresServer)
    try:
        rows = server.run_sql("SHOW unix_socket_directories")
        assert rows == [("",)]
        assert server.run_sql("SHOW listen_addresses") == [("127.0.0.1",)]
    finally:
        server.cleanup()


def test_postgres_standby_streams_from_its_primary() -> None:
    """standby() makes a streaming replica with pg_basebackup: it is in
    recovery, and a row committed on the primary shows on it."""
    primary = start_or_skip(PostgresServer)
    standby: PostgresServer | None = None
    try:
        primary.run_sql("CREATE TABLE replicated (x int)")
        standby = primary.standby()
        standby.start()
        assert standby.port != primary.port
        assert standby.run_sql("SELECT pg_is_in_recovery()") == [(True,)]
        primary.run_sql("INSERT INTO replicated VALUES (1)")
        rows: list[tuple[t.Any, ...]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = standby.run_sql("SELECT x FROM replicated")
            if rows:
                break
            time.sleep(0.1)
        assert rows == [(1,)]
    finally:
        if standby is not None:
            standby.cleanup()
        primary.cleanup()
