"""Gate edge cases: bursty buckets, idle gaps, refunds during the cold start."""

from __future__ import annotations

import asyncio
import time

import pytest

import closefunnel as cf
from closefunnel._gate import RateLimitGate
from closefunnel._ratelimit import RateLimitInfo

from .conftest import EmulatorFactory
from .test_client import TOTALS, _pipeline_queries


@pytest.mark.slow  # real rate-limit windows
async def test_bursty_bucket_is_not_overdrawn_after_it_drains(
    start_emulator: EmulatorFactory,
) -> None:
    """With burst > 1 the bucket refills by less than its capacity: no 429s all the same."""
    async with start_emulator(rps=10, burst=3, window=1.0, latency=0.02) as emu:
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, max_concurrency=32
        ) as client:
            queries = await _pipeline_queries(client, 60)
            emu.clear_log()
            items = [item async for item in client.totals_many(queries)]
        statuses = [entry.status for entry in emu.log if entry.path == TOTALS]
    assert all(item.ok for item in items)
    assert statuses.count(429) == 0
    assert statuses.count(200) == 60


@pytest.mark.slow  # real rate-limit windows
async def test_idle_gap_does_not_release_a_burst(start_emulator: EmulatorFactory) -> None:
    """After several idle windows the gate paces from the current window, not a stale one."""
    async with start_emulator(rps=4, window=0.5, latency=0.01) as emu:
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client:
            queries = await _pipeline_queries(client, 14)
            warm = [item async for item in client.totals_many(queries[:6])]
            await asyncio.sleep(1.6)  # three windows and more
            emu.clear_log()
            after = [item async for item in client.totals_many(queries[6:])]
        statuses = [entry.status for entry in emu.log if entry.path == TOTALS]
    assert all(item.ok for item in warm + after)
    assert statuses == [200] * 8


async def test_refunds_during_the_cold_start_do_not_stall_the_queue() -> None:
    """Permits handed back unsent do not use up the requests allowed before an answer."""
    gate = RateLimitGate("POST report/funnel", max_concurrency=8)
    for _ in range(6):
        permit = await gate.acquire()
        permit.release(refund=True)
    permit = await asyncio.wait_for(gate.acquire(), timeout=1.0)
    permit.release()
    assert gate.snapshot().in_flight == 0


async def test_users_follow_every_page(start_emulator: EmulatorFactory) -> None:
    """An organization with more users than one page holds still lists them all."""
    async with (
        start_emulator(users=230, opportunities=500) as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        emu.clear_log()
        users = await client.users()
        pages = [entry for entry in emu.log if entry.path == "/api/v1/user/"]
    assert [user.id for user in users] == [user.id for user in emu.dataset.users]
    assert len(pages) == 3


async def test_a_free_permit_is_given_at_once_and_never_past_the_queue() -> None:
    """try_acquire grants only what acquire grants at once: a free slot, no hold, no queue."""
    gate = RateLimitGate("POST report/funnel", max_concurrency=2, seed=1)
    first, second = gate.try_acquire(), gate.try_acquire()
    assert first is not None
    assert second is not None
    assert gate.try_acquire() is None  # both slots taken
    first.observe(200, None)
    first.release()
    # A 429 holds the group: nothing is free, and a caller queues for the end of the pause.
    second.observe(429, RateLimitInfo(limit=10, remaining=0, reset=0.05), pause=0.05)
    second.release()
    assert gate.try_acquire() is None
    queued = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    assert gate.snapshot().waiting == 1
    # The pause is over, but the loop has not run the gate's timer yet: the queued caller
    # still goes first, and try_acquire does not overtake it.
    time.sleep(0.1)  # noqa: ASYNC251  # blocks the loop on purpose: its timer cannot run
    assert gate.try_acquire() is None
    probe = await asyncio.wait_for(queued, timeout=1.0)
    assert gate.snapshot().in_flight == 1
    assert gate.try_acquire() is None  # the probe after a pause goes alone
    probe.observe(200, RateLimitInfo(limit=10, remaining=9, reset=1.0))
    probe.release()
    again = gate.try_acquire()
    assert again is not None
    again.release(refund=True)
    assert gate.snapshot().in_flight == 0
