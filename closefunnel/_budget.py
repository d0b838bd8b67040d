"""
The gate's budget: what Close's responses taught about one key's endpoint group, and the
rules that turn it into "send now" or "wait until t". Pure: the caller passes ``now``.

The rules (reference/rate-limiting.md §8), in named parts:

- :class:`Window`: the current rate-limit window. Its end and the budget left in it are
  learned from every ``RateLimit`` header. ``remaining`` minus every other request that may
  not have been counted when the server wrote it (all those granted since this one was,
  and those still unsettled when it was: the server counts in arrival order, not send
  order) is a lower bound on what is left; the tighter of two lower bounds wins. When the
  budget is spent, requests wait for the window's end. When a window ends unseen, the
  next one is guessed from what the last full window accepted (a drained bucket refills
  by less than its capacity when the server allows bursts).
- :class:`Pause`: after a 429, one pause for the whole group (the server's reset plus a
  small positive jitter), then a single probe request before anything else is sent. No
  hold (a pause or a spent window) lasts longer than ``max_hold``: past it one probe goes
  out and the gate learns again, so one hostile header cannot lock a client out.
- :class:`ColdStart`: before the first answer, at most :data:`COLD_START` requests go out.
- In-flight accounting: granted, settled (answered, failed or refunded) and in flight.

One set of rules serves every store: the in-process gate keeps a :class:`Budget` in
memory; the shared gate (:mod:`closefunnel._redis_gate`) runs the same rules in Redis's
script (:mod:`closefunnel._redis_script`), and a differential test drives both with the
same events. They differ only where sharing makes them (the script's docstring says how):

- the script calls :meth:`Budget.ready_at` at the end of every call, settles only
  included, so an ended window rolls sooner there, and a roll subtracts the permits in
  flight at that moment;
- ``Pause.after_seq`` and the "granted since" of :meth:`Budget.observe` use ``seq`` as
  of when the settle reaches Redis (every process's grants until then), not as of the
  answer's arrival: more cautious, never less;
- leases (and their expiry, as a request that failed), the fairness share between
  processes, and applying a settle at most once exist only in the script: in process a
  permit is observed and released once by construction.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from closefunnel._ratelimit import RateLimitInfo

__all__ = ["COLD_START", "RESUME_MARGIN", "Budget", "ColdStart", "Pause", "Window", "jitter_cap"]

#: Sent this long after a learned reset, so clock granularity never puts a request
#: into the old window.
RESUME_MARGIN: Final = 0.002
#: Requests sent before the first answer teaches the gate the limit: enough for a base
#: report and three compared ranges at once. A key limited to fewer than this per window
#: meets the limit once, on its first burst, and is paced from then on.
COLD_START: Final = 4
#: The largest jitter added to a 429 pause, and its share of the pause.
_MAX_JITTER: Final = 0.25
_JITTER_SHARE: Final = 0.1


def jitter_cap(pause: float) -> float:
    """The largest positive jitter to add to a 429 pause of *pause* seconds."""
    return min(_MAX_JITTER, _JITTER_SHARE * max(0.0, pause))


@attrs.define
class Window:
    """
    The learned rate-limit window.

    Attributes:
        end: When the current window ends (None: unknown).
        asked_end: The end the server asked for, before ``max_hold`` capped it.
        budget: Requests believed left in it (None: unknown).
        confirmed: Whether ``budget`` came from a response of this window (not a guess).
        length: The longest reset seen: an estimate of the window's length.
        limit: The learned per-window limit (None: unknown).
        count: Windows learned of (the first one starts with a full bucket).
        accepted: Answers counted in the current window.
        accepted_before: ... and in the one before.
    """

    end: float | None = None
    asked_end: float | None = None
    budget: float | None = None
    confirmed: bool = False
    length: float = 0.0
    limit: float | None = None
    count: int = 0
    accepted: int = 0
    accepted_before: int = 0


@attrs.define
class Pause:
    """
    The shared pause after a 429 and the probe that ends it.

    Attributes:
        until: No request is sent before this (capped at ``max_hold`` from the 429).
        asked_until: What the server asked for, uncapped.
        probe: Whether the next request is a single probe.
        after_seq: Permits up to this one were sent before the last pause began.
        answered: Non-429 answers to permits sent after the last pause.
    """

    until: float = 0.0
    asked_until: float = 0.0
    probe: bool = False
    after_seq: int = 0
    answered: int = 0


@attrs.define
class ColdStart:
    """Nothing answered yet: at most :data:`COLD_START` requests go out."""

    cold: bool = True
    sent: int = 0


@attrs.define
class Budget:
    """
    The rules of one gate over state that a store can hold; see the module docstring.

    Args:
        max_hold: The longest any hold lasts before one probe goes out (seconds).
    """

    max_hold: float = math.inf
    window: Window = attrs.field(factory=Window)
    pause: Pause = attrs.field(factory=Pause)
    cold: ColdStart = attrs.field(factory=ColdStart)
    headers_seen: bool = False
    seq: int = 0  #: permits granted
    seen: int = 0  #: requests settled: answered, failed without an answer, or refunded
    in_flight: int = 0
    rate_limited: int = 0

    # -- deciding ------------------------------------------------------------------

    def blocked(self) -> bool:
        """Whether a request must wait for an answer (a probe or the cold start) to go."""
        if self.pause.probe and self.in_flight > 0:
            return True
        return self.cold.cold and self.cold.sent >= COLD_START

    def ready_at(self, now: float) -> float:
        """When the next request may be sent (rolls a window that has ended)."""
        ready = self.pause.until
        window = self.window
        if window.budget is not None and window.budget < 1:
            if window.end is not None and now < window.end + RESUME_MARGIN:
                return max(ready, window.end + RESUME_MARGIN)
            self._roll(now)  # leaves a budget of at least one, or none at all
        return ready

    def asked_wait(self, now: float) -> float:
        """
        How long the server asked the next request to wait, uncapped: a caller whose
        patience is shorter is told at once rather than queued. Zero once ``max_hold``
        has let a probe through.
        """
        ready = self.ready_at(now)
        if ready <= now:
            return 0.0
        asked = max(ready, self.pause.asked_until)
        window = self.window
        if window.budget is not None and window.budget < 1 and window.asked_end is not None:
            asked = max(asked, window.asked_end + RESUME_MARGIN)
        return asked - now

    def grant(self) -> tuple[int, int]:
        """Take one permit now: returns its ``(seq, seen)`` stamp."""
        self.cold.sent += self.cold.cold
        self.seq += 1
        self.in_flight += 1
        if self.window.budget is not None:
            self.window.budget -= 1
        return self.seq, self.seen

    def _roll(self, now: float) -> None:
        # The learned window has ended. Until a response of the new one says how much it
        # holds, guess from what the last full window accepted. The first window starts
        # full, so its count says nothing about the refill: after it, only a cold-start
        # batch goes out. Requests still in flight may be counted in the new window.
        window = self.window
        window.accepted_before = window.accepted
        window.accepted = 0
        end, asked = window.end, window.asked_end
        if end is not None and asked is not None and asked > end:
            # max_hold cut this window short: one probe goes, and its answer starts afresh.
            window.budget = None
            window.end = window.asked_end = None
            self.pause.probe = True
            self.pause.after_seq = self.seq
        elif window.limit is None or window.end is None or window.length <= 0:
            window.budget = None
            window.end = window.asked_end = None
        else:
            # Whole windows, so an idle gate does not roll into a window already over.
            passed = math.floor((now - window.end) / window.length) + 1
            window.end += max(1, passed) * window.length
            window.asked_end = window.end
            if not self.headers_seen:
                guess = window.limit  # learned from the 429s (_learn_from_pause)
            elif window.count > 1:
                guess = float(window.accepted_before)
            else:
                guess = float(COLD_START)
            # At least one, so that an answer from the new window can correct the guess.
            window.budget = max(1.0, min(window.limit, guess) - self.in_flight)
            window.count += 1
        window.confirmed = False

    # -- learning ------------------------------------------------------------------

    def observe(
        self,
        seq: int,
        seen: int,
        status: int,
        info: RateLimitInfo | None,
        pause: float,
        now: float,
        *,
        jitter: float = 0.0,
    ) -> None:
        """
        Learn from the answer to permit ``(seq, seen)``: its status, its rate-limit header
        and, for a 429, the pause it asks for (*jitter* is added to that pause).
        """
        self.cold.cold = False
        self.seen += 1
        if status == 429:
            self._on_429(info, pause, now, jitter)
            return
        if seq <= self.pause.after_seq:
            return  # sent before the last pause began: it says nothing about after it
        self.pause.probe = False
        self.pause.answered += 1
        if info is not None:
            self.headers_seen = True
            self._learn(seq, seen, info, now)

    def _on_429(self, info: RateLimitInfo | None, pause: float, now: float, jitter: float) -> None:
        self.rate_limited += 1
        state = self.pause
        state.after_seq = self.seq
        asked = now + pause + RESUME_MARGIN + jitter
        state.asked_until = max(state.asked_until, asked)
        state.until = max(state.until, min(asked, now + self.max_hold))
        state.probe = True
        self.window.confirmed = False
        if info is None and not self.headers_seen and pause > 0:
            self._learn_from_pause(pause)
        else:
            # The pause outlasts the window the header describes; start afresh after it.
            self.window.budget = None
            self.window.end = self.window.asked_end = None
        state.answered = 0

    def _learn_from_pause(self, pause: float) -> None:
        # No rate-limit headers: the 429s are the only signal. The requests answered
        # since the last pause are what one window holds, and the server's pause is a
        # window; after the pause, send that many per pause-length period.
        window = self.window
        if self.pause.answered > 0:
            window.limit = float(self.pause.answered)
        # A pause is at most a window (Retry-After is the reset rounded up).
        if pause <= self.max_hold:
            window.length = max(window.length, pause)
        if window.limit is not None:
            window.budget = window.limit
            window.end = window.asked_end = self.pause.until + window.length

    def _learn(self, seq: int, seen: int, info: RateLimitInfo, now: float) -> None:
        window = self.window
        if info.limit is not None:
            window.limit = info.limit
        reset = min(info.reset, self.max_hold)
        if info.reset <= self.max_hold:  # a capped reset says nothing of the window's length
            window.length = max(window.length, reset)
        ends = now + reset
        # A lower bound on what is left (see the module docstring).
        budget = info.remaining - (self.seq - 1 - seen)
        tolerance = 0.5 * window.length
        if window.end is None or ends > window.end + tolerance:
            window.end = ends  # the first response of a new window
            window.asked_end = now + info.reset
            window.budget = budget
            window.accepted_before, window.accepted = window.accepted, 0
            window.count += 1
        elif ends < window.end - tolerance:
            window.accepted_before += 1  # a late answer from a window that is over
            return
        else:
            if ends < window.end:
                window.end = ends
                window.asked_end = now + info.reset
            if window.confirmed and window.budget is not None:
                window.budget = max(window.budget, budget)
            else:
                window.budget = budget
        window.accepted += 1
        window.confirmed = True

    def release(self, seq: int, *, refund: bool, settled: bool) -> None:
        """
        Give permit *seq* back. *settled*: it got no answer (never sent, or a network
        error), so later budgets must not keep counting it as possibly uncounted.
        *refund*: nothing was sent, so its budget comes back too.
        """
        self.in_flight -= 1
        if settled:
            self.seen += 1
        if not refund:
            self.cold.cold = False  # answered or failed: either way, stop holding the queue
        elif self.cold.cold:
            self.cold.sent -= 1  # handed back unsent: it does not count toward the cold start
        if refund and self.window.budget is not None:
            self.window.budget += 1
        if self.pause.probe and not refund and seq > self.pause.after_seq:
            # The probe ended without an answer (a network error): stop waiting for one.
            self.pause.probe = False
