"""
Comparison latency: what does a base-vs-compared view cost over one report?

    python benchmarks/bench_compare.py [--reps 7] [--latency 0.2] [--jitter 0.1] [--record]

An emulator (no rate limit) answers every request after 200 +- 100 ms. For k = 0..4 compared
ranges, ``compare_totals(q, *compared[:k])`` (k = 0 is ``funnel_totals(q)``) is timed against
the same k + 1 requests made one after another (a client with ``max_concurrency=1``). Every
call uses a fresh query (single-flight would merge repeats); repetitions are interleaved
and the medians reported, with the ratio to the median of one report. "floor x" is the
same ratio for a perfect client: the median of the slowest of k + 1 latency draws over the
median of one (jitter alone makes waiting for 3 answers ~1.29x at 200 +- 100 ms). Each run
is repeated without jitter (200 ms flat), where the floor is 1.0 and the rest is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import time
from collections.abc import Sequence

from _common import NOW, Row, distinct_queries, median, record, table

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig

COMPARED = ("last-week", "last-month", "last-quarter", "last-year")


def floor(requests: int, latency: float, jitter: float) -> float:
    """
    The median time of *requests* concurrent requests to a server whose latency is uniform
    in ``latency +- jitter``: the median of the largest of *requests* draws. With jitter,
    waiting for 3 answers instead of 1 costs ~1.29x at 200 +- 100 ms whatever the client.
    """
    return latency - jitter + 2 * jitter * 0.5 ** (1 / requests)


async def _time(client: cf.Client, query: cf.FunnelQuery, k: int) -> float:
    started = time.perf_counter()
    if k == 0:
        await client.funnel_totals(query)
    else:
        comparison = await client.compare_totals(query, *COMPARED[:k])
        assert len(comparison.comparisons) == k
    return time.perf_counter() - started


async def _run(reps: int, max_k: int, latency: float, jitter: float, seed: int) -> list[Row]:
    config = EmulatorConfig(
        now=NOW, seed=seed, latency=latency, jitter=jitter, opportunities=3_000, users=12
    )
    async with Emulator(config) as emu:
        data = emu.dataset
        # Relative report ranges only pair with relative compared ranges; "this-*" and
        # "last-*" both do. A fresh query for every call.
        fresh = distinct_queries([p.id for p in data.pipelines], [u.id for u in data.users])
        samples: dict[tuple[str, int], list[float]] = {}
        rng = random.Random(seed)
        async with (
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, max_concurrency=8) as together,
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, max_concurrency=1) as serial,
        ):
            # Warm up connections and the emulator's report cache paths.
            await together.funnel_totals(next(fresh))
            await serial.funnel_totals(next(fresh))
            cells = [(mode, k) for k in range(max_k + 1) for mode in ("concurrent", "sequential")]
            for _ in range(reps):
                rng.shuffle(cells)  # interleaved, in a different order each round
                for mode, k in cells:
                    if mode == "sequential" and k == 0:
                        continue  # one report is one report
                    client = together if mode == "concurrent" else serial
                    elapsed = await _time(client, next(fresh), k)
                    samples.setdefault((mode, k), []).append(elapsed)
    one = median(samples[("concurrent", 0)])
    rows: list[Row] = []
    for k in range(max_k + 1):
        row: Row = {
            "reports": f"base + {k} compared" if k else "one report",
            "jitter ms": 1000 * jitter,
        }
        conc = median(samples[("concurrent", k)])
        row["compare_totals ms"] = 1000 * conc
        row["x one report"] = conc / one
        row["floor x"] = floor(k + 1, latency, jitter) / floor(1, latency, jitter)
        if k:
            seq = median(samples[("sequential", k)])
            row["one after another ms"] = 1000 * seq
            row["seq x one report"] = seq / one
            row["speed-up"] = seq / conc
        rows.append(row)
    return rows


def run(
    reps: int = 7, max_k: int = 4, *, latency: float = 0.2, jitter: float = 0.1, seed: int = 3
) -> list[Row]:
    """Median wall time of one report vs base + k compared, concurrent and sequential."""
    return asyncio.run(_run(reps, max_k, latency, jitter, seed))


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(itertools.chain.from_iterable(rows)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7, help="repetitions per cell (default 7)")
    parser.add_argument("--max-k", type=int, default=4, choices=range(1, 5))
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--jitter", type=float, default=0.1, help="also run with 0 jitter")
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.reps, args.max_k, latency=args.latency, jitter=args.jitter)
    if args.jitter:
        rows += run(args.reps, args.max_k, latency=args.latency, jitter=0.0)
    title = (
        f"Comparison latency (emulator latency {args.latency * 1000:g} ms +- "
        f"{args.jitter * 1000:g} ms and flat, median of {args.reps} fresh queries per cell)"
    )
    text = table(rows, _columns(rows))
    print(title)
    print(text)
    if args.record:
        record("compare", title, text)


if __name__ == "__main__":
    main()
