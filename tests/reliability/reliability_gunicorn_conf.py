"""gunicorn hooks for the reliability run (passed with ``--config``)."""

from __future__ import annotations

import typing as t


def worker_exit(server: t.Any, worker: t.Any) -> None:
    # Runs in the worker process after its last request: the pool counters it
    # reports are what a leaked connection would leave checked out.
    import reliability_app

    reliability_app.write_report(worker.pid)
