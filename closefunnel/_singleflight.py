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
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[K, V]):
    """
    One piece of shared work and the callers waiting on it.

    Each caller waits on a plain future of its own, which the work's one done callback
    settles: a caller's cancellation cancels only its future, never the work (what
    ``asyncio.shield`` would do, with one callback and two futures fewer per call).
    """

    __slots__ = ("flights", "key", "task", "waiters")

    def __init__(self, flights: SingleFlight[K, V], key: K, task: asyncio.Task[V]) -> None:
        self.flights = flights
        self.key = key
        self.task = task
        self.waiters: dict[asyncio.Future[V], None] = {}  # ordered: woken in arrival order
        task.add_done_callback(self._done)

    def leave(self, waiter: asyncio.Future[V]) -> None:
        """*waiter*'s caller was cancelled: the last one to leave cancels the work."""
        self.waiters.pop(waiter, None)
        if not self.waiters and not self.task.done():
            self.task.cancel()
            # Forget it now, not when it finishes: a caller arriving in between must
            # start work of its own rather than join work that is being cancelled.
            self.flights._forget(self)

    def _done(self, task: asyncio.Task[V]) -> None:
        self.flights._forget(self)
        if task.cancelled():
            for waiter in self.waiters:
                waiter.cancel()
            return
        error = task.exception()  # retrieved, so a failure nobody awaited is not logged
        for waiter in self.waiters:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(task.result())


class SingleFlight(Generic[K, V]):
    """Work by key, run at most once at a time per key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[K, V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """
        The result of ``await work()``, shared with every concurrent caller of *key*.

        *work* is called only when no work for *key* is in flight.
        """
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(self, key, loop.create_task(work()))
            self._flights[key] = flight
        waiter: asyncio.Future[V] = loop.create_future()
        flight.waiters[waiter] = None
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # settled just as our caller was cancelled: not logged
            flight.leave(waiter)
            raise

    def tasks(self) -> list[asyncio.Task[V]]:
        """The tasks of the work in flight now (for shutting down)."""
        return [flight.task for flight in self._flights.values()]

    def _forget(self, flight: _Flight[K, V]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
