"""Options and fixtures of the reliability run.

The short run is part of the default test run. The long one (20,000 requests at
concurrency 32 with faults, including one PostgreSQL restart) runs with
``pytest tests/reliability --long`` or with ``RELIABILITY_LONG=1`` in the
environment. pytest honours ``--long`` only when this directory is named on the
command line (this conftest is then an initial one), or when the repository's
``tests/conftest.py`` adds the same option; the environment variable always works.
"""

from __future__ import annotations

import contextlib
import os
import typing as t

import pytest
from reliability_driver import SUMMARIES


def pytest_addoption(parser: pytest.Parser) -> None:
    # tests/conftest.py may add the same option, so that it works from the root.
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--long",
            action="store_true",
            default=False,
            help="Run the long reliability run (restarts PostgreSQL once).",
        )


@pytest.fixture(scope="session")
def long_run(pytestconfig: pytest.Config) -> bool:
    """Whether to run the long version."""
    option = bool(pytestconfig.getoption("--long", default=False))
    return option or os.environ.get("RELIABILITY_LONG") == "1"


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL server the run uses, or skip."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            "TEST_POSTGRES_URL is not set: the reliability run needs a PostgreSQL"
            " server"
        )
    return url


def pytest_terminal_summary(terminalreporter: t.Any) -> None:
    if SUMMARIES:
        terminalreporter.section("reliability")
        for table in SUMMARIES:
            terminalreporter.write_line(table)
