"""Find where one variant's request time goes, or what it does more than another.

    python benchmarks/profile_request.py flask-session-orm read
    python benchmarks/profile_request.py flask-session-orm read --against hand-written

The first form runs cProfile over many requests and prints the functions with
the most own time per request. The second counts the Python bytecode
instructions each request executes, by function, in both variants, and prints
the largest differences: unlike timings, the counts do not depend on what else
the machine is doing, so a change of a few instructions shows up reliably.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import re
import sys
import tempfile
import types
import typing as t
from pathlib import Path

import bench_apps
import run

FunctionKey = tuple[str, int, str]


def _short(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)", filename)
    if stdlib:
        return f"stdlib/{stdlib.group(1)}"
    return os.path.relpath(filename)


def opcodes_per_request(call: run.Call, requests: int) -> dict[FunctionKey, float]:
    """Python instructions executed per request, by function."""
    counts: collections.Counter[FunctionKey] = collections.Counter()

    def tracer(frame: types.FrameType, event: str, arg: t.Any) -> t.Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(_short(code.co_filename), code.co_firstlineno, code.co_name)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(requests):
            call()
    finally:
        sys.settrace(None)
    return {key: count / requests for key, count in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    variants = sorted(bench_apps.FACTORIES) + [
        v + bench_apps.DEFAULTS for v in bench_apps.DATABASE_VARIANTS
    ]
    parser.add_argument("variant", choices=variants)
    parser.add_argument("scenario", choices=bench_apps.SCENARIOS)
    parser.add_argument("--against", choices=variants)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="profile on PostgreSQL instead of a SQLite file",
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="flask-session-orm-profile-"))
    url, schema = f"sqlite:///{workdir / 'bench.db'}", None
    if args.postgres:
        url, schema = run.own_schema(args.postgres)
    bench_apps.prepare_database(url)
    method, path = bench_apps.ROUTES[args.scenario]

    def caller(variant: str) -> run.Call:
        built = bench_apps.build(
            variant, url, run.ENGINE_OPTIONS, str(workdir / "instance")
        )
        call = run.wsgi_caller(built.app, method, path)
        run.run_batch(call, 200)
        return call

    try:
        if args.against is None:
            call = caller(args.variant)
            profile = cProfile.Profile()
            profile.enable()
            run.run_batch(call, args.requests)
            profile.disable()
            stats = pstats.Stats(profile)
            total = t.cast(int, stats.total_calls)  # type: ignore[attr-defined]
            print(f"{args.variant} {args.scenario}: {total / args.requests:.0f}")
            print("function calls per request; own time per request (with the")
            print("profiler's overhead, so compare rows, not absolute values):")
            stats.sort_stats("tottime").print_stats(args.top)
            return 0
        mine = opcodes_per_request(caller(args.variant), 50)
        theirs = opcodes_per_request(caller(args.against), 50)
        print(
            f"Python instructions per {args.scenario} request:"
            f" {args.variant} {sum(mine.values()):.0f},"
            f" {args.against} {sum(theirs.values()):.0f}."
        )
        print(f"Largest differences ({args.variant} minus {args.against}):")
        diffs = [
            (mine.get(key, 0.0) - theirs.get(key, 0.0), key)
            for key in set(mine) | set(theirs)
        ]
        diffs.sort(key=lambda item: -abs(item[0]))
        for diff, (filename, line, name) in diffs[: args.top]:
            if diff:
                print(f"{diff:+8.1f}  {filename}:{line} {name}")
    finally:
        if schema is not None:
            run.drop_schema(args.postgres, schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
