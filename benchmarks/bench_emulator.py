"""
How fast is the Close API emulator? Dataset build time and report responses per second.

    python benchmarks/bench_emulator.py [--seconds 3] [--concurrency 16] [--opportunities 30000]

Runs the demo dataset in this process and drives it with a plain aiohttp client over
loopback: "repeated" sends one query again and again (the report cache answers), "distinct"
cycles through many different queries (pipelines x ranges x users x saved searches x
report types, each computed on first sight), "distinct-uncached" clears the report cache
before every request so each one is computed. Client and server share one event loop and
one core, so the numbers are a lower bound for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from closefunnel.emulator import Emulator, EmulatorConfig, build_dataset
from closefunnel.emulator._funnel import FunnelIndex

TOTALS = "report/funnel/opportunity/totals/"
NOW = datetime(2025, 6, 18, 15, 30, tzinfo=UTC)


def queries(emu: Emulator) -> list[dict[str, Any]]:
    data = emu.dataset
    ranges = [
        "this-month",
        "last-month",
        "this-quarter",
        "last-quarter",
        "this-year",
        "last-year",
        "all-time",
    ]
    scopes: list[list[str]] = [
        [],
        *[[u.id] for u in data.users[:4]],
        *[[g.id] for g in data.groups],
    ]
    searches = [None, *[s.id for s in data.saved_searches]]
    out = []
    for pipe, rng, users, search, kind in itertools.product(
        data.pipelines, ranges, scopes, searches, ("active-stage-cohort", "created-cohort")
    ):
        field = (
            "report_relative_range" if kind == "active-stage-cohort" else "cohort_relative_range"
        )
        body: dict[str, Any] = {"pipeline": pipe.id, "type": kind, field: rng, "users": users}
        if search:
            body["query"] = {"type": "saved_search", "saved_search_id": search}
        out.append(body)
    return out


async def drive(
    emu: Emulator, bodies: list[bytes], seconds: float, concurrency: int, *, uncached: bool
) -> tuple[int, int]:
    auth = base64.b64encode(f"{emu.api_key}:".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    url = emu.base_url + TOTALS
    done = errors = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                body = bodies[next(counter) % len(bodies)]
                if uncached:
                    emu.state._cache.clear()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


async def main_async(args: argparse.Namespace) -> None:
    config = EmulatorConfig(now=NOW, opportunities=args.opportunities)
    start = time.perf_counter()
    dataset = build_dataset(config)
    built = time.perf_counter() - start
    start = time.perf_counter()
    FunnelIndex(dataset)
    indexed = time.perf_counter() - start
    rows = [("dataset build (s)", f"{built:.3f}"), ("index build (s)", f"{indexed:.3f}")]
    async with Emulator(config) as emu:
        bodies = [orjson.dumps(q) for q in queries(emu)]
        for name, chosen, uncached in (
            ("repeated", bodies[:1], False),
            ("distinct", bodies, False),
            ("distinct-uncached", bodies, True),
        ):
            emu.state._cache.clear()
            start = time.perf_counter()
            done, errors = await drive(
                emu, chosen, args.seconds, args.concurrency, uncached=uncached
            )
            elapsed = time.perf_counter() - start
            rows.append(
                (
                    f"{name} responses/s",
                    f"{done / elapsed:,.0f}" + (f" ({errors} errors)" if errors else ""),
                )
            )
        emu.clear_log()
    width = max(len(k) for k, _ in rows)
    print(
        f"closefunnel emulator benchmark: {args.opportunities:,} opportunities, "
        f"{args.concurrency} concurrent, {args.seconds:g} s per case, {len(bodies)} distinct queries"
    )
    for key, value in rows:
        print(f"  {key:<{width}}  {value:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per case (default 3)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--opportunities", type=int, default=30_000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
