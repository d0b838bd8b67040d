"""The retry policy's arithmetic, driven through tenacity exactly as the client does."""

from __future__ import annotations

import random

import attrs
import pytest

import closefunnel as cf
from closefunnel._retry import call_with_retries


@attrs.frozen(kw_only=True)
class RecordingPolicy(cf.RetryPolicy):
    """A policy that never sleeps and records the attempt number of each backoff."""

    seen: list[int] = attrs.field(factory=list)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        self.seen.append(attempt)
        return 0.0


async def test_backoff_grows_with_each_failure_from_the_first() -> None:
    """The n-th failure waits with exponent n; attempts bound the whole call."""
    policy = RecordingPolicy(attempts=5)
    calls = 0

    async def attempt(retry: bool) -> None:
        nonlocal calls
        calls += 1
        raise cf.TransportError("connection reset")

    with pytest.raises(cf.TransportError):
        await call_with_retries(attempt, policy, what="POST report/funnel")
    assert calls == 5
    # tenacity works out a wait for the last failure too, before its stop rule ends the call
    assert policy.seen[:4] == [1, 2, 3, 4]


async def test_rate_limits_do_not_use_up_attempts() -> None:
    """429s (after the gate's pause) are retried without counting against attempts."""
    policy = RecordingPolicy(attempts=2)
    outcomes: list[Exception] = [cf.RateLimitedError("429", retry_after=0.0)] * 4
    outcomes.append(cf.ServerError("503", status=503))
    calls = 0

    async def attempt(retry: bool) -> str:
        nonlocal calls
        calls += 1
        if outcomes:
            raise outcomes.pop(0)
        return "report"

    assert await call_with_retries(attempt, policy, what="POST report/funnel") == "report"
    assert calls == 6
    assert policy.seen == [1]
