"""
Rate-limit utilization: how close does each client get to the allowed request rate?

    python benchmarks/bench_ratelimit.py [--n 300] [--rps 20] [--record]

An emulator (in this process, loopback) throttles at R requests/s per key with burst 1 and
a 1 s window (Close's windowed token bucket), with 15 +- 5 ms latency. Each client fetches
the same N distinct funnel reports (pipelines x ranges x user filters), 16 in flight.
Everything is computed from the emulator's request log (the ground truth):

- rate %: the ideal time from the first to the last accepted request,
  ``(ceil(N / (R * window)) - 1) * window``, over the achieved one (100 % = the limit);
- 429/1k: 429 responses per 1,000 accepted requests;
- lost: queries that ended without a result;
- finish: wall time until every query ended, and its ratio to the ideal.

closefunnel runs with each header style (comma, semicolon, legacy ``X-Rate-Limit-*``,
none = 429 + Retry-After only) and as two clients on two keys of one organization. Peers
(comma headers): a naive ``asyncio.gather`` with a semaphore and a sleep on Retry-After,
the same with tenacity exponential backoff, Close's official ``closeio`` client
sequentially and in an 8-thread pool. Runs are interleaved in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import orjson
from _common import NOW, TOTALS_PATH, Row, record, table, take_queries
from tenacity import (
    AsyncRetrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig

CONCURRENCY = 16
SCENARIOS = (
    "closefunnel",
    "naive-gather",
    "gather+tenacity",
    "closeio-sequential",
    "closeio-8-threads",
    "closefunnel-semicolon",
    "closefunnel-legacy",
    "closefunnel-no-headers",
    "closefunnel-2-keys",
)
#: The header style each scenario's emulator uses (default: comma).
_STYLES = {
    "closefunnel-semicolon": "semicolon",
    "closefunnel-legacy": "legacy",
    "closefunnel-no-headers": "none",
}


def _auth(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


# -- clients under test: each returns the number of queries that got a result ------------


async def _closefunnel(emu: Emulator, queries: Sequence[cf.FunnelQuery], keys: int) -> int:
    async def one(key: str, part: Sequence[cf.FunnelQuery]) -> int:
        async with cf.Client(
            api_key=key, base_url=emu.base_url, max_concurrency=CONCURRENCY
        ) as client:
            return sum([item.ok async for item in client.totals_many(part)])

    parts = [queries[i::keys] for i in range(keys)]
    done = await asyncio.gather(*(one(emu.api_keys[i], parts[i]) for i in range(keys)))
    return sum(done)


async def _gather(emu: Emulator, queries: Sequence[cf.FunnelQuery], *, tenacity: bool) -> int:
    """A semaphore of 16 over asyncio.gather: what most people write first."""
    url = emu.base_url + "report/funnel/opportunity/totals/"
    headers = _auth(emu.api_key)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def post(session: aiohttp.ClientSession, body: bytes) -> tuple[int, bytes, str | None]:
        async with session.post(url, data=body, headers=headers) as response:
            return response.status, await response.read(), response.headers.get("Retry-After")

    async def naive(session: aiohttp.ClientSession, body: bytes) -> bool:
        async with semaphore:
            for _ in range(20):  # bounded: give up after 20 attempts
                status, data, retry_after = await post(session, body)
                if status != 429:
                    orjson.loads(data)
                    return status == 200
                await asyncio.sleep(float(retry_after or 1))
            return False

    async def backoff(session: aiohttp.ClientSession, body: bytes) -> bool:
        async with semaphore:
            retrying = AsyncRetrying(
                retry=retry_if_result(lambda r: r[0] == 429),
                wait=wait_exponential_jitter(initial=0.5, max=10),
                stop=stop_after_attempt(10),
                retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            )
            status, data, _ = await retrying(post, session, body)
            if status == 200:
                orjson.loads(data)
            return status == 200

    bodies = [orjson.dumps(q.to_body()) for q in queries]
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        work = backoff if tenacity else naive
        results = await asyncio.gather(*(work(session, body) for body in bodies))
    return sum(results)


def _closeio_client(emu: Emulator) -> Any:
    import closeio_api

    # closeio_api.Client(api_key, tz_offset, max_retries, development) hard-codes
    # api.close.com; its base class API takes the base URL (the same retry logic).
    return closeio_api.API(emu.base_url, api_key=emu.api_key, tz_offset=0)


async def _closeio(emu: Emulator, queries: Sequence[cf.FunnelQuery], *, threads: int) -> int:
    import closeio_api

    bodies = [q.to_body() for q in queries]
    local = threading.local()
    stop = threading.Event()

    def fetch(body: dict[str, Any]) -> bool:
        if stop.is_set():  # the run timed out: the threads must not outlive it
            return False
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = _closeio_client(emu)
        try:
            api.post("report/funnel/opportunity/totals", data=body, timeout=30)
        except (closeio_api.APIError, OSError):
            return False
        return True

    def sequential() -> int:
        return sum(fetch(body) for body in bodies)

    pool = ThreadPoolExecutor(threads)
    loop = asyncio.get_running_loop()
    try:
        if threads == 1:
            return await loop.run_in_executor(pool, sequential)
        results = await asyncio.gather(*(loop.run_in_executor(pool, fetch, b) for b in bodies))
        return sum(results)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


# -- one scenario ---------------------------------------------------------------------------


def _metrics(
    emu: Emulator, n: int, ok: int, wall: float, rps: float, window: float, keys: int
) -> Row:
    entries = [e for e in emu.log if e.path == TOTALS_PATH]
    accepted = sorted(e.time for e in entries if e.status == 200)
    limited = sum(1 for e in entries if e.status == 429)
    per_window = min(keys, emu.config.org_factor) * rps * window
    ideal = (math.ceil(len(accepted) / per_window) - 1) * window if accepted else 0.0
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    return {
        "requests": len(entries),
        "accepted": len(accepted),
        "rate %": 100 * ideal / span if span > 0 else float("nan"),
        "429/1k": 1000 * limited / max(1, len(accepted)),
        "lost": n - ok,
        "finish s": wall,
        "ideal s": ideal,
        "finish/ideal": wall / ideal if ideal else float("nan"),
    }


async def run_scenario(
    scenario: str,
    *,
    n: int,
    rps: float,
    window: float = 1.0,
    latency: float = 0.015,
    jitter: float = 0.005,
    give_up_after: float | None = None,
) -> Row:
    keys = 2 if scenario == "closefunnel-2-keys" else 1
    config = EmulatorConfig(
        now=NOW,
        seed=1,
        rps=rps,
        burst=1.0,
        window=window,
        header_style=_STYLES.get(scenario, "comma"),  # type: ignore[arg-type]
        latency=latency,
        jitter=jitter,
        keys=keys,
        opportunities=3_000,
        pipelines=3,
        users=12,
    )
    async with Emulator(config) as emu:
        data = emu.dataset
        queries = take_queries([p.id for p in data.pipelines], [u.id for u in data.users], n)
        runners: dict[str, Callable[[], Awaitable[int]]] = {
            "naive-gather": lambda: _gather(emu, queries, tenacity=False),
            "gather+tenacity": lambda: _gather(emu, queries, tenacity=True),
            "closeio-sequential": lambda: _closeio(emu, queries, threads=1),
            "closeio-8-threads": lambda: _closeio(emu, queries, threads=8),
        }
        runner = runners.get(scenario) or (lambda: _closefunnel(emu, queries, keys))
        # Bounded: a client that has not finished by then has lost what is left.
        limit = give_up_after or max(30.0, 6 * n / (keys * rps) + 10)
        started = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                ok = await runner()
        except TimeoutError:
            ok = sum(1 for e in emu.log if e.path == TOTALS_PATH and e.status == 200)
            scenario += " (timed out)"
        wall = time.monotonic() - started
        row: Row = {"client": scenario, "keys": keys, "headers": config.header_style}
        row.update(_metrics(emu, n, ok, wall, rps, window, keys))
        return row


def run(
    n: int = 300,
    rps: float = 20.0,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    latency: float = 0.015,
    jitter: float = 0.005,
    give_up_after: float | None = None,
) -> list[Row]:
    """Run each scenario once, in order (interleaving peers with closefunnel)."""

    async def main() -> list[Row]:
        return [
            await run_scenario(
                s, n=n, rps=rps, latency=latency, jitter=jitter, give_up_after=give_up_after
            )
            for s in scenarios
        ]

    return asyncio.run(main())


def main() -> None:
    # Retries after a 429 are logged as warnings; the table counts them instead.
    logging.getLogger("closefunnel").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300, help="distinct reports (default 300)")
    parser.add_argument("--rps", type=float, default=20.0, help="allowed rate per key")
    parser.add_argument("--latency", type=float, default=0.015)
    parser.add_argument("--jitter", type=float, default=0.005)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.n, args.rps, scenarios=args.only, latency=args.latency, jitter=args.jitter)
    text = table(rows)
    title = (
        f"Rate-limit utilization (N={args.n}, R={args.rps:g} rps, burst 1, window 1 s, "
        f"latency {args.latency * 1000:g} +- {args.jitter * 1000:g} ms, {CONCURRENCY} in flight)"
    )
    print(title)
    print(text)
    if args.record:
        record("ratelimit", title, text)


if __name__ == "__main__":
    main()
