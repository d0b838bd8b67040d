"""Timeouts, 429 storms and outages: a typed error in bounded time, never a loop or a hang."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QueryFactory = Callable[[Emulator, int], list[cf.FunnelQuery]]
QuietCheck = Callable[[cf.Client], Awaitable[None]]

TOTALS = "/api/v1/report/funnel/opportunity/totals/"
#: Scheduling slack allowed on top of a computed time bound (2 slow CI cores).
SLACK = 0.5


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["slow", "stall"])
async def test_slow_or_stalled_server_times_out_within_attempts_x_timeout(
    start_emulator: EmulatorFactory,
    make_queries: QueryFactory,
    assert_quiet: QuietCheck,
    kind: str,
) -> None:
    """A server slower than the timeout, or stalling mid-body, gives RequestTimeoutError in time."""
    attempts, timeout, backoff = 3, 0.2, 0.05
    policy = cf.RetryPolicy(attempts=attempts, backoff_initial=backoff, backoff_max=backoff)
    async with start_emulator(slow_delay=30.0) as emu:
        query = make_queries(emu, 1)[0]
        emu.fail_next(100, kind)
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, retry=policy, timeout=timeout
        ) as client:
            with pytest.raises(cf.RequestTimeoutError):
                await client.funnel_totals(query)
            await assert_quiet(client)
    # One request per attempt (each still "in flight" for the emulator: it never answered), so
    # the call took `attempts` timeouts plus backoff; counted, not timed, so load cannot flake it.
    assert [entry.path for entry in emu.log] == [TOTALS] * attempts


@pytest.mark.slow
async def test_deadline_stops_a_comparison_against_a_hanging_server(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """With unlimited attempts, the policy's deadline ends a comparison with a typed error."""
    policy = cf.RetryPolicy(attempts=10_000, backoff_initial=0, backoff_max=0, deadline=0.8)
    async with start_emulator(slow_delay=30.0, fault_rate=1.0, faults=("slow", "stall")) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, retry=policy, timeout=0.1
        ) as client:
            started = time.monotonic()
            with pytest.raises(cf.RequestTimeoutError):
                await client.compare_totals(query, "last-year", "last-month")
            elapsed = time.monotonic() - started
            await assert_quiet(client)
    assert elapsed <= policy.deadline + SLACK
    # Three requests at a time, each at most one 0.1 s attempt per 0.1 s.
    assert len(emu.log) <= 3 * (policy.deadline / 0.1 + 2)


async def test_the_deadline_counts_from_the_start_of_the_call(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """
    A first attempt sent at once runs without a deadline timer (it cannot outlast its own
    timeout); the deadline still counts from the call's start, so retries get only the rest.
    """
    timeout, deadline = 0.1, 0.35
    policy = cf.RetryPolicy(attempts=10_000, backoff_initial=0, backoff_max=0, deadline=deadline)
    async with start_emulator(slow_delay=30.0, fault_rate=1.0, faults=("slow",)) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, retry=policy, timeout=timeout
        ) as client:
            with pytest.raises(cf.RequestTimeoutError, match="deadline"):
                await client.funnel_totals(query)
            await assert_quiet(client)
    # Each attempt ends no sooner than its timeout, so attempt k starts at (k-1) x 0.1 s at
    # the earliest: a fifth would start after the deadline. Counted, not timed.
    assert 1 <= len(emu.log) <= math.ceil(deadline / timeout)


async def test_a_deadline_shorter_than_the_timeout_ends_the_first_attempt(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """When one attempt could outlast the deadline, the deadline's timer covers it too."""
    policy = cf.RetryPolicy(deadline=0.2)
    async with start_emulator(slow_delay=30.0, fault_rate=1.0, faults=("slow",)) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, retry=policy, timeout=30.0
        ) as client:
            async with asyncio.timeout(10):  # guard: without the timer this waits 30 s
                with pytest.raises(cf.RequestTimeoutError, match="deadline"):
                    await client.funnel_totals(query)
            await assert_quiet(client)
    assert len(emu.log) == 1


async def test_outage_is_bounded_by_attempts_per_query(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """When every request is a 503, each query of a bulk run sends exactly `attempts` requests."""
    policy = cf.RetryPolicy(attempts=4, backoff_initial=0, backoff_max=0)
    async with start_emulator(fault_rate=1.0, faults=("503-no-retry-after", "502")) as emu:
        queries = make_queries(emu, 10)
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy) as client:
            items = [item async for item in client.totals_many(queries)]
            await assert_quiet(client)
    assert len(items) == len(queries)
    errors = [item.error for item in items]
    assert all(isinstance(error, cf.ServerError) for error in errors)
    assert {error.status for error in errors if isinstance(error, cf.ServerError)} <= {502, 503}
    assert len(emu.log) == policy.attempts * len(queries)


@pytest.mark.slow
async def test_outage_stops_at_the_deadline_with_backoff(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """A long outage with a huge attempt budget stops at the deadline, with a typed error."""
    policy = cf.RetryPolicy(
        attempts=1_000_000, backoff_initial=0.02, backoff_max=0.05, deadline=1.0, seed=3
    )
    async with start_emulator(fault_rate=1.0, faults=("500",)) as emu:
        query = make_queries(emu, 1)[0]
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy) as client:
            started = time.monotonic()
            with pytest.raises((cf.ServerError, cf.RequestTimeoutError)):
                await client.funnel_totals(query)
            elapsed = time.monotonic() - started
            await assert_quiet(client)
    assert elapsed <= policy.deadline + SLACK
    assert 3 <= len(emu.log) <= 1_000


async def test_503_asking_for_longer_than_max_wait_is_not_retried(
    start_emulator: EmulatorFactory, make_queries: QueryFactory
) -> None:
    """A 503 whose Retry-After exceeds max_wait raises ServerError at once instead of sleeping."""
    policy = cf.RetryPolicy(attempts=5, max_wait=0.5)
    async with start_emulator() as emu:
        query = make_queries(emu, 1)[0]
        emu.fail_next(5, "503")  # Retry-After: 1
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy) as client:
            with pytest.raises(cf.ServerError) as info:
                await client.funnel_totals(query)
    assert info.value.status == 503
    assert info.value.retry_after == 1.0
    assert len(emu.log) == 1


@pytest.mark.slow
@pytest.mark.parametrize("legacy_body", [None, "nested"])
async def test_one_probe_per_429_pause(
    start_emulator: EmulatorFactory,
    make_queries: QueryFactory,
    assert_quiet: QuietCheck,
    legacy_body: str | None,
) -> None:
    """After each 429 the next request waits out the pause and then goes alone until answered."""
    latency, window, eps = 0.05, 0.5, 0.03
    async with start_emulator(
        rps=10, window=window, header_style="none", legacy_429_body=legacy_body, latency=latency
    ) as emu:
        queries = make_queries(emu, 30)
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, max_concurrency=8) as c:
            items = [item async for item in c.totals_many(queries)]
            await assert_quiet(c)
    assert all(item.ok for item in items)
    log = sorted((entry for entry in emu.log if entry.path == TOTALS), key=lambda e: e.time)
    limited = [entry for entry in log if entry.status == 429]
    assert limited, "the run was meant to meet the limit"
    origin = log[0].time  # the emulator's bucket starts at the first request's arrival
    checked = 0
    for hit in limited:
        # What this 429 told the client to wait: Retry-After (the window's reset rounded
        # up) alone, or the exact reset from a legacy body.
        reset = window - (hit.time - origin) % window
        told = float(math.ceil(reset)) if legacy_body is None else reset
        if told < 2 * eps:
            continue  # too short to tell the probe from requests sent before the 429 was read
        # The client reads the 429 `latency` after it arrived; requests sent before that
        # arrive by then (plus scheduling slack), so the first one after is the probe.
        after = [entry for entry in log if entry.time > hit.time + latency + eps]
        if not after:
            continue
        probe = after[0]
        assert probe.time >= hit.time + latency + told - 0.005, "sent before the pause ended"
        if len(after) > 1:
            # Alone until its answer, which takes `latency` to come back.
            assert after[1].time - probe.time >= 0.8 * latency, (hit, probe, after[1])
        checked += 1
    assert checked
    print(
        f"\n429 storm ({legacy_body=}): {len(log)} requests, {len(limited)} x 429, {checked} probes"
    )


@pytest.mark.slow
async def test_deadline_while_held_by_the_rate_limit_is_a_rate_limit_error(
    start_emulator: EmulatorFactory, make_queries: QueryFactory, assert_quiet: QuietCheck
) -> None:
    """Calls the gate holds for an exhausted budget past their deadline raise RateLimitedError."""
    policy = cf.RetryPolicy(deadline=1.0)
    async with start_emulator(rps=1, window=5.0) as emu:  # 5 requests per 5 s window
        queries = make_queries(emu, 8)
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy) as client:
            started = time.monotonic()
            items = [item async for item in client.totals_many(queries)]
            elapsed = time.monotonic() - started
            await assert_quiet(client)
    assert sum(item.ok for item in items) == 5
    held = [item.error for item in items if item.error is not None]
    assert len(held) == 3
    for error in held:
        # Nothing timed out on the wire: the truth is that Close's rate limit held it.
        assert isinstance(error, cf.RateLimitedError), repr(error)
        assert error.retry_after is not None
        assert 0 < error.retry_after <= 5.0
    assert elapsed <= policy.deadline + SLACK
    assert [entry.status for entry in emu.log] == [200] * 5
