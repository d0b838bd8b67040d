"""
The TTL cache: expiry on an injected clock, failures not cached.

Its single-flight races are tested once, against the primitive, in
tests/foundation/test_singleflight.py.
"""

from __future__ import annotations

import asyncio

import pytest

from closefunnel._cache import TTLCache


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_values_are_served_until_the_ttl_passes() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(ttl=30, clock=clock)
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await cache.get("k", fetch) == 1
    clock.now += 29.9
    assert await cache.get("k", fetch) == 1
    clock.now += 0.1
    assert await cache.get("k", fetch) == 2
    assert await cache.get("other", fetch) == 3
    assert (cache.hits, cache.misses) == (1, 3)


async def test_concurrent_callers_share_one_fetch_and_its_failure_is_not_cached() -> None:
    """The cache shares fetches through SingleFlight (its races: test_singleflight.py)."""
    cache: TTLCache[str, str] = TTLCache(ttl=30)
    attempts = 0

    async def fetch() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("upstream down")
        return "ok"

    results = await asyncio.gather(
        cache.get("k", fetch), cache.get("k", fetch), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert attempts == 1
    assert (cache.hits, cache.misses) == (1, 1)  # the second caller joined the fetch
    assert await cache.get("k", fetch) == "ok"
    assert len(cache) == 1


async def test_oldest_entries_are_dropped_beyond_max_entries() -> None:
    cache: TTLCache[int, int] = TTLCache(ttl=30, max_entries=2)

    async def value(n: int) -> int:
        return n

    for n in range(3):
        await cache.get(n, lambda n=n: value(n))  # type: ignore[misc]
    assert len(cache) == 2
    assert cache.misses == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        TTLCache(ttl=0)
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(ttl=1, max_entries=0)
