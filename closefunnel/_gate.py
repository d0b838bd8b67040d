"""
The rate-limit gate's asyncio shell: one per credential and endpoint group, shared by
every call. The rules live in :class:`closefunnel._budget.Budget` (pure, ``now`` passed
in); this module keeps what needs an event loop:

- a FIFO queue with a cap on requests in flight (retries join at the front, so the
  oldest work finishes first and nothing starves);
- one timer for the whole queue and only the head waiter woken: no polling, no herd;
- cancellation safety at every await point: a waiter cancelled in the queue leaves it; a
  permit granted to a task that is cancelled before it resumes is handed back (with its
  budget, since nothing was sent); a permit whose request was sent is released exactly
  once by the caller's ``finally`` (its budget stays spent: the server may have counted it).

The shared gate (:mod:`closefunnel._redis_gate`) has the same interface: :meth:`acquire`
gives a :class:`Permit`-like object with ``observe`` and ``release``, and ``snapshot``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
from collections.abc import Callable
from typing import Protocol

import attrs

from closefunnel._budget import Budget, jitter_cap
from closefunnel._errors import RateLimitedError
from closefunnel._ratelimit import RateLimitInfo

__all__ = ["Gate", "GatePermit", "GateSnapshot", "Permit", "RateLimitGate", "too_long_error"]


@attrs.frozen(kw_only=True)
class GateSnapshot:
    """
    A read-only view of one gate, for monitoring and for tests that prove nothing leaked.

    Attributes:
        group: The endpoint group (``"POST report/funnel"``).
        in_flight: Permits this process holds (granted and not yet released).
        waiting: Callers of this process queued for a permit.
        max_concurrency: The cap on ``in_flight``.
        paused_for: Seconds until a 429 pause ends (0 when not paused).
        budget: Requests the gate believes are left in the current window (None: unknown).
        window_ends_in: Seconds until the learned window resets (None: unknown).
        probing: Whether the gate is letting one probe through after a pause.
        sent: Permits granted since the gate was made (by this process).
        rate_limited: 429 responses seen (by this process).
        shared: Whether the state is shared with other processes (through Redis) right
            now; False for the in-process gate and while a shared gate has fallen back.
    """

    group: str
    in_flight: int
    waiting: int
    max_concurrency: int
    paused_for: float
    budget: float | None
    window_ends_in: float | None
    probing: bool
    sent: int
    rate_limited: int
    shared: bool = False


class GatePermit(Protocol):
    """Leave to send one request, whichever store granted it."""

    def observe(self, status: int, info: RateLimitInfo | None, *, pause: float = 0.0) -> None:
        """Teach the gate from one response."""

    def release(self, *, refund: bool = False) -> None:
        """Give the permit back; *refund* also returns its budget (nothing was sent)."""


class Gate(Protocol):
    """What the client needs of a gate: the in-process one or the shared one."""

    group: str

    async def acquire(self, *, max_wait: float = math.inf, front: bool = False) -> GatePermit:
        """Wait for a permit to send one request."""

    def try_acquire(self) -> GatePermit | None:
        """A permit at once if one is free without waiting for anything, else None."""

    def snapshot(self) -> GateSnapshot:
        """The gate's state now."""


def too_long_error(group: str, held_for: float, max_wait: float) -> RateLimitedError:
    """The error for a caller whose patience is shorter than the hold Close asked for."""
    return RateLimitedError(
        f"{group} is held by Close's rate limit for {held_for:.1f}s, "
        f"longer than the retry policy's max_wait of {max_wait:g}s",
        retry_after=held_for,
    )


class Permit:
    """
    Leave to send one request; report what came back with :meth:`observe`, then
    :meth:`release` (idempotent) in a ``finally``.
    """

    __slots__ = ("_gate", "_observed", "_released", "seen", "seq")

    def __init__(self, gate: RateLimitGate, seq: int, seen: int) -> None:
        self._gate = gate
        self._observed = False
        self._released = False
        self.seq = seq
        #: Requests the gate had settled (answered, failed or refunded) when this permit
        #: was granted: any of them the server counted, it counted before this one.
        self.seen = seen

    def observe(self, status: int, info: RateLimitInfo | None, *, pause: float = 0.0) -> None:
        """
        Teach the gate from one response: its status, its rate-limit header and, for a
        429, the pause it asks for.
        """
        if not self._observed:
            self._observed = True
            self._gate._observe(self, status, info, pause)

    def release(self, *, refund: bool = False) -> None:
        """Give the permit back; *refund* also returns its budget (nothing was sent)."""
        if not self._released:
            self._released = True
            self._gate._release(self, refund, settled=not self._observed)


class RateLimitGate:
    """
    Admission control for one credential and endpoint group, in this process.

    Args:
        group: The endpoint group, for snapshots and errors.
        max_concurrency: The most requests in flight at once.
        max_hold: The longest any hold lasts before one probe goes out.
        seed: Seed for the pause jitter (None = random).
        held_elsewhere: How many of this process's requests in flight hold a permit of
            another gate of the same group (the shared gate's leases still out while it
            falls back to this one): they count against *max_concurrency* too. Call
            :meth:`wake` when that number drops.
    """

    def __init__(
        self,
        group: str,
        *,
        max_concurrency: int,
        max_hold: float = math.inf,
        seed: int | None = None,
        held_elsewhere: Callable[[], int] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.group = group
        self._cap = max_concurrency
        self._elsewhere = held_elsewhere
        self._rng = random.Random(seed)
        self._budget = Budget(max_hold=max_hold)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: collections.deque[asyncio.Future[Permit]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- acquiring -----------------------------------------------------------------

    async def acquire(self, *, max_wait: float = math.inf, front: bool = False) -> Permit:
        """
        Wait for a permit to send one request.

        Args:
            max_wait: Raise :class:`RateLimitedError` instead of queueing when Close asked
                the group to wait longer than this.
            front: Join the queue at the front (retries: the oldest work goes first).
        """
        loop = self._bind()
        held_for = self._budget.asked_wait(loop.time())
        if held_for > max_wait:
            raise too_long_error(self.group, held_for, max_wait)
        permit = self._grant_now(loop)  # nobody queued and nothing held: no future to make
        if permit is not None:
            return permit
        future: asyncio.Future[Permit] = loop.create_future()
        if front:
            self._waiters.appendleft(future)
        else:
            self._waiters.append(future)
        self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted, then cancelled before the task resumed: nothing was sent.
                future.result().release(refund=True)
            else:
                future.cancel()
                with contextlib.suppress(ValueError):  # already dropped by _dispatch
                    self._waiters.remove(future)
            raise

    def try_acquire(self) -> Permit | None:
        """
        A permit at once when one is free (nobody queued, a slot open, no hold), else
        None: the caller then queues with :meth:`acquire`. Nothing to await means
        nothing to cancel and no future made, which is most requests of a busy client.
        """
        return self._grant_now(self._bind())

    def _at_cap(self) -> bool:
        elsewhere = 0 if self._elsewhere is None else self._elsewhere()
        return self._budget.in_flight + elsewhere >= self._cap

    def _grant_now(self, loop: asyncio.AbstractEventLoop) -> Permit | None:
        budget = self._budget
        if self._waiters or self._at_cap() or budget.blocked():
            return None  # a queue goes first; a full or blocked gate waits for an answer
        now = loop.time()
        if budget.ready_at(now) > now:
            return None
        seq, seen = budget.grant()
        return Permit(self, seq, seen)

    def snapshot(self) -> GateSnapshot:
        """The gate's state now."""
        now = self._loop.time() if self._loop is not None else 0.0
        budget = self._budget
        end = budget.window.end
        return GateSnapshot(
            group=self.group,
            in_flight=budget.in_flight,
            waiting=sum(1 for future in self._waiters if not future.done()),
            max_concurrency=self._cap,
            paused_for=max(0.0, budget.pause.until - now),
            budget=budget.window.budget,
            window_ends_in=None if end is None else end - now,
            probing=budget.pause.probe,
            sent=budget.seq,
            rate_limited=budget.rate_limited,
        )

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a closefunnel client is bound to the event loop it first ran on")
        return loop

    # -- dispatching ---------------------------------------------------------------

    def wake(self) -> None:
        """Permits held elsewhere were given back: grant to whoever may go now."""
        if self._loop is not None and not self._loop.is_closed():
            self._dispatch()

    def _dispatch(self) -> None:
        loop = self._loop
        assert loop is not None  # set by acquire() before anything is queued
        budget = self._budget
        while self._waiters:
            head = self._waiters[0]
            if head.done():
                self._waiters.popleft()
                continue
            if self._at_cap() or budget.blocked():
                return  # the next answer or release (or wake()) dispatches again
            now = loop.time()
            ready = budget.ready_at(now)
            if ready > now:
                self._arm(ready)
                return
            self._waiters.popleft()
            seq, seen = budget.grant()
            head.set_result(Permit(self, seq, seen))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at <= when:
                return  # an earlier wake-up re-evaluates and re-arms
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    # -- learning ------------------------------------------------------------------

    def _observe(
        self, permit: Permit, status: int, info: RateLimitInfo | None, pause: float
    ) -> None:
        assert self._loop is not None
        jitter = self._rng.uniform(0.0, jitter_cap(pause)) if status == 429 else 0.0
        self._budget.observe(
            permit.seq, permit.seen, status, info, pause, self._loop.time(), jitter=jitter
        )
        if status != 429:
            self._dispatch()

    def _release(self, permit: Permit, refund: bool, *, settled: bool) -> None:
        self._budget.release(permit.seq, refund=refund, settled=settled)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._dispatch()
