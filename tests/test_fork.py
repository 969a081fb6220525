"""Engines created before a fork are safe to use in the forked children."""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import typing as t
import warnings

import flask
import pytest
import sqlalchemy as sa

from flask_session_orm import SessionORM

from .conftest import count_items

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only"),
    # Children share the parent's sockets only with a network database.
    pytest.mark.parametrize("backend", ["postgresql"]),
    # The test bodies run outside any request, as a pre-forking server's master.
    pytest.mark.usefixtures("outside_requests"),
]

CHILDREN = 4
TIMEOUT = 30.0
PID = sa.text("SELECT pg_backend_pid()")
# A query that keeps the server busy for a moment, so the children's and the
# parent's statements overlap on the wire.
WORK = sa.text("SELECT count(*) FROM generate_series(1, 20000) AS g(n) WHERE n % 7 = 0")


def fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking a process that has threads (some other
        # test may have left one); these children only use their own objects.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded")
        return os.fork()


def run_child(app: flask.Flask, db: SessionORM, out: int, go: int) -> t.NoReturn:
    """In the child: query through db.session, report over ``out``, never return."""
    status = 1
    try:
        with app.app_context():
            pid = db.session.scalar(PID)
            # All children hold their connection before any of them goes on.
            os.write(out, b"ready\n")
            if os.read(go, 1) != b"g":
                raise RuntimeError("the parent did not say go")
            results = [db.session.scalar(WORK) for _ in range(10)]
            pids = {db.session.scalar(PID) for _ in range(5)}
            db.session.commit()
            # A new transaction, maybe on another pooled connection of the child.
            pids.add(db.session.scalar(PID))
        # Finalizers of whatever the child inherited run now, as at a real exit.
        gc.collect()
        report = {"pid": pid, "pids": sorted(pids), "results": sorted(set(results))}
        status = 0
    except BaseException as e:
        report = {"error": f"{type(e).__name__}: {e}"}
    try:
        os.write(out, json.dumps(report).encode() + b"\n")
    finally:
        os._exit(status)


def read_line(fd: int) -> bytes:
    """One line from a child, or fail after TIMEOUT seconds."""
    data = b""
    while not data.endswith(b"\n"):
        readable, _, _ = select.select([fd], [], [], TIMEOUT)
        if not readable:
            raise TimeoutError(f"no answer from a child in {TIMEOUT} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def test_forked_children_never_share_the_parents_connections(
    app: flask.Flask, db: SessionORM
) -> None:
    """Four children forked while the parent holds a pooled connection (and has
    another idle in the pool) each open their own connections, run queries at the
    same time without protocol errors, and leave both of the parent's
    connections working.
    """
    with app.app_context():
        expected = db.session.scalar(WORK)
        db.session.rollback()
        engine = db.engine
    held = engine.connect()
    held_pid = held.scalar(PID)
    with engine.connect() as idle:
        idle_pid = idle.scalar(PID)
    assert held_pid != idle_pid
    assert t.cast(t.Any, engine.pool).checkedin() == 1

    go_read, go_write = os.pipe()
    children: dict[int, int] = {}
    try:
        for _ in range(CHILDREN):
            out_read, out_write = os.pipe()
            child = fork()
            if child == 0:
                os.close(out_read)
                os.close(go_write)
                run_child(app, db, out_write, go_read)
            os.close(out_write)
            children[child] = out_read
        for out in children.values():
            assert read_line(out) == b"ready\n"
        os.write(go_write, b"g" * CHILDREN)
        # The parent keeps using its connection while the children work.
        parent_results = {held.scalar(WORK) for _ in range(10)}
        reports = [json.loads(read_line(out)) for out in children.values()]
        statuses = [os.waitpid(child, 0)[1] for child in list(children)]
        children.clear()
    finally:
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os.close(go_read)
        os.close(go_write)

    assert [r.get("error") for r in reports] == [None] * CHILDREN
    assert statuses == [0] * CHILDREN
    for report in reports:
        assert report["results"] == [expected]
        assert held_pid not in report["pids"]
        assert idle_pid not in report["pids"]
    child_pids = [report["pid"] for report in reports]
    assert len(set(child_pids)) == CHILDREN

    # The parent's connections are intact: the held one, and the idle one it
    # gets back from its pool.
    assert parent_results == {expected}
    assert held.scalar(PID) == held_pid
    assert held.scalar(WORK) == expected
    held.close()
    with app.app_context():
        assert db.session.scalar(PID) in {held_pid, idle_pid}
        assert db.session.scalar(WORK) == expected
        db.session.rollback()
    assert count_items(db, app) == 0


def test_forked_child_request_commits_on_its_own_connection(
    app: flask.Flask, db: SessionORM
) -> None:
    """A child forked after the parent's request left a connection in the pool
    serves a request that writes and commits on a connection of its own; the
    parent's pooled connection and the row stay fine.
    """

    @app.post("/<name>")
    def add(name: str) -> str:
        db.session.execute(
            sa.text("INSERT INTO orm_test_item (name) VALUES (:n)"), {"n": name}
        )
        return str(db.session.scalar(PID))

    client = app.test_client()
    parent_pid = int(client.post("/parent").data)
    child = fork()
    if child == 0:
        status = 1
        try:
            response = client.post("/child")
            if response.status_code != 200:
                status = 2
            elif int(response.data) == parent_pid:
                status = 3
            else:
                status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    # 3: the child used the parent's pooled connection.
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(client.post("/parent-again").data) == parent_pid
    assert count_items(db, app) == 3
