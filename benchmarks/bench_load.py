"""The real-server run: gunicorn (threads) on loopback, driven by a load generator.

``wrk`` is used when it is installed (Debian/Ubuntu: ``apt-get install wrk``);
otherwise a small Python generator with keep-alive connections takes its place.
Both are bounded in time and only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
#: gunicorn: one worker process, this many threads.
THREADS = 4
#: Concurrent keep-alive connections of the load generator.
CONNECTIONS = 4
#: The Python generator's hard limit on requests per run, whatever the duration.
MAX_REQUESTS = 200_000


class Server:
    """One gunicorn process serving one variant's app on a free loopback port."""

    def __init__(
        self,
        variant: str,
        url: str,
        engine_options: dict[str, t.Any],
        workdir: Path,
        label: str,
    ) -> None:
        self.port = _free_port()
        safe = re.sub(r"[^\w.-]+", "-", label).strip("-")
        self.log = workdir / f"gunicorn-{safe}.log"
        instance = workdir / f"instance-{safe}"
        env = dict(
            os.environ,
            BENCH_VARIANT=variant,
            BENCH_URL=url,
            BENCH_ENGINE_OPTIONS=json.dumps(engine_options),
            BENCH_INSTANCE_PATH=str(instance),
        )
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--bind",
            f"{HOST}:{self.port}",
            "--pythonpath",
            str(HERE),
            "--log-level",
            "warning",
            "--error-logfile",
            str(self.log),
            "bench_apps:from_env()",
        ]
        self._process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        """Wait until the server answers ``path`` with 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url(path), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"gunicorn did not answer {path} within {timeout:.0f} s; see {self.log}."
        )

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def generator_name() -> str:
    """Which load generator :func:`load` uses here."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return f"Python keep-alive generator ({CONNECTIONS} connections)"
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    version = (out.stdout + out.stderr).split()
    return f"wrk {version[1] if len(version) > 1 else ''} ({CONNECTIONS} connections)"


def load(url: str, seconds: float) -> dict[str, float]:
    """Drive ``url`` for ``seconds``: requests per second and p99 latency (ms)."""
    if shutil.which("wrk"):
        return _wrk(url, seconds)
    return _python_load(url, seconds)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if out.returncode != 0 or rps is None or p99 is None:
        raise RuntimeError(f"wrk failed on {url}:\n{text}{out.stderr}")
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    if failed or errors:
        raise RuntimeError(f"wrk saw failed requests on {url}:\n{text}")
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
    }


def _python_load(url: str, seconds: float) -> dict[str, float]:
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    if match is None or match.group(1) != HOST:
        raise ValueError(f"The load generator only drives {HOST}, not {url!r}.")
    port, path = int(match.group(2)), match.group(3)
    deadline = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    failures: list[str] = []
    budget = MAX_REQUESTS // CONNECTIONS

    def worker(out: list[float]) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            while len(out) < budget:
                start = time.perf_counter()
                if start >= deadline:
                    break
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                out.append(time.perf_counter() - start)
                if response.status != 200:
                    failures.append(f"status {response.status}")
                    break
        except OSError as e:
            failures.append(repr(e))
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"The load generator saw failures on {url}: {failures[:3]}")
    every = sorted(x for out in latencies for x in out)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
    return {"rps": len(every) / elapsed, "p99_ms": p99 * 1e3}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median requests/s and p99 over several runs."""
    return {
        "rps": statistics.median(run["rps"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
    }
