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

A caller that is a task of its own and would only await the work (a bulk run's worker)
can :meth:`SingleFlight.lead` instead: with nothing in flight for the key it does the
work itself, in its own task, with no task made for the work, and callers arriving
meanwhile join it as above. If the leader is cancelled while others still wait, the
work starts again for them as a task (the one case where sharing costs a second
request: the leader's was cancelled with it), so a leader's cancellation never reaches
the callers it was sharing with.
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
    """
    One piece of shared work and the callers waiting on it. The work runs in ``task``:
    a task of its own, or the task of the caller that leads it (``leading``).
    """

    __slots__ = ("ended", "flights", "key", "last", "leading", "task", "waiters")

    def __init__(
        self, flights: SingleFlight[K, V], key: K, task: asyncio.Task[Any], *, leading: bool
    ) -> None:
        self.flights = flights
        self.key = key
        self.task = task
        self.leading = leading
        self.waiters: dict[_Waiter[V], None] = {}  # ordered: settled in arrival order
        self.last: _Waiter[V] | None = None  # the last to leave, until the work has ended
        self.ended: asyncio.Future[None] | None = None  # made only when someone waits
        if not leading:
            task.add_done_callback(self._done)

    def leave(self, waiter: _Waiter[V]) -> bool:
        """
        *waiter* leaves. False when it was the last and the work is now cancelled: its
        share is then cancelled once the work has ended.
        """
        self.waiters.pop(waiter, None)
        if self.waiters or self.leading or self.task.done():
            return True  # others (or the leader) still want it
        self.task.cancel()
        self.last = waiter
        # Forget it now, not when it finishes: a caller arriving in between must start
        # work of its own rather than join work that is being cancelled.
        self.flights._forget(self)
        return False

    def hand_over(self, work: Callable[[], Coroutine[Any, Any, V]]) -> None:
        """
        The leader was cancelled: the work starts again as a task for those waiting,
        unless everything is being cancelled (:meth:`SingleFlight.cancel_all`).
        """
        self.leading = False
        if not self.flights._cancelling and any(not waiter.done() for waiter in self.waiters):
            self.task = asyncio.get_running_loop().create_task(work())
            self.task.add_done_callback(self._done)
            return
        self.settle(cancelled=True)

    def _done(self, task: asyncio.Task[V]) -> None:
        if self.last is not None:
            self.last.abandon()
            self.last = None
        if task.cancelled():
            self.settle(cancelled=True)
            return
        error = task.exception()  # retrieved, so a failure nobody awaited is not logged
        self.settle(None if error is not None else task.result(), error)

    def settle(
        self,
        result: V | None = None,
        error: BaseException | None = None,
        *,
        cancelled: bool = False,
    ) -> None:
        """The work ended: forget it, and give every caller still waiting its outcome."""
        self.flights._forget(self)
        # Each waiter points back here: dropping them breaks the cycle, so the flight
        # and the result it holds are freed now, not left to the cyclic collector
        # (which would walk every report held meanwhile, again and again).
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters:
            if waiter.done():
                continue
            if cancelled:
                waiter.abandon()
            elif error is not None:
                waiter.set_exception(error)
                # A caller cancelled before it resumed never reads its share: the error
                # is the work's, already retrieved, so its copies are too.
                waiter.exception()
            else:
                waiter.set_result(result)  # type: ignore[arg-type]  # V when no error
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)


class SingleFlight(Generic[K, V]):
    """Work by key, run at most once at a time per key; see the module docstring."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[K, V]] = {}
        self._cancelling = False  # in cancel_all: a cancelled leader hands nothing over

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
            flight = _Flight(self, key, loop.create_task(work()), leading=False)
            self._flights[key] = flight
        waiter: _Waiter[V] = _Waiter(loop=loop)
        waiter.flight = flight
        waiter.leaving = False
        flight.waiters[waiter] = None
        return waiter

    async def lead(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """
        :meth:`run`, doing the work in the calling task itself when nothing for *key*
        is in flight (see the module docstring): for a caller that would only await it.
        """
        task = asyncio.current_task()
        if key in self._flights or task is None:
            return await self.join(key, work)
        flight = _Flight(self, key, task, leading=True)
        self._flights[key] = flight
        try:
            result = await work()
        except asyncio.CancelledError:
            flight.hand_over(work)
            raise
        except Exception as exc:
            flight.settle(error=exc)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: nobody gets an answer
            flight.settle(cancelled=True)
            raise
        flight.settle(result)
        return result

    def tasks(self) -> list[asyncio.Task[Any]]:
        """
        The tasks the work in flight now runs in: a task of its own, or the task of
        the caller leading it.
        """
        return [flight.task for flight in self._flights.values()]

    async def cancel_all(self) -> None:
        """
        Cancel the work in flight now, and return once it has ended: in a task of its
        own, or in the task of the caller leading it (which goes on with its own work).
        """
        flights = list(self._flights.values())
        ended: list[asyncio.Future[Any]] = []
        for flight in flights:
            if flight.leading:
                if flight.ended is None:
                    flight.ended = asyncio.get_running_loop().create_future()
                ended.append(flight.ended)
            else:
                ended.append(flight.task)
            flight.task.cancel()
        if not ended:
            return
        self._cancelling = True
        try:
            await asyncio.gather(*ended, return_exceptions=True)
        finally:
            self._cancelling = False

    def _forget(self, flight: _Flight[K, V]) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
