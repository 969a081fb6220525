"""A stand-in for psql, mariadb, mysql and sqlite3 that records how it was started.

The tests place small executables named like the real clients first on PATH; each
calls :func:`main`, which appends one JSON line to the file named by
``CLI_RECORD``: the program name, its arguments, its own ``/proc/self/cmdline``,
its environment and whether it inherited an ignored SIGINT. It then exits with
the status in ``CLI_EXIT`` (default 0). ``--version`` prints ``CLI_VERSION``.
With ``CLI_SEND_SIGINT`` set it sends SIGINT to its whole process group, as a
Ctrl-C in a terminal does, and exits with that variable's value after receiving it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import typing as t


def _cmdline() -> list[str] | None:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return [part.decode() for part in f.read().split(b"\0") if part]
    except OSError:
        return None


def main() -> None:
    """Record this invocation, then behave as the environment asks."""
    program = os.path.basename(sys.argv[0])
    if sys.argv[1:] == ["--version"]:
        print(os.environ.get("CLI_VERSION", f"{program} stand-in"))
        return
    received: list[int] = []
    sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    record: dict[str, t.Any] = {
        "argv": [program, *sys.argv[1:]],
        "cmdline": _cmdline(),
        "env": dict(os.environ),
        "sigint_ignored": sigint_ignored,
    }
    with open(os.environ["CLI_RECORD"], "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    send = os.environ.get("CLI_SEND_SIGINT")
    if send:
        os.killpg(os.getpgrp(), signal.SIGINT)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        # Give the parent time to die of the signal, if it were going to.
        time.sleep(0.2)
        sys.exit(int(send) if received else 99)
    sys.exit(int(os.environ.get("CLI_EXIT", "0")))
