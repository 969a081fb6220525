"""The verdict of a reliability run catches each kind of broken invariant.

These feed :func:`reliability_driver.analyse` made-up results, so they need no
server: they make sure the load tests can fail.
"""

from __future__ import annotations

import typing as t

import pytest
from reliability_driver import Faults
from reliability_driver import Kill
from reliability_driver import Load
from reliability_driver import Restart
from reliability_driver import Result
from reliability_driver import Summary
from reliability_driver import analyse
from reliability_driver import logged_exceptions

LOG = """\
[2026-01-01 00:00:00,000] ERROR in app: Exception on /rel/raise/k [POST]
Traceback (most recent call last):
  File "app.py", line 1, in raise_
reliability_app.DeliberateError: k

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "base.py", line 1, in _rollback_impl
psycopg.OperationalError: consuming input failed: server closed the connection
\tThis probably means the server terminated abnormally

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "session.py", line 1, in rollback
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) consuming input failed
[SQL: SELECT 1
FROM t]
[2026-01-01 00:00:01,000] ERROR in app: Exception on /rel/write/k [POST]
Traceback (most recent call last):
  File "app.py", line 1, in write
KeyError: 'x'
"""


def test_logged_exceptions_counts_the_last_of_each_chain() -> None:
    """A chained traceback counts once, by the exception that ended it."""
    assert logged_exceptions(LOG) == {
        "sqlalchemy.exc.OperationalError": 1,
        "KeyError": 1,
    }


def make_load(*results: Result) -> Load:
    load = Load(0, requests=len(results), concurrency=1, run_id="r", deadline=1)
    load.results = list(results)
    load.started, load.finished = 0.0, 10.0
    return load


def verdict(
    load: Load,
    stored: t.Iterable[str],
    faults: Faults | None = None,
    **overrides: t.Any,
) -> Summary:
    arguments: dict[str, t.Any] = {
        "faults": faults,
        "peak_connections": 4,
        "connection_limit": 8,
        "checked_out_at_end": 0,
        "log": "",
    }
    arguments.update(overrides)
    return analyse("test", load, stored, **arguments)


def ok(kind: str, key: str, start: float = 1.0, **fields: t.Any) -> Result:
    status = {"read": 200, "write": 201, "raise": 500, "conflict": 409, "dup": 409}
    values: dict[str, t.Any] = {"status": status[kind], "end": start + 0.01}
    values["error"] = {"raise": "DeliberateError", "dup": "IntegrityError"}.get(
        kind, ""
    )
    if kind == "read":
        values["found"] = True
    values.update(fields)
    return Result(kind=kind, key=key, start=start, **values)


def test_a_clean_run_breaks_nothing() -> None:
    """Results that match the stored rows give no violation."""
    load = make_load(
        ok("write", "r-0"), ok("raise", "r-1"), ok("conflict", "r-2"), ok("read", "r-0")
    )
    summary = verdict(load, ["r-0"])
    assert summary.violations == []
    assert summary.acknowledged == 1


@pytest.mark.parametrize(
    ("results", "stored", "expected"),
    [
        ([ok("write", "r-0")], [], "acknowledged (201) but is not stored"),
        ([ok("conflict", "r-0")], ["r-0"], "'conflict' request (409) is stored"),
        ([ok("raise", "r-0")], ["r-0"], "'raise' request (500) is stored"),
        ([], ["r-9"], "was never written"),
        (
            [ok("write", "r-0", status=500, error="OperationalError")],
            ["r-0"],
            "failed with 500 before COMMIT but is stored",
        ),
        ([ok("read", "r-0", found=False)], [], "read as missing"),
        ([ok("dup", "r-0", status=201, error="")], [], "duplicate write"),
        ([ok("write", "r-0", status=None, error="ConnectionResetError")], [], "HTTP"),
        (
            [ok("write", "r-0", status=500, error="OperationalError")],
            [],
            "outside any fault window",
        ),
    ],
    ids=[
        "missing",
        "phantom-409",
        "phantom-500",
        "unknown-key",
        "phantom-before-commit",
        "stale-read",
        "duplicate-acknowledged",
        "transport",
        "unexplained-failure",
    ],
)
def test_each_broken_invariant_is_reported(
    results: list[Result], stored: list[str], expected: str
) -> None:
    """Every way of losing, inventing or mis-answering data is a violation."""
    summary = verdict(make_load(*results), stored)
    assert any(expected in v for v in summary.violations), summary.violations


def test_a_row_stored_by_an_interrupted_commit_is_allowed() -> None:
    """A 500 raised after COMMIT was sent may have stored its row."""
    failed = ok("write", "r-0", status=500, error="OperationalError")
    failed.commit_started = True
    faults = Faults("postgresql://x", "app")
    faults.kills.append(Kill(start=0.9, end=1.0, terminated=1))
    summary = verdict(make_load(failed), ["r-0"], faults)
    assert summary.violations == []
    assert summary.five_xx_stored_after_commit == 1


def test_more_failures_than_killed_backends_is_reported() -> None:
    """A kill may fail only the requests it interrupted: one per backend."""
    faults = Faults("postgresql://x", "app")
    faults.kills.append(Kill(start=1.0, end=1.0, terminated=1))
    failed = [
        ok("read", f"r-{n}", status=500, error="OperationalError") for n in range(2)
    ]
    summary = verdict(make_load(*failed), [], faults)
    assert any("more than the 1 backends" in v for v in summary.violations)


def test_slow_recovery_after_a_restart_is_reported() -> None:
    """The app must serve again within a second of PostgreSQL being back."""
    faults = Faults("postgresql://x", "app")
    faults.restart = Restart(start=1.0, down=1.1, back=2.0)
    late_failure = ok("read", "r-0", start=3.5, status=500, error="OperationalError")
    summary = verdict(
        make_load(late_failure, ok("write", "r-1", start=4.0)), ["r-1"], faults
    )
    assert any("outside any fault window" in v for v in summary.violations)
    assert any("served again 2.01 s after" in v for v in summary.violations)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"peak_connections": 9}, "more than the pools allow (8)"),
        ({"checked_out_at_end": 1}, "still checked out"),
        ({"log": LOG}, "unexpected tracebacks"),
    ],
    ids=["connections", "checked-out", "log"],
)
def test_resource_and_log_violations_are_reported(
    overrides: dict[str, t.Any], expected: str
) -> None:
    """Too many connections, a leaked checkout or an unexplained traceback fail
    the run."""
    summary = verdict(make_load(ok("write", "r-0")), ["r-0"], **overrides)
    assert any(expected in v for v in summary.violations), summary.violations
