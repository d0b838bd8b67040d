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
  while it winds down starts work of its own instead of joining a cancelled one; that
  last caller returns once the work has wound down, so nothing outlives it;
- an exception nobody is left to await is retrieved, so asyncio logs nothing.

Each caller holds a future of its own (:meth:`SingleFlight.join`), settled by the
work's one done callback: no ``asyncio.shield`` and no task per caller, which is most
of what sharing used to cost a request that nothing else was sharing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Waiter(asyncio.Future[V]):
    """
    One caller's share of a flight, settled with the work's outcome.

    Cancelling it (the caller's own cancellation does, as does a bulk run that stops)
    leaves the flight. While others wait, the work goes on and this share is cancelled
    at once. The last one to leave cancels the work, and its share is cancelled when
    the work has wound down: so a cancelled caller (or bulk run) returns only after
    the work it started has ended, and leaves nothing behind still running.
    """

    __slots__ = ("flight", "leaving")

    flight: _Flight[Any, V]
    leaving: bool

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        if self.leaving:
            return True  # the last to leave: cancelled by _Flight._done, soon
        self.leaving = True
        if self.flight.leave(self):
            return super().cancel(msg)
        return True

    def abandon(self) -> None:
        """Cancelled, without leaving: the work ended cancelled, or we already left."""
        super().cancel()


class _Flight(Generic[K, V]):
    """One piece of shared work and the callers waiting on it."""

    __slots__ = ("flights", "key", "last", "task", "waiters")

    def __init__(self, flights: SingleFlight[K, V], key: K, task: asyncio.Task[V]) -> None:
        self.flights = flights
        self.key = key
        self.task = task
        self.waiters: dict[_Waiter[V], None] = {}  # ordered: settled in arrival order
        self.last: _Waiter[V] | None = None  # the last to leave, until the work has ended
        task.add_done_callback(self._done)

    def leave(self, waiter: _Waiter[V]) -> bool:
        """
        *waiter* leaves. False when it was the last and the work is now cancelled: its
        share is then cancelled once the work has ended.
        """
        self.waiters.pop(waiter, None)
        if self.waiters or self.task.done():
            return True
        self.task.cancel()
        self.last = waiter
        # Forget it now, not when it finishes: a caller arriving in between must start
        # work of its own rather than join work that is being cancelled.
        self.flights._forget(self)
        return False

    def _done(self, task: asyncio.Task[V]) -> None:
        self.flights._forget(self)
        if self.last is not None:
            self.last.abandon()
        waiters = [waiter for waiter in self.waiters if not waiter.done()]
        # Each waiter points back here: dropping them breaks the cycle, so the flight
        # and the result it holds are freed now, not left to the cyclic collector
        # (which would walk every report held meanwhile, again and again).
        self.waiters.clear()
        self.last = None
        if task.cancelled():
            for waiter in waiters:
                waiter.abandon()
            return
        error = task.exception()  # retrieved, so a failure nobody awaited is not logged
        for waiter in waiters:
            if error is not None:
                waiter.set_exception(error)
                # A caller cancelled before it resumed never reads its share: the error
                # is the work's, already retrieved above, so its copies are too.
                waiter.exception()
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
        return await self.join(key, work)

    def join(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Future[V]:
        """
        :meth:`run` without a coroutine of its own, for a caller that gathers many: a
        future of the shared outcome. Cancelling it leaves the flight (see
        :class:`_Waiter`).
        """
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(self, key, loop.create_task(work()))
            self._flights[key] = flight
        waiter: _Waiter[V] = _Waiter(loop=loop)
        waiter.flight = flight
        waiter.leaving = False
        flight.waiters[waiter] = None
        return waiter

    def tasks(self) -> list[asyncio.Task[V]]:
        """The tasks of the work in flight now (for shutting down)."""
        return [flight.task for flight in self._flights.values()]

    def _forget(self, flight: _Flight[K, V]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
