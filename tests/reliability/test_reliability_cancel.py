"""Cancellation at random points: nothing leaks, nothing keeps running, the client still works."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator

PACKAGE_DIR = str(Path(cf.__file__).parent) + os.sep

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QueryFactory = Callable[[Emulator, int], list[cf.FunnelQuery]]
QuietCheck = Callable[[cf.Client], Awaitable[None]]
TaskSet = Callable[[], set[asyncio.Task[Any]]]

TRIALS = 300
SEED = 20240607


async def _drain(items: Any) -> int:
    return len([item async for item in items])


@pytest.mark.slow
async def test_random_cancellation_leaks_nothing(
    start_emulator: EmulatorFactory,
    make_queries: QueryFactory,
    assert_quiet: QuietCheck,
) -> None:
    """Hundreds of seeded cancellations of bulk runs and comparisons leave the client clean."""
    rng = random.Random(SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    async with start_emulator(latency=0.004, jitter=0.003, rps=100) as emu:
        queries = make_queries(emu, 24)
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, max_concurrency=3
        ) as client:
            expected = await client.compare_totals(queries[0], "last-year", "last-month")

            def totals() -> Coroutine[Any, Any, object]:
                return client.funnel_totals(rng.choice(queries), format=rng.choice(["json", "csv"]))

            def compare() -> Coroutine[Any, Any, object]:
                return client.compare_totals(rng.choice(queries), "last-year", "last-month")

            def compare_many() -> Coroutine[Any, Any, object]:
                return _drain(client.compare_many(rng.sample(queries, 6), "last-year"))

            def totals_many() -> Coroutine[Any, Any, object]:
                return _drain(client.totals_many(rng.sample(queries, 10)))

            async def timed_out() -> object:
                async with asyncio.timeout(rng.uniform(0.0, 0.03)):
                    return await client.compare_totals(rng.choice(queries), "last-quarter")

            kinds: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
                "funnel_totals": totals,
                "compare_totals": compare,
                "compare_many": compare_many,
                "totals_many": totals_many,
                "asyncio.timeout": timed_out,
            }
            for trial in range(TRIALS):
                kind = rng.choice(sorted(kinds))
                task = asyncio.create_task(kinds[kind]())
                await asyncio.sleep(rng.uniform(0.0, 0.03))
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, TimeoutError):
                    outcomes["cancelled"] += 1
                else:
                    outcomes["finished first"] += 1
                # Checked at once, without giving the loop a turn: a cancelled call must
                # not leave work behind it that is still winding down.
                await assert_quiet(client)
                if trial % 50 == 49:
                    again = await client.compare_totals(queries[0], "last-year", "last-month")
                    assert again == expected
            items = [item async for item in client.compare_many(queries, "last-year")]
            assert all(item.ok for item in items)
            await assert_quiet(client)
    print(
        f"\ncancellation: {TRIALS} trials ({dict(outcomes)}) in "
        f"{time.monotonic() - started:.1f}s, {len(emu.log)} requests"
    )
    assert outcomes["cancelled"] >= TRIALS // 2


def _runs_our_code(task: asyncio.Task[Any]) -> bool:
    """Whether a task runs a coroutine of the closefunnel package (client or emulator).

    Matched on the coroutine's file, not on ``repr(task)``: that shows aiohttp's server tasks
    with their path, which says "closefunnel" whenever the venv lives in a clone so named.
    """
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_filename.startswith(PACKAGE_DIR)


async def test_cancelled_compare_leaves_no_orphan_task(
    start_emulator: EmulatorFactory,
    make_queries: QueryFactory,
    client_tasks: TaskSet,
) -> None:
    """A compare_totals cancelled mid-request returns only after every task it started ended."""
    async with start_emulator(latency=0.2) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client:
            before = asyncio.all_tasks()
            task = asyncio.create_task(client.compare_totals(query, "last-year", "last-month"))
            for _ in range(200):  # until all three requests reached the server
                await asyncio.sleep(0.005)
                if len(emu.log) == 3:
                    break
            assert len(emu.log) == 3
            assert client_tasks()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client_tasks() == set()
            assert {t for t in asyncio.all_tasks() - before if _runs_our_code(t)} == set()
            snapshot = client.gate_snapshots()["POST report/funnel"]
            assert (snapshot.in_flight, snapshot.waiting) == (0, 0)


async def test_cancelling_one_of_two_identical_calls_keeps_the_other(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """Cancelling one caller of a shared (single-flight) request leaves the other its result."""
    async with start_emulator(latency=0.1) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client:
            first = asyncio.create_task(client.funnel_totals(query))
            second = asyncio.create_task(client.funnel_totals(query))
            await asyncio.sleep(0.05)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            result = await second
            await assert_quiet(client)
            assert result == await client.funnel_totals(query)
    assert [entry.status for entry in emu.log] == [200, 200]
