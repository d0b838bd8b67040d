"""
The rate-limit gate: one per credential and endpoint group, shared by every call.

Close limits each API key per endpoint group with a windowed token bucket and tells
every response how much of the window is left (``RateLimit: remaining=R, reset=T``).
The gate turns that into admission control, so a bulk job runs at the allowed rate
instead of discovering it through 429s (reference/rate-limiting.md §7-§8):

- a FIFO queue with a cap on requests in flight (retries join at the front, so the
  oldest work finishes first and nothing starves);
- a budget learned from every response: ``remaining`` minus every other request that
  may not have been counted when the server wrote it (all those sent and not yet
  answered when the answered one was sent: the server counts in arrival order, which
  is not the send order) is a lower bound on what is left. When it reaches zero the gate
  holds new requests until the window's reset instead of sending them into a 429. The
  reset is measured from when the response arrived, which is never earlier than when the
  server counted, so waiting for it is safe;
- on a 429, one shared pause for the whole group (the server's reset plus a small
  positive jitter), then a single probe request before the queue is released again, so
  a pause ends without a burst of simultaneous retries;
- one timer for the whole queue and only the head waiter woken: no polling, no herd.

Cancellation is safe at every await point: a waiter cancelled in the queue leaves it; a
permit granted to a task that is cancelled before it resumes is handed back (with its
budget, since nothing was sent); a permit whose request was sent is released exactly
once by the caller's ``finally`` (its budget stays spent: the server may have counted it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
from typing import Final

import attrs

from closefunnel._errors import RateLimitedError
from closefunnel._ratelimit import RateLimitInfo

__all__ = ["GateSnapshot", "Permit", "RateLimitGate"]

#: Sent this long after a learned reset, so clock granularity never puts a request
#: into the old window.
_RESUME_MARGIN: Final = 0.002
#: Requests sent before the first answer teaches the gate the limit: enough for a base
#: report and three compared ranges at once. A key limited to fewer than this per window
#: meets the limit once, on its first burst, and is paced from then on.
_COLD_START: Final = 4
#: The largest jitter added to a 429 pause, and its share of the pause.
_MAX_JITTER: Final = 0.25
_JITTER_SHARE: Final = 0.1


@attrs.frozen(kw_only=True)
class GateSnapshot:
    """
    A read-only view of one gate, for monitoring and for tests that prove nothing leaked.

    Attributes:
        group: The endpoint group (``"POST report/funnel"``).
        in_flight: Permits granted and not yet released.
        waiting: Callers queued for a permit.
        max_concurrency: The cap on ``in_flight``.
        paused_for: Seconds until a 429 pause ends (0 when not paused).
        budget: Requests the gate believes are left in the current window (None: unknown).
        window_ends_in: Seconds until the learned window resets (None: unknown).
        probing: Whether the gate is letting one probe through after a pause.
        sent: Permits granted since the gate was made.
        rate_limited: 429 responses seen.
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


class Permit:
    """
    Leave to send one request; report what came back with :meth:`observe`, then
    :meth:`release` (idempotent) in a ``finally``.
    """

    __slots__ = ("_gate", "_observed", "_released", "seen", "sent_at", "seq")

    def __init__(self, gate: RateLimitGate, seq: int, sent_at: float, seen: int = 0) -> None:
        self._gate = gate
        self._observed = False
        self._released = False
        self.seq = seq
        self.sent_at = sent_at
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
    Admission control for one credential and endpoint group; see the module docstring.

    Args:
        group: The endpoint group, for snapshots and errors.
        max_concurrency: The most requests in flight at once.
        seed: Seed for the pause jitter (None = random).
    """

    def __init__(self, group: str, *, max_concurrency: int, seed: int | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.group = group
        self._cap = max_concurrency
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: collections.deque[asyncio.Future[Permit]] = collections.deque()
        self._in_flight = 0
        self._seq = 0
        self._rate_limited = 0
        self._pause_until = 0.0
        self._probe = False
        self._pause_seq = 0  # permits up to this one were sent before the last 429 pause
        self._answered = 0  # non-429 answers to permits sent after the last pause
        self._seen = 0  # requests settled: answered, failed without an answer, or refunded
        self._headers_seen = False
        self._cold = True  # nothing answered yet: at most _COLD_START requests go out
        self._cold_sent = 0  # requests sent while cold (a refunded permit was not sent)
        # What the responses taught: the current window's end (loop time), the budget
        # left in it, whether that budget was confirmed by a response or guessed at a
        # window roll, the longest reset seen (an estimate of the window) and the limit.
        self._window_end: float | None = None
        self._budget: float | None = None
        self._confirmed = False
        self._window = 0.0
        self._limit: float | None = None
        self._windows = 0  # windows learned of (the first one starts with a full bucket)
        self._accepted = 0  # answers counted in the current window
        self._accepted_before = 0  # ... and in the one before
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- acquiring -----------------------------------------------------------------

    async def acquire(self, *, max_wait: float = math.inf, front: bool = False) -> Permit:
        """
        Wait for a permit to send one request.

        Args:
            max_wait: Raise :class:`RateLimitedError` instead of queueing when the group
                is paused for longer than this.
            front: Join the queue at the front (retries: the oldest work goes first).
        """
        loop = self._bind()
        now = loop.time()
        held_for = self._ready_at(now) - now
        if held_for > max_wait:
            raise RateLimitedError(
                f"{self.group} is held by Close's rate limit for {held_for:.1f}s, "
                f"longer than the retry policy's max_wait of {max_wait:g}s",
                retry_after=held_for,
            )
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

    def snapshot(self) -> GateSnapshot:
        """The gate's state now."""
        now = self._loop.time() if self._loop is not None else 0.0
        return GateSnapshot(
            group=self.group,
            in_flight=self._in_flight,
            waiting=sum(1 for future in self._waiters if not future.done()),
            max_concurrency=self._cap,
            paused_for=max(0.0, self._pause_until - now),
            budget=self._budget,
            window_ends_in=None if self._window_end is None else self._window_end - now,
            probing=self._probe,
            sent=self._seq,
            rate_limited=self._rate_limited,
        )

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a closefunnel client is bound to the event loop it first ran on")
        return loop

    # -- dispatching ---------------------------------------------------------------

    def _dispatch(self) -> None:
        loop = self._loop
        assert loop is not None  # set by acquire() before anything is queued
        while self._waiters:
            head = self._waiters[0]
            if head.done():
                self._waiters.popleft()
                continue
            if self._in_flight >= self._cap or (self._probe and self._in_flight > 0):
                return  # _release() dispatches again
            if self._cold and self._cold_sent >= _COLD_START:
                return  # the first answer (or release) dispatches again
            now = loop.time()
            ready = self._ready_at(now)
            if ready > now:
                self._arm(ready)
                return
            self._waiters.popleft()
            self._cold_sent += self._cold
            self._seq += 1
            self._in_flight += 1
            if self._budget is not None:
                self._budget -= 1
            head.set_result(Permit(self, self._seq, now, self._seen))

    def _ready_at(self, now: float) -> float:
        ready = self._pause_until
        if self._budget is not None and self._budget < 1:
            end = self._window_end
            if end is not None and now < end + _RESUME_MARGIN:
                return max(ready, end + _RESUME_MARGIN)
            self._roll_window(now)  # leaves a budget of at least one, or none at all
        return ready

    def _roll_window(self, now: float) -> None:
        # The learned window has ended. Until a response of the new one says how much it
        # holds, guess from what the last full window accepted: a drained bucket refills
        # by its refill amount, which is less than its capacity (the header's ``limit``)
        # when the server allows bursts. The first window starts full, so its count says
        # nothing about the refill: after it, only a cold-start batch goes out. Requests
        # still in flight may be counted in the new window, so they are subtracted.
        self._accepted_before = self._accepted
        self._accepted = 0
        if self._limit is None or self._window_end is None or self._window <= 0:
            self._budget = None
            self._window_end = None
        else:
            # Whole windows, so an idle gate does not roll into a window already over.
            passed = math.floor((now - self._window_end) / self._window) + 1
            self._window_end += max(1, passed) * self._window
            if not self._headers_seen:
                guess = self._limit  # learned from the 429s (_learn_from_pause)
            elif self._windows > 1:
                guess = self._accepted_before
            else:
                guess = _COLD_START
            # At least one, so that an answer from the new window can correct the guess:
            # answers to requests of the old window say nothing about the new one.
            self._budget = max(1.0, min(self._limit, guess) - self._in_flight)
            self._windows += 1
        self._confirmed = False

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
        now = self._loop.time()
        self._cold = False
        self._seen += 1
        if status == 429:
            self._rate_limited += 1
            self._pause_seq = self._seq
            jitter = self._rng.uniform(0.0, min(_MAX_JITTER, _JITTER_SHARE * pause))
            self._pause_until = max(self._pause_until, now + pause + _RESUME_MARGIN + jitter)
            self._probe = True
            self._confirmed = False
            if info is None and not self._headers_seen and pause > 0:
                self._learn_from_pause(pause)
            else:
                # The pause outlasts the window the header describes; start afresh after it.
                self._budget = None
                self._window_end = None
            self._answered = 0
            return
        if permit.seq <= self._pause_seq:
            return  # sent before the last pause began: it says nothing about after it
        self._probe = False
        self._answered += 1
        if info is not None:
            self._headers_seen = True
            self._learn(permit, info, now)

    def _learn_from_pause(self, pause: float) -> None:
        # No rate-limit headers: the 429s are the only signal. The requests answered
        # since the last pause are what one window holds, and the server's pause is a
        # window; after the pause, send that many per pause-length period, in phase
        # with the pause's end (which falls inside the next server window).
        if self._answered > 0:
            self._limit = float(self._answered)
        # A pause is at most a window (Retry-After is the reset rounded up), so the
        # longest pause seen is the best guess at the window's length.
        self._window = max(self._window, pause)
        if self._limit is not None:
            self._budget = self._limit
            self._window_end = self._pause_until + pause

    def _learn(self, permit: Permit, info: RateLimitInfo, now: float) -> None:
        if info.limit is not None:
            self._limit = info.limit
        self._window = max(self._window, info.reset)
        ends = now + info.reset
        # A lower bound on what is left: every other request granted and not answered
        # before this one was sent may have been counted after it (the server counts in
        # arrival order, and requests sent together arrive in any order).
        budget = info.remaining - (self._seq - 1 - permit.seen)
        tolerance = 0.5 * self._window
        if self._window_end is None or ends > self._window_end + tolerance:
            self._window_end = ends  # the first response of a new window
            self._budget = budget
            self._accepted_before, self._accepted = self._accepted, 0
            self._windows += 1
        elif ends < self._window_end - tolerance:
            self._accepted_before += 1  # a late answer from a window that is over
            return
        else:
            self._window_end = min(self._window_end, ends)
            confirmed = self._confirmed and self._budget is not None
            self._budget = max(self._budget, budget) if confirmed else budget  # type: ignore[type-var]
        self._accepted += 1
        self._confirmed = True
        self._dispatch()

    def _release(self, permit: Permit, refund: bool, *, settled: bool) -> None:
        self._in_flight -= 1
        if settled:
            # No answer (never sent, or a network error): the request is settled all the
            # same, and later budgets must not keep counting it as possibly uncounted.
            self._seen += 1
        if not refund:
            self._cold = False  # answered or failed: either way, stop holding the queue
        elif self._cold:
            self._cold_sent -= 1  # handed back unsent: it does not count toward the cold start
        if refund and self._budget is not None:
            self._budget += 1
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._probe and not refund and permit.seq > self._pause_seq:
            # The probe ended without an answer (a network error): stop waiting for one.
            self._probe = False
        self._dispatch()
