"""
Single-flight: identical work in progress at once is done once, for every caller.

Close's per-key rate limit is the scarce resource, so two callers asking the same thing
at the same moment (two dashboard tabs, a bulk run with a repeated query) share one
request. The client shares HTTP calls through it and the TTL cache shares fetches; the
rules are written once, here:

- the first caller for a key starts the work as a task; later callers join it and get
  its result or its exception;
- a caller that is cancelled leaves; when the last one leaves, the work is cancelled
  (nobody pays for an answer no one wants), and forgotten at once, so a caller arriving
  while it winds down starts work of its own instead of joining a cancelled one;
- an exception nobody is left to await is retrieved, so asyncio logs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    """One piece of shared work and the number of callers still waiting on it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    """Work by key, run at most once at a time per key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """
        The result of ``await work()``, shared with every concurrent caller of *key*.

        *work* is called only when no work for *key* is in flight.
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, work)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
                # Forget it now, not when it finishes: a caller arriving in between must
                # start work of its own rather than join work that is being cancelled.
                self._forget(key, flight)

    def tasks(self) -> list[asyncio.Future[V]]:
        """The tasks of the work in flight now (for shutting down)."""
        return [flight.task for flight in self._flights.values()]

    def _start(self, key: K, work: Callable[[], Awaitable[V]]) -> _Flight[V]:
        flight: _Flight[V] = _Flight(asyncio.ensure_future(work()))
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _: self._forget(key, flight))
        return flight

    def _forget(self, key: K, flight: _Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # retrieved, so a failure nobody awaited is not logged
