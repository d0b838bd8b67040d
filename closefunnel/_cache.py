"""
A small asyncio TTL cache with single-flight, for dashboards in front of the client.

A dashboard asks the same question every few seconds, often from several browser tabs at
once; Close's per-key rate limit is the scarce resource, not memory. So within the TTL an
identical request is answered from memory, and identical requests that arrive while one is
being fetched share that one fetch (:mod:`closefunnel._singleflight`) instead of each
spending a request. Failures are never cached (the next caller tries again), but callers
waiting on a failing fetch share its error.

The clock is injectable so tests can move time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from closefunnel._singleflight import SingleFlight

__all__ = ["TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """
    Values by key for *ttl* seconds, fetched at most once at a time per key.

    Args:
        ttl: Seconds a fetched value is served from memory (> 0).
        max_entries: Most values kept; the oldest are dropped first, so a dashboard with
            many distinct queries cannot grow memory without bound.
        clock: Monotonic seconds; inject a fake one in tests.

    ``hits`` and ``misses`` count lookups, for logging and tests.
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._flights: SingleFlight[K, V] = SingleFlight()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Forget every stored value (fetches in progress still complete for their callers)."""
        self._values.clear()

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """
        The value for *key*: from memory while fresh, else from ``await fetch()``.

        Concurrent calls with the same key share one ``fetch()``. If every caller waiting
        on a fetch is cancelled, the fetch is cancelled too, so nobody pays for an answer
        no one wants.
        """
        now = self._clock()
        stored = self._values.get(key)
        if stored is not None:
            expires, value = stored
            if now < expires:
                self.hits += 1
                return value
            del self._values[key]
        if key in self._flights:
            self.hits += 1
        else:
            self.misses += 1
        return await self._flights.run(key, lambda: self._fetch(key, fetch))

    def put(self, key: K, value: V) -> None:
        """Store *value* for *key* for the TTL (a value fetched elsewhere, e.g. by the
        shared cache while Redis failed)."""
        self._store(key, value)

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        value = await fetch()
        self._store(key, value)
        return value

    def _store(self, key: K, value: V) -> None:
        now = self._clock()
        self._values.pop(key, None)
        self._values[key] = (now + self.ttl, value)
        if len(self._values) > self.max_entries:
            for stale in [k for k, (expires, _) in self._values.items() if expires <= now]:
                del self._values[stale]
            while len(self._values) > self.max_entries:
                del self._values[next(iter(self._values))]
