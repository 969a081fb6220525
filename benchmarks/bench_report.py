"""Turn the raw results of ``run.py`` into tables (Markdown and reST) and a chart."""

from __future__ import annotations

import math
import statistics
import typing as t
from pathlib import Path

OURS = "flask-session-orm"
HAND = "hand-written"
BARE = "flask-only"
FSA = "flask-sqlalchemy"
LITE = "flask-sqlalchemy-lite"
PRE_PING = "flask-session-orm (pool_pre_ping=True)"
FSA_COMMIT = "flask-sqlalchemy (commit reads)"
TEARDOWN = "flask-only (one teardown)"
#: The suffix of a variant as configured by default (no engine options).
DEFAULTS = " (defaults)"
VARIANTS = (BARE, HAND, FSA, LITE, OURS)
#: The variants with a database, which have a "(defaults)" row too.
DATABASE_VARIANTS = VARIANTS[1:]
DEFAULT_VARIANTS = tuple(v + DEFAULTS for v in DATABASE_VARIANTS)
#: Variants measured beside the main ones, for a note or a table of their own.
EXTRA = (PRE_PING, FSA_COMMIT, TEARDOWN, *DEFAULT_VARIANTS)
SCENARIOS = ("noop", "read", "write", "read-many")
READS = ("read", "read-many")
BACKEND_NAMES = {"sqlite": "SQLite (file)", "postgresql": "PostgreSQL"}
MB = 1024 * 1024

Row = list[str]


class Table:
    """A titled table with notes under it."""

    def __init__(self, title: str, header: Row, rows: list[Row], notes: Row) -> None:
        self.title = title
        self.header = header
        self.rows = rows
        self.notes = notes


def paired_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median of ``a[i] / b[i]`` over the rounds, with a 95% confidence interval.

    Both lists come from the same rounds, so each pair was measured moments
    apart and their ratio cancels most of what the rest of the machine did.
    The interval is the distribution-free one for a median: the order
    statistics around the middle rank, +-0.98 * sqrt(n) ranks.
    """
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    n = len(ratios)
    spread = 0.98 * math.sqrt(n)
    low = max(0, math.floor(n / 2 - spread))
    high = min(n - 1, math.ceil(n / 2 + spread) - 1)
    return statistics.median(ratios), ratios[low], ratios[high]


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _status(ratio: float, low: float, high: float, limit: float) -> str:
    """Met, missed, or too close to tell at this noise."""
    if high <= limit:
        return "met"
    if low > limit:
        return "**missed**"
    side = "met" if ratio <= limit else "missed"
    return f"≈ {side}: CI crosses {limit:g}"


def _us(cell: dict[str, list[float]]) -> str:
    return f"{statistics.median(cell['wall']):,.1f}"


def _ratio(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    return paired_ratio(a["wall"], b["wall"])[0]


def _compare(
    a: dict[str, list[float]], b: dict[str, list[float]], limit: float
) -> tuple[str, str]:
    """The measured text (wall-clock ratio, its interval, the CPU-time ratio)
    and the status against ``limit``.
    """
    ratio, low, high = paired_ratio(a["wall"], b["wall"])
    cpu = paired_ratio(a["cpu"], b["cpu"])[0]
    text = f"{ratio:.3f} (95% CI {low:.3f}-{high:.3f}; CPU time {cpu:.3f})"
    return text, _status(ratio, low, high, limit)


class Report:
    """The tables of one run."""

    def __init__(self, results: dict[str, t.Any]) -> None:
        self.r = results
        self.v = results["versions"]
        #: (target, where, measured, status) rows of the summary.
        self.targets: list[tuple[str, str, str, str]] = []
        self.tables: list[Table] = []
        if "inprocess" in results:
            for backend, data in results["inprocess"].items():
                self.tables.append(self._inprocess(backend, data))
                if OURS + DEFAULTS in data.get("read", {}):
                    self.tables.append(self._inprocess_defaults(backend, data))
        if "server" in results:
            self.tables.append(self._server(results["server"]))
        if results.get("pgbouncer"):
            self.tables.append(self._pgbouncer(results["pgbouncer"]))
        if "scale" in results:
            self.tables.append(self._scale(results["scale"]))
        if "init_app" in results:
            self.tables.append(self._init_app(results["init_app"]))
        if "rss" in results:
            self.tables.append(self._rss(results["rss"]))
        self.tables.insert(0, self._summary())

    def _target(
        self,
        target: str,
        where: str,
        ours: dict[str, list[float]],
        other: dict[str, list[float]],
    ) -> None:
        limit = 1.0 if "as fast as" in target else 1.03 if "3%" in target else 1.05
        self.targets.append((target, where, *_compare(ours, other, limit)))

    def _label(self, variant: str) -> str:
        version = self.v.get(variant, "")
        if variant in (FSA, LITE) and version:
            return f"{variant} {version}"
        return variant

    # -- tables ----------------------------------------------------------------

    def _inprocess(self, backend: str, data: dict[str, t.Any]) -> Table:
        name = BACKEND_NAMES.get(backend, backend)
        header = ["scenario", *[self._label(v) for v in VARIANTS]]
        rows = []
        for scenario in SCENARIOS:
            cells = data[scenario]
            base = BARE if scenario == "noop" else HAND
            row = [scenario]
            for v in VARIANTS:
                if v not in cells:
                    row.append("—")
                    continue
                row.append(f"{_us(cells[v])} ({_ratio(cells[v], cells[base]):.2f})")
            rows.append(row)
            ours = cells[OURS]
            if scenario == "noop":
                self._target("noop within 3% of flask-only", name, ours, cells[BARE])
                continue
            self._target(
                f"{scenario} within 5% of hand-written", name, ours, cells[HAND]
            )
            for peer in (FSA, LITE):
                self._target(
                    f"{scenario} at least as fast as {peer}", name, ours, cells[peer]
                )
            if FSA_COMMIT in cells:
                self._target(
                    f"{scenario} at least as fast as {FSA} committing it too"
                    " (same SQL; context, not a target)",
                    name,
                    ours,
                    cells[FSA_COMMIT],
                )
        notes = [
            "Median microseconds per request over the rounds; in brackets the"
            " median of the per-round ratios to hand-written (to flask-only for"
            " noop).",
        ]
        noop = data["noop"]
        if TEARDOWN in noop:
            bare = noop[BARE]
            notes.append(
                "noop: Flask alone with one empty teardown_request function costs"
                f" {_us(noop[TEARDOWN])} µs ({_ratio(noop[TEARDOWN], bare):.3f} of"
                " flask-only), flask-session-orm"
                f" {_ratio(noop[OURS], noop[TEARDOWN]):.3f} of that:"
                " flask-session-orm registers no hook, it wraps four methods"
                " of the app (one Python call each for a request that does not"
                " use the database)."
            )
        sql = []
        for scenario in SCENARIOS[1:]:
            groups: dict[str, list[str]] = {}
            for v, cell in data[scenario].items():
                if v not in EXTRA:
                    groups.setdefault(cell["sql"], []).append(v)
            sql.append(
                f"{scenario}: "
                + "; ".join(f"{', '.join(vs)}: {text}" for text, vs in groups.items())
            )
        notes.append(
            "SQL per request (counted once before timing; none for noop): "
            + ". ".join(sql)
            + ". The peers never commit a read: their session ends with a"
            " rollback, one round trip like the commit."
        )
        if FSA_COMMIT in data.get("read", {}):
            parts = []
            for scenario in READS:
                cells = data[scenario]
                parts.append(
                    f"{scenario} {_us(cells[FSA_COMMIT])} µs"
                    f" ({_ratio(cells[FSA_COMMIT], cells[HAND]):.2f} of"
                    " hand-written)"
                )
            notes.append(
                "flask-session-orm commits every successful request, reads"
                " included, because it cannot tell that a transaction wrote"
                " nothing (a Core statement, a function called in a SELECT,"
                " a raw driver cursor). Flask-SQLAlchemy with its read views"
                " committing too, the same SQL: " + "; ".join(parts) + "."
            )
        if backend != "sqlite":
            notes.append(
                "Every variant gets the same engine options, pool_pre_ping=False:"
                " no variant pings (flask-session-orm's default, a ping of"
                " connections idle for over SESSION_ORM_PING_IDLE_AFTER, is in"
                " the next table)."
            )
        else:
            notes.append(
                "Every variant gets the same engine options, pool_pre_ping=False"
                " (which is every variant's default on SQLite)."
            )
        if backend == "sqlite":
            notes.append(
                "The database file is in a temporary directory on this machine's"
                " disk; write commits include SQLite's fsync."
            )
        return Table(f"In-process WSGI calls, {name}", header, rows, notes)

    def _inprocess_defaults(self, backend: str, data: dict[str, t.Any]) -> Table:
        """The variants as their users get them: no engine options at all."""
        name = BACKEND_NAMES.get(backend, backend)
        header = ["scenario", *[self._label(v) for v in DATABASE_VARIANTS]]
        hand = HAND + DEFAULTS
        rows = []
        for scenario in SCENARIOS:
            cells = data[scenario]
            base = cells[BARE] if scenario == "noop" else cells[hand]
            row = [scenario]
            for v in DATABASE_VARIANTS:
                cell = cells.get(v + DEFAULTS)
                if cell is None:
                    row.append("—")
                else:
                    row.append(f"{_us(cell)} ({_ratio(cell, base):.2f})")
            rows.append(row)
            if scenario == "noop" or backend == "sqlite":
                continue
            ours = cells[OURS + DEFAULTS]
            self._target(
                f"{scenario} within 3% of hand-written, both as configured by default",
                name,
                ours,
                cells[hand],
            )
            self._target(
                f"{scenario} at least as fast as {FSA}, both as configured by default",
                name,
                ours,
                cells[FSA + DEFAULTS],
            )
        notes = [
            "Each variant as its users get it: no engine options given, so each"
            " applies its own defaults. Median microseconds per request; in"
            " brackets the median of the per-round ratios to hand-written with"
            " its defaults (to flask-only for noop). Measured in the same rounds"
            " as the table above.",
        ]
        if backend == "sqlite":
            notes.append(
                "On SQLite no variant pings by default, so these rows do the"
                " same work as the equal-options ones."
            )
        else:
            text = (
                "On a network database flask-session-orm pings a pooled"
                " connection at checkout only when it sat idle for longer than"
                " SESSION_ORM_PING_IDLE_AFTER (1 s): in this benchmark, where"
                " requests follow each other, it never pings, and what its"
                " default adds is two pool event listeners (check-in time"
                " noted, idle time checked). The peers and hand-written never"
                " ping by default."
            )
            read = data["read"]
            if PRE_PING in read:
                ratio = _ratio(read[PRE_PING], read[hand])
                text += (
                    " With pool_pre_ping=True (a ping at every checkout, its"
                    f" default before), its read costs {_us(read[PRE_PING])} µs"
                    f" ({ratio:.2f} of hand-written)."
                )
            notes.append(text)
        return Table(
            f"In-process WSGI calls, {name}, as configured by default",
            header,
            rows,
            notes,
        )

    def _server(self, data: dict[str, t.Any]) -> Table:
        header = ["scenario", *[self._label(v) for v in VARIANTS]]
        rows = []
        for key, cells in data.items():
            if key == "generator":
                continue
            for suffix in ("", DEFAULTS):
                if suffix and OURS + suffix not in cells:
                    continue
                row = [key + (", as configured by default" if suffix else "")]
                for v in VARIANTS:
                    run = cells.get(v + suffix)
                    if run is None:
                        row.append("—")
                    else:
                        row.append(f"{run['rps']:,.0f} /s, p99 {run['p99_ms']:.2f} ms")
                rows.append(row)
            if "postgresql" in key and key.startswith("read"):
                for suffix in ("", DEFAULTS):
                    ours, fsa = cells.get(OURS + suffix), cells.get(FSA + suffix)
                    if ours is None or fsa is None:
                        continue
                    ratio = ours["rps"] / fsa["rps"]
                    status = (
                        "met"
                        if ratio >= 1.0
                        else "≈ missed: within 3%"
                        if ratio >= 0.97
                        else "**missed**"
                    )
                    which = ", as configured by default" if suffix else ""
                    self.targets.append(
                        (
                            f"gunicorn requests/s at least {FSA}'s{which}",
                            key,
                            f"{ours['rps']:,.0f} against {fsa['rps']:,.0f} /s"
                            f" ({ratio:.3f}; one median of"
                            f" {self.r['settings']['server_rounds']} rounds)",
                            status,
                        )
                    )
        notes = [
            f"gunicorn {self.v.get('gunicorn', '')}, 1 worker with 4 threads"
            f" (gthread) on 127.0.0.1; load by {data['generator']} on the same"
            " machine. Median of the rounds. Requests per second and 99th"
            " percentile latency. Load generator, server and database share"
            " the two cores, so variants that differ by less than about 10%"
            " trade places from one run to the next; the in-process tables"
            " measure the per-request cost.",
        ]
        return Table("Real server (gunicorn, loopback)", header, rows, notes)

    def _pgbouncer(self, data: dict[str, t.Any]) -> Table:
        cells = data["read"]
        base = cells[HAND]
        header = ["read, one row by primary key", "µs per request", "ratio"]
        rows = [
            [label, _us(cell), f"{_ratio(cell, base):.2f}"]
            for label, cell in cells.items()
        ]
        ours = cells[f"{OURS}, its defaults"]
        self._target(
            "read through PgBouncer within 3% of hand-written, ours with its defaults",
            "PgBouncer",
            ours,
            base,
        )
        notes = [
            f"PgBouncer {data['version']} in transaction pooling mode on"
            " 127.0.0.1, in front of the same PostgreSQL; psycopg 3 with"
            " prepare_threshold=None (required before PgBouncer 1.21). Ratios"
            " to hand-written through PgBouncer with the app's pool"
            " (QueuePool). NullPool opens a connection to PgBouncer for every"
            " request; the direct rows skip PgBouncer.",
        ]
        return Table("Through PgBouncer (transaction mode)", header, rows, notes)

    def _scale(self, data: dict[str, t.Any]) -> Table:
        columns = [
            (backend, scenario) for backend in data for scenario in data[backend]
        ]
        header = ["flask-session-orm with"] + [
            f"{scenario} ({BACKEND_NAMES.get(backend, backend)})"
            for backend, scenario in columns
        ]
        labels = list(next(iter(next(iter(data.values())).values())))
        base = labels[0]
        rows = []
        for label in labels:
            row = [label]
            for backend, scenario in columns:
                cells = data[backend][scenario]
                ratio = _ratio(cells[label], cells[base])
                row.append(f"{_us(cells[label])} ({ratio:.2f})")
            rows.append(row)
        for backend, scenario in columns:
            cells = data[backend][scenario]
            where = f"{scenario}, {BACKEND_NAMES.get(backend, backend)}"
            for kind in ("engines", "models"):
                labelled = [label for label in labels[1:] if label.endswith(kind)]
                worst = max(labelled, key=lambda x: _ratio(cells[x], cells[base]))
                text, status = _compare(cells[worst], cells[base], 1.05)
                self.targets.append(
                    (
                        f"flat within 5% from 1 to {labelled[-1]}",
                        where,
                        f"worst: {worst}, {text}",
                        status,
                    )
                )
        notes = [
            "Median microseconds per request; in brackets the ratio to 1 engine"
            " and 1 model. Extra engines are configured but unused by the"
            " request; extra models are mapped and spread over the engines.",
        ]
        return Table("Scale: engines and mapped models", header, rows, notes)

    def _init_app(self, data: dict[str, t.Any]) -> Table:
        header = ["backend", "median", "slowest", "first (cold)", "connections"]
        rows = []
        for backend, d in data.items():
            name = BACKEND_NAMES.get(backend, backend)
            rows.append(
                [
                    name,
                    f"{d['median_ms']:.2f} ms",
                    f"{d['max_ms']:.2f} ms",
                    f"{d['first_ms']:.2f} ms",
                    f"{d['connections']} pool connects; {d['physical']}",
                ]
            )
            self.targets.append(
                (
                    "init_app with 20 engines < 50 ms, no connection",
                    name,
                    f"{d['median_ms']:.2f} ms (slowest {d['max_ms']:.2f} ms),"
                    f" {d['connections']} connections",
                    _met(
                        d["median_ms"] < 50
                        and d["connections"] == 0
                        and not d["opened"]
                    ),
                )
            )
        notes = [
            f"{self.r['settings']['init_repeats']} repeats after a first, cold one"
            " (which imports the dialect). Connections are counted by a listener"
            " on every pool, and checked on the server (sessions with the"
            " benchmark's application_name) or on disk (no SQLite file created).",
        ]
        return Table("init_app with 20 engines", header, rows, notes)

    def _rss(self, data: dict[str, t.Any]) -> Table:
        first, total = self.r["settings"]["rss_requests"]
        header = [
            "backend",
            "variant",
            f"RSS after {first:,}",
            f"RSS after {total:,}",
            "growth",
        ]
        rows = []
        for backend, variants in data.items():
            name = BACKEND_NAMES.get(backend, backend)
            for v, d in variants.items():
                rows.append(
                    [
                        name,
                        v,
                        f"{d['before'] / MB:.1f} MB",
                        f"{d['after'] / MB:.1f} MB",
                        f"{d['growth'] / MB:+.2f} MB",
                    ]
                )
            ours = variants[OURS]
            self.targets.append(
                (
                    f"RSS growth {first:,} → {total:,} requests < 2 MB",
                    name,
                    f"{ours['growth'] / MB:+.2f} MB",
                    _met(ours["growth"] < 2 * MB),
                )
            )
        notes = [
            "The read scenario in a fresh process per row, RSS from"
            " /proc/self/status after a full garbage collection; hand-written is"
            " the reference for what Flask and SQLAlchemy themselves keep.",
        ]
        if total < 100_000:
            notes.append(
                "Quick run: fewer requests than the target's 100,000; not conclusive."
            )
        return Table("Memory (RSS) over many requests", header, rows, notes)

    def _summary(self) -> Table:
        rows = [list(target) for target in self.targets]
        notes = [
            "Ratios are flask-session-orm's wall-clock time over the other's:"
            " the median of the per-round ratios with its 95% confidence"
            " interval, and the same median in CPU time of the benchmark process"
            " (which leaves out the database server and the other programs on"
            " the machine). A target is met when the whole interval is within"
            ' it, missed when the whole interval is outside; "≈" when the'
            " interval crosses the limit (this machine's noise is too large to"
            " tell; the median decides the word after it).",
        ]
        return Table("Targets", ["target", "where", "measured", "status"], rows, notes)

    # -- rendering -------------------------------------------------------------

    def preamble(self) -> list[str]:
        v = self.r["versions"]
        m = self.r["machine"]
        lines = [
            f"Measured {self.r['date']} on {m['cpu']}, {m['cores']} cores"
            f" ({m['os']}), shared with other work: load average"
            f" {self.r['load_before'][0]:.2f} before, {self.r['load_after'][0]:.2f}"
            f" after; the run took {self.r['seconds']:.0f} s.",
            "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
            f"Method: in-process WSGI calls with a prebuilt environ, warmed up;"
            f" scenario by scenario, {self.r['settings']['rounds']} rounds with the"
            " variants in a new random order each round, batches of about"
            f" {self.r['settings']['batch_seconds'] * 1000:.0f} ms.",
        ]
        if self.r["quick"]:
            lines.append("**Quick run**: few rounds; a smoke test, not a result.")
        lines.extend(self.r["notes"])
        return lines

    def markdown(self) -> str:
        out = ["# flask-session-orm benchmarks", ""]
        out += [f"{line}\n" for line in self.preamble()]
        for table in self.tables:
            out += [f"## {table.title}", ""]
            out.append("| " + " | ".join(table.header) + " |")
            out.append("|" + "|".join("---" for _ in table.header) + "|")
            out += ["| " + " | ".join(row) + " |" for row in table.rows]
            out.append("")
            out += [f"{note}\n" for note in table.notes]
        return "\n".join(out).rstrip() + "\n"

    def rst(self) -> str:
        out = [
            ".. This file is written by benchmarks/run.py; do not edit it.",
            "",
        ]
        out += [f"{_rst_text(line)}\n" for line in self.preamble()]
        for table in self.tables:
            out += [table.title, "~" * len(table.title), ""]
            out += [".. list-table::", "   :header-rows: 1", ""]
            for row in [table.header, *table.rows]:
                out.append(f"   * - {_rst_text(row[0]) or '..'}")
                out += [f"     - {_rst_text(cell)}" for cell in row[1:]]
            out.append("")
            out += [f"{_rst_text(note)}\n" for note in table.notes]
        return "\n".join(out).rstrip() + "\n"


def _rst_text(text: str) -> str:
    return text.replace("*", "\\*").replace("\\*\\*", "**").replace("_", "\\_")


def chart(results: dict[str, t.Any], path: Path) -> None:
    """Per backend: microseconds per request (top) and the ratio to
    hand-written, to flask-only for noop (bottom), by scenario and variant.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = results["inprocess"]
    backends = list(data)
    fig, axes = plt.subplots(
        2,
        len(backends),
        figsize=(6.5 * len(backends), 8.0),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    colors = {
        BARE: "#9e9e9e",
        HAND: "#4c72b0",
        FSA: "#dd8452",
        LITE: "#c44e52",
        OURS: "#55a868",
    }
    width = 0.16
    top = 1.3
    for column, backend in enumerate(backends):
        cost, ratio = axes[0][column], axes[1][column]
        for i, v in enumerate(VARIANTS):
            xs, us, ratios = [], [], []
            for j, scenario in enumerate(SCENARIOS):
                cells = data[backend][scenario]
                if v in cells:
                    base = cells[BARE if scenario == "noop" else HAND]
                    xs.append(j + (i - 2) * width)
                    us.append(statistics.median(cells[v]["wall"]))
                    ratios.append(_ratio(cells[v], base))
            bars = cost.bar(xs, us, width, label=v, color=colors[v])
            cost.bar_label(bars, fmt="%.0f", fontsize=6, padding=1, rotation=90)
            bars = ratio.bar(xs, [min(r, top) for r in ratios], width, color=colors[v])
            ratio.bar_label(
                bars,
                labels=[f"{r:.2f}" for r in ratios],
                fontsize=6,
                padding=1,
                rotation=90,
            )
        name = BACKEND_NAMES.get(backend, backend)
        cost.set_yscale("log")
        cost.set_xticks(range(len(SCENARIOS)), SCENARIOS)
        cost.set_ylabel("µs per request (median, log scale)")
        cost.set_title(name)
        cost.grid(axis="y", which="both", alpha=0.3)
        ratio.set_ylim(0.8, top + 0.08)
        ratio.axhline(1.0, color="black", linewidth=0.8)
        ratio.axhline(1.05, color="black", linewidth=0.6, linestyle="--")
        ratio.set_xticks(range(len(SCENARIOS)), SCENARIOS)
        ratio.set_ylabel("ratio to hand-written\n(noop: to flask-only)")
        ratio.set_title(f"{name}: ratio (bars cut at {top}; dashed: 1.05)", fontsize=9)
        ratio.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="upper left")
    v = results["versions"]
    fig.suptitle(
        f"flask-session-orm and peers, in-process cost per request"
        f" ({results['date']}; Python {v['Python']}, Flask {v['flask']},"
        f" SQLAlchemy {v['sqlalchemy']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
