"""
Close's throttle, modelled: windowed token buckets per (API key, endpoint group), plus an
organization-wide bucket per endpoint group at ``org_factor`` times the key rate.

Pure: the caller passes the (monotonic) time, so tests can drive it with exact numbers.
Close's blog describes a Redis token bucket "supporting bursting and varying windows";
its docs say the organization limit is 3x the key limit and that headers describe "the
limit it's closest to hitting" (https://developer.close.com/api/overview/rate-limits).
"""

from __future__ import annotations

import math
from typing import Final, Literal

import attrs

__all__ = ["Bucket", "Decision", "RateLimiter", "endpoint_group"]

_API_ROOT: Final = "/api/v1/"


def endpoint_group(method: str, path: str) -> str:
    """
    The bucket name Close throttles *path* under: the method and the first two path
    segments below ``/api/v1/`` (``POST report/funnel``) -- Close's blog says groups are
    "URL prefix and request method". A path outside the API root is grouped by its own
    first two segments.
    """
    rel = path[len(_API_ROOT) :] if path.startswith(_API_ROOT) else path
    segments = [part for part in rel.split("/") if part][:2]
    return f"{method.upper()} {'/'.join(segments)}"


@attrs.define
class Bucket:
    """
    A windowed token bucket: full at first use, then ``refill`` tokens (capped at
    ``capacity``) at each whole ``window`` since that first use.
    """

    capacity: int
    refill: float
    window: float
    tokens: float = 0.0
    origin: float | None = None
    epoch: int = 0

    def advance(self, now: float) -> None:
        """Add the refills of every window boundary passed since the last call."""
        if self.origin is None:
            self.origin, self.epoch, self.tokens = now, 0, float(self.capacity)
            return
        epoch = math.floor(max(0.0, now - self.origin) / self.window)
        if epoch > self.epoch:
            self.tokens = min(
                float(self.capacity), self.tokens + (epoch - self.epoch) * self.refill
            )
            self.epoch = epoch

    def reset_in(self, now: float) -> float:
        """Seconds left in the current window (> 0)."""
        assert self.origin is not None
        return max(1e-6, self.origin + (self.epoch + 1) * self.window - now)

    @property
    def remaining(self) -> int:
        """Whole requests left in this window."""
        return max(0, math.floor(self.tokens + 1e-9))


@attrs.frozen(kw_only=True)
class Decision:
    """
    The limiter's answer for one request, and what to tell the client.

    ``limit``/``remaining``/``reset`` describe the bucket closest to exhaustion (for a
    rejection: the one that rejected and resets last); ``scope`` says which kind it is.
    """

    allowed: bool
    limit: int
    remaining: int
    reset: float
    window: float
    scope: Literal["key", "organization"]


@attrs.define
class RateLimiter:
    """Per key+group buckets and per-group organization buckets."""

    rps: float
    burst: float = 1.0
    window: float = 1.0
    org_factor: float = 3.0
    _keys: dict[tuple[str, str], Bucket] = attrs.field(factory=dict, init=False)
    _org: dict[str, Bucket] = attrs.field(factory=dict, init=False)

    def _bucket(self, factor: float) -> Bucket:
        rate = self.rps * factor
        return Bucket(
            capacity=max(1, math.ceil(rate * self.burst * self.window - 1e-9)),
            refill=rate * self.window,
            window=self.window,
        )

    def check(self, key_id: str, group: str, now: float) -> Decision:
        """Take a token from both buckets of (*key_id*, *group*), or reject without taking."""
        key = self._keys.get((key_id, group))
        if key is None:
            key = self._keys[(key_id, group)] = self._bucket(1.0)
        org = self._org.get(group)
        if org is None:
            org = self._org[group] = self._bucket(self.org_factor)
        key.advance(now)
        org.advance(now)
        buckets: list[tuple[Bucket, Literal["key", "organization"]]] = [
            (key, "key"),
            (org, "organization"),
        ]
        if key.tokens >= 1 - 1e-9 and org.tokens >= 1 - 1e-9:
            key.tokens -= 1
            org.tokens -= 1
            # The header describes the bucket closest to exhaustion; ties go to the key.
            bucket, scope = min(buckets, key=lambda b: b[0].remaining)
            allowed = True
        else:
            empty = [b for b in buckets if b[0].tokens < 1 - 1e-9]
            bucket, scope = max(empty, key=lambda b: b[0].reset_in(now))
            allowed = False
        return Decision(
            allowed=allowed,
            limit=bucket.capacity,
            remaining=bucket.remaining,
            reset=bucket.reset_in(now),
            window=self.window,
            scope=scope,
        )
