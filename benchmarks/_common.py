"""
Shared helpers for the benchmark scripts: queries, tables, machine facts, RESULTS.md.

The benchmark scripts import this as ``_common`` (their own directory is ``sys.path[0]``
when run as scripts; the harness test puts it there with ``monkeypatch.syspath_prepend``).
benchmarks/ is deliberately not a package: it is a folder of scripts, and a top-level
``benchmarks`` package would be importable from (and clash in) any environment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import re
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import closefunnel as cf

#: A fixed clock for the demo dataset, so relative ranges mean the same every run.
NOW = dt.datetime(2026, 11, 18, 15, 30, tzinfo=dt.UTC)
TOTALS_PATH = "/api/v1/report/funnel/opportunity/totals/"
RESULTS = Path(__file__).with_name("RESULTS.md")
#: Relative ranges used for distinct queries (all-time is the same set for every range).
RANGES = tuple(r for r in cf.RELATIVE_RANGES if r != "all-time")

Row = dict[str, Any]


def distinct_queries(
    pipelines: Sequence[str], users: Sequence[str], *, report_type: str = "active-stage-cohort"
) -> Iterator[cf.FunnelQuery]:
    """Every (user filter, pipeline, range) combination once: no two queries are equal."""
    scopes: list[tuple[str, ...]] = [(), *((u,) for u in users)]
    scopes += [tuple(pair) for pair in itertools.combinations(users, 2)]
    for scope, pipeline, rng in itertools.product(scopes, pipelines, RANGES):
        yield cf.FunnelQuery(pipeline=pipeline, type=report_type, report_range=rng, users=scope)  # type: ignore[arg-type]


def take_queries(pipelines: Sequence[str], users: Sequence[str], n: int) -> list[cf.FunnelQuery]:
    """*n* distinct queries (several pipelines, ranges and user filters, interleaved)."""
    queries = list(itertools.islice(distinct_queries(pipelines, users), n))
    if len(queries) < n:
        raise ValueError(f"only {len(queries)} distinct queries exist for this dataset")
    # Interleave so that any prefix has several pipelines, ranges and user filters.
    return [queries[i] for i in sorted(range(n), key=lambda i: (i * 7919) % n)]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.{digits}f}"
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table of *rows* (dicts), columns in first-seen order."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns) if columns else list(dict.fromkeys(k for row in rows for k in row))
    cells = [[fmt(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        out.append("| " + " | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(out) + "\n"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()} "
        f"({platform.system()} {platform.release()})"
    )


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; psutil elsewhere; else 0)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except ImportError:
            return 0


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def command_line() -> str:
    script = Path(sys.argv[0])
    shown = f"benchmarks/{script.name}" if script.parent.name == "benchmarks" else str(script)
    return " ".join(["python", shown, *sys.argv[1:]])


def record(name: str, title: str, body: str, *, command: str | None = None) -> None:
    """
    Replace benchmark *name*'s section of RESULTS.md (between its markers) with *body*,
    stamped with the command, the date and the machine.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = (
        f"Command: `{command or command_line()}`  \n"
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  \n"
        f"Machine: {machine()}\n"
    )
    section = f"{begin}\n### {title}\n\n{stamp}\n{body.rstrip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
