"""Fault soak: hundreds of comparisons through every fault kind and a tight rate limit."""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest

import closefunnel as cf
from closefunnel._client import PoolSnapshot
from closefunnel.emulator import FAULT_KINDS, Emulator

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QueryFactory = Callable[[Emulator, int], list[cf.FunnelQuery]]
QuietCheck = Callable[[cf.Client], Awaitable[None]]


def cf_pool(*, in_use: int, handed_out: int) -> PoolSnapshot:
    """The pool snapshot of a default client (8 permits, 32 connections)."""
    return PoolSnapshot(limit=32, in_use=in_use, handed_out=handed_out)


TOTALS = "/api/v1/report/funnel/opportunity/totals/"
QUERIES = 150
COMPARED = "last-year"


@pytest.mark.slow
async def test_fault_soak_loses_nothing_and_matches_a_clean_run(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """150 comparisons under 30% faults of every kind and 40 rps all match a fault-free run."""
    async with start_emulator() as clean:
        queries = make_queries(clean, QUERIES)
        async with cf.Client(api_key=clean.api_key, base_url=clean.base_url) as client:
            expected = {
                item.query: item.result async for item in client.compare_many(queries, COMPARED)
            }
    assert len(expected) == QUERIES
    assert all(result is not None for result in expected.values())

    policy = cf.RetryPolicy(attempts=12, backoff_initial=0, backoff_max=0, deadline=60.0, seed=1)
    progress: list[int] = []
    started = time.monotonic()
    async with start_emulator(rps=40, fault_rate=0.3, slow_delay=0.4, latency=0.002) as faulty:
        async with cf.Client(
            api_key=faulty.api_key,
            base_url=faulty.base_url,
            retry=policy,
            timeout=0.15,
            max_concurrency=8,
        ) as client:
            items = [
                item
                async for item in client.compare_many(
                    queries, COMPARED, on_progress=lambda done, _: progress.append(done)
                )
            ]
            await assert_quiet(client)
            pool = client.pool_snapshot()
        log = [entry for entry in faulty.log if entry.path == TOTALS]
    elapsed = time.monotonic() - started

    faults = collections.Counter(entry.fault for entry in log if entry.fault)
    limited = sum(1 for entry in log if entry.status == 429)
    errors = [item for item in items if not item.ok]
    lost = QUERIES - len({item.query for item in items})
    print(
        f"\nsoak: {QUERIES} comparisons, {len(log)} requests in {elapsed:.1f}s, "
        f"{sum(faults.values())} faults {dict(sorted(faults.items()))}, {limited} x 429, "
        f"{len(errors)} typed errors, lost={lost}, "
        f"connections handed out={pool.handed_out if pool else '?'}"
    )

    assert len(items) == QUERIES
    assert lost == 0
    assert progress == list(range(1, QUERIES + 1))
    for item in items:
        assert (item.result is None) != (item.error is None)
        assert item.error is None or isinstance(item.error, cf.CloseFunnelError)
    # Twelve zero-wait attempts at a 30% fault rate: a query failing for good is a
    # one-in-a-million event, so any error here is a retry bug, not bad luck.
    assert errors == []
    assert {item.query: item.result for item in items} == expected
    assert set(faults) == set(FAULT_KINDS), faults
    assert len(log) >= 2 * QUERIES + sum(faults.values())


async def test_pool_snapshot_sees_a_connection_held_by_an_unread_response(
    start_emulator: EmulatorFactory,
) -> None:
    """The leak check is real: a response left unread holds its connection until closed."""
    async with (
        start_emulator(slow_delay=2.0) as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        await client.pipelines()
        assert client.pool_snapshot() == cf_pool(in_use=0, handed_out=1)
        session = client._session
        assert session is not None
        emu.fail_next(1, "stall")  # half the body now, the rest in 2 s
        headers = {"Authorization": client._credentials.authorization()}
        response = await session.get(emu.base_url + "pipeline/", headers=headers)
        assert client.pool_snapshot() == cf_pool(in_use=1, handed_out=2)
        response.close()
        assert client.pool_snapshot() == cf_pool(in_use=0, handed_out=2)
