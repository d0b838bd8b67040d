"""
The one retry policy: what is retried, how long to wait, when to give up.

Built on tenacity, configured only here. A fresh ``AsyncRetrying`` is made for every
call, so no state leaks between calls. The funnel report endpoints are read-only POSTs
(and the list endpoints GETs), so repeating them after a timeout or a reset is safe; a
future write endpoint must not use this policy.

What is retried:

- 429: after the gate's shared pause (the wait here is 0; the gate holds every request
  of the endpoint group until the reset). Not counted against ``attempts``, bounded by
  ``deadline``; a pause longer than ``max_wait`` raises :class:`RateLimitedError` at once.
- 500/502/503/504, connection errors, resets, timeouts, truncated or undecodable 2xx
  bodies: capped exponential backoff with full jitter (a 503's ``Retry-After`` is
  honoured as a floor). Not a body past ``max_response_bytes``: it would come again.
- Never 400/401/403/404, never ``CancelledError``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import attrs
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from closefunnel._errors import (
    RateLimitedError,
    ResponseDecodeError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "call_with_retries", "is_retryable", "retrying"]

logger: Final = logging.getLogger("closefunnel")

T = TypeVar("T")

#: Server statuses that are worth another attempt.
RETRYABLE_STATUSES: Final = frozenset({500, 502, 503, 504})


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN, which every comparison would silently pass
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """
    How hard to try before giving up.

    Attributes:
        attempts: Tries per request for errors other than 429 (1 = no retries).
        max_wait: The longest server-requested pause (429 reset, 503 Retry-After) worth
            sleeping through; a longer one raises at once instead of stalling the caller.
        deadline: Seconds one call may take in all, 429 pauses and backoff included.
        backoff_initial: First backoff cap in seconds; it doubles per attempt.
        backoff_max: Largest backoff cap in seconds.
        seed: Seed the backoff jitter for reproducible runs (None = random).

    ``RetryPolicy(backoff_initial=0, backoff_max=0)`` retries without waiting, for tests.
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_wait: float = attrs.field(default=60.0, validator=_positive)
    deadline: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    backoff_initial: float = attrs.field(default=0.25, validator=_positive)
    backoff_max: float = attrs.field(default=10.0, validator=_positive)
    seed: int | None = None

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in ``[0, min(backoff_max, backoff_initial * 2**(attempt-1))]``."""
        cap = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt - 1, 32))
        return rng.uniform(0.0, cap) if cap > 0 else 0.0


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """
    Whether *exc* is worth another attempt under *policy* (the deadline is the stop
    rule's business, not this one's).
    """
    if isinstance(exc, RateLimitedError):
        wait = exc.retry_after or 0.0
        return wait <= policy.max_wait and wait < policy.deadline
    if isinstance(exc, ServerError):
        if exc.status not in RETRYABLE_STATUSES:
            return False
        return exc.retry_after is None or exc.retry_after <= policy.max_wait
    if isinstance(exc, ResponseTooLargeError):
        return False  # the same request gets the same body: reading it again only costs
    return isinstance(exc, TransportError | ResponseDecodeError)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}({status})" if status else type(exc).__name__


def retrying(policy: RetryPolicy, *, what: str, started: float | None = None) -> AsyncRetrying:
    """
    A fresh tenacity retrier for one call described by *what* (for the log).

    *started* is when the call began (``time.monotonic()``), if before the retrier: the
    deadline counts from there.

    Usage::

        async for attempt in retrying(policy, what="POST report/funnel"):
            with attempt:
                ...
    """
    rng: random.Random | None = None  # made on the first backoff: most calls never need one
    begun = time.monotonic() if started is None else started
    errors = 0  # failed attempts other than 429s

    def retry_predicate(exc: BaseException) -> bool:
        # tenacity asks this first for every failed attempt (then wait, then stop), so the
        # count is current wherever it is read.
        nonlocal errors
        if not isinstance(exc, RateLimitedError):
            errors += 1
        return is_retryable(exc, policy)

    def stop(state: RetryCallState) -> bool:
        if errors >= policy.attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        wait = exc.retry_after if isinstance(exc, RateLimitedError) else 0.0
        return time.monotonic() - begun + (wait or 0.0) >= policy.deadline

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError):
            return 0.0  # the gate holds the shared pause for every request of the group
        nonlocal rng
        if rng is None:
            rng = random.Random(policy.seed)
        delay = policy.backoff(max(errors, 1), rng)
        if isinstance(exc, ServerError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return min(delay, max(0.0, policy.deadline - (time.monotonic() - begun)))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning(
            "closefunnel.retry: %s attempt %d failed with %s; retrying in %.2fs",
            what,
            state.attempt_number,
            _reason(exc),
            state.upcoming_sleep,
            extra={
                "closefunnel_attempt": state.attempt_number,
                "closefunnel_reason": _reason(exc),
                "closefunnel_wait": state.upcoming_sleep,
            },
        )

    return AsyncRetrying(
        retry=retry_if_exception(retry_predicate),
        stop=stop,
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )


async def call_with_retries(
    attempt: Callable[[bool], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    started: float | None = None,
    failure: Exception | None = None,
) -> T:
    """
    ``await attempt(retry)`` under *policy*: once bare, then through :func:`retrying`.

    Most calls succeed the first time, and building a tenacity retrier costs more than
    the rest of the client's bookkeeping for a request, so the first attempt runs
    without one. After a retryable failure the retrier takes over and is handed that
    failure as its own first attempt, so attempts, waits, logs and the stop rules are
    exactly those of a retrier that ran from the start. *retry* tells the attempt
    whether it is a retry (retries go to the front of the gate's queue).

    A caller that made the first attempt itself (the client does, when a permit is
    free at once) passes its error as *failure* and when it began as *started*
    (``time.monotonic()``): the retries go on from there, or *failure* is raised again
    at once when it is not worth another attempt.
    """
    began = time.monotonic() if started is None else started
    if failure is None:
        try:
            return await attempt(False)
        except Exception as exc:
            failure = exc
    if not is_retryable(failure, policy):
        raise failure
    pending: Exception | None = failure  # handed to the retrier as its first attempt
    async for retry in retrying(policy, what=what, started=began):
        with retry:
            if pending is not None:
                replay, pending = pending, None
                raise replay
            return await attempt(True)
    raise AssertionError("unreachable: the retrier either returns or raises")
