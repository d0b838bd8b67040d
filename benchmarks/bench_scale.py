"""
Scale: 10,000 queued queries against an unlimited emulator.

    python benchmarks/bench_scale.py [--n 10000] [--small 2000] [--concurrency 16] [--record]

The emulator (demo dataset, 2,000 opportunities, no rate limit, no latency) runs in a
subprocess (``python -m closefunnel.emulator --port 0``), so it does not share this
process's event loop or GIL with the client under test; on a 2-core machine each side
gets about one core. Measured in this process, interleaved:

- ``raw aiohttp``: C workers posting the same bodies with one session and orjson.loads
  of each body (the floor: no models, no gate, no retries);
- ``closefunnel``: ``Client.totals_many`` over a *generator* of queries
  (``max_concurrency=C``), each report decoded into FunnelTotals and discarded.

Throughput is reports/s; the target is closefunnel >= 0.85x raw. ``CPU us/report`` is this
process's CPU time (``time.process_time``) per report: what the client itself costs,
which moves far less than throughput when other work shares the cores. Memory: RSS growth
(sampled during the run, results discarded) for the small and the full queue; streaming
means the full queue grows no more than the small one. Peak RSS is getrusage's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import orjson
from _common import (
    NOW,
    Row,
    distinct_queries,
    median,
    peak_rss_bytes,
    record,
    rss_bytes,
    table,
)

import closefunnel as cf

MiB = 1024 * 1024


@contextmanager
def emulator_process(opportunities: int = 2_000) -> Iterator[tuple[str, str]]:
    """Serve an emulator in a subprocess; yield (base_url, api_key); stop it after."""
    command = [
        sys.executable,
        "-m",
        "closefunnel.emulator",
        "--port",
        "0",
        "--now",
        NOW.isoformat(),
        "--opportunities",
        str(opportunities),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            banner = ""
            while "API key:" not in banner:
                line = process.stdout.readline()  # ends at EOF if the emulator dies
                if not line:
                    break
                banner += line
            url = re.search(r"at (http://\S+)", banner)
            key = re.search(r"API key: (\S+)", banner)
            if url is None or key is None:
                raise RuntimeError(f"the emulator did not start: {banner!r}")
            yield url.group(1), key.group(1)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _query_stream(distinct: list[cf.FunnelQuery], n: int) -> Iterator[cf.FunnelQuery]:
    """*n* queries, generated lazily, cycling through the distinct ones."""
    return itertools.islice(itertools.cycle(distinct), n)


class _Rss:
    """Largest RSS growth over a starting point, sampled every few items."""

    def __init__(self) -> None:
        self.start = rss_bytes()
        self.peak = self.start

    def sample(self) -> None:
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


async def _raw(url: str, key: str, queries: Iterator[cf.FunnelQuery], c: int) -> tuple[int, _Rss]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    endpoint = url + "report/funnel/opportunity/totals/"
    done = 0
    rss = _Rss()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def worker() -> None:
            nonlocal done
            for query in queries:  # shared iterator: C posts in flight at most
                async with session.post(
                    endpoint, data=orjson.dumps(query.to_body()), headers=headers
                ) as response:
                    orjson.loads(await response.read())
                    done += response.status == 200
                if done % 250 == 0:
                    rss.sample()

        await asyncio.gather(*(worker() for _ in range(c)))
    return done, rss


async def _client(
    url: str, key: str, queries: Iterator[cf.FunnelQuery], c: int
) -> tuple[int, _Rss]:
    done = 0
    rss = _Rss()
    async with cf.Client(api_key=key, base_url=url, max_concurrency=c) as client:
        async for item in client.totals_many(queries):
            done += item.ok
            if done % 250 == 0:
                rss.sample()
    return done, rss


async def _run(n: int, small: int, c: int, reps: int) -> list[Row]:
    rows: list[Row] = []
    with emulator_process() as (url, key):
        async with cf.Client(api_key=key, base_url=url) as client:
            pipelines = [p.id for p in await client.pipelines()]
            users = [u.id for u in await client.users()]
        distinct = list(distinct_queries(pipelines, users))
        # Warm up: every distinct report computed once by the emulator, connections made.
        await _raw(url, key, iter(distinct), c)
        await _client(url, key, iter(distinct), c)
        runs: dict[str, list[float]] = {"raw aiohttp": [], "closefunnel": []}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        growth: dict[str, int] = {}
        for _ in range(reps):
            for name, runner in (("raw aiohttp", _raw), ("closefunnel", _client)):
                started, cpu_started = time.perf_counter(), time.process_time()
                done, rss = await runner(url, key, _query_stream(distinct, n), c)
                elapsed = time.perf_counter() - started
                cpu[name].append((time.process_time() - cpu_started) / n * 1e6)
                if done != n:
                    raise RuntimeError(f"{name}: {done} of {n} queries succeeded")
                runs[name].append(n / elapsed)
                growth[name] = max(growth.get(name, 0), rss.growth)
        _, rss_small = await _client(url, key, _query_stream(distinct, small), c)
    raw = median(runs["raw aiohttp"])
    for name, rates in runs.items():
        rate = median(rates)
        # Each repetition's ratio is of two runs next to each other, so it shares their load.
        ratios = [mine / theirs for mine, theirs in zip(rates, runs["raw aiohttp"], strict=True)]
        rows.append(
            {
                "client": name,
                "queries": n,
                "in flight": c,
                "reports/s": rate,
                "x raw": rate / raw,
                "x raw per rep (min-max)": f"{min(ratios):.2f}-{max(ratios):.2f}",
                "CPU us/report": median(cpu[name]),
                f"RSS growth MiB ({n:,})": growth[name] / MiB,
            }
        )
    rows.append(
        {
            "client": "closefunnel",
            "queries": small,
            "in flight": c,
            f"RSS growth MiB ({small:,})": rss_small.growth / MiB,
        }
    )
    rows.append({"client": "(process peak RSS MiB)", "reports/s": peak_rss_bytes() / MiB})
    return rows


def run(n: int = 10_000, small: int = 2_000, *, concurrency: int = 16, reps: int = 1) -> list[Row]:
    """Throughput (reports/s) of raw aiohttp vs closefunnel, and RSS growth."""
    return asyncio.run(_run(n, small, concurrency, reps))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.n, args.small, concurrency=args.concurrency, reps=args.reps)
    title = (
        f"Scale ({args.n:,} queued queries, {args.concurrency} in flight, emulator in a "
        f"subprocess, no rate limit; median of {args.reps})"
    )
    text = table(rows)
    print(title)
    print(text)
    if args.record:
        record("scale", title, text)


if __name__ == "__main__":
    main()
