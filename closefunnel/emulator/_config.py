"""
The emulator's configuration: one frozen value, checked when it is built.

A bad option (a negative rate, an unknown fault kind, a naive ``now``) fails here, in the
caller's frame, rather than as a confusing behaviour of a running server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

__all__ = [
    "ALL_FAULTS",
    "DATASETS",
    "FAULT_KINDS",
    "HEADER_STYLES",
    "LEGACY_429_BODIES",
    "DatasetName",
    "EmulatorConfig",
    "HeaderStyle",
    "Legacy429Body",
]

DatasetName: TypeAlias = Literal["demo", "docs-example"]
HeaderStyle: TypeAlias = Literal["comma", "semicolon", "legacy", "none"]
Legacy429Body: TypeAlias = Literal[None, "top", "nested"]

#: Every fault the emulator can inject, in a fixed order (random draws index into it).
FAULT_KINDS: Final[tuple[str, ...]] = (
    "500",
    "502",
    "503",
    "503-no-retry-after",
    "504",
    "reset",
    "truncate",
    "malformed",
    "slow",
    "stall",
)
#: The default set of faults drawn when ``fault_rate > 0``: all of them.
ALL_FAULTS: Final[tuple[str, ...]] = FAULT_KINDS
#: The dataset names ``EmulatorConfig.dataset`` accepts.
DATASETS: Final = ("demo", "docs-example")
#: The rate-limit header styles ``EmulatorConfig.header_style`` accepts.
HEADER_STYLES: Final = ("comma", "semicolon", "legacy", "none")
#: The legacy 429 body styles ``EmulatorConfig.legacy_429_body`` accepts (None = no body).
LEGACY_429_BODIES: Final = (None, "top", "nested")


def _one_of(choices: tuple[Any, ...]) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {choices!r}, got {value!r}")

    return check


def _finite(*, minimum: float, strict: bool = False, maximum: float | None = None) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and attribute.name == "rps":
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{attribute.name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{attribute.name} must be finite, got {value!r}")
        if value < minimum or (strict and value == minimum):
            op = ">" if strict else ">="
            raise ValueError(f"{attribute.name} must be {op} {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{attribute.name} must be <= {maximum}, got {value!r}")

    return check


def _int_at_least(minimum: int, maximum: int | None = None) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{attribute.name} must be an int, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"{attribute.name} must be {bound}, got {value!r}")

    return check


def _to_kinds(value: Iterable[str]) -> tuple[str, ...]:
    # A bare string would be split into characters; refuse it instead.
    if isinstance(value, str):
        raise TypeError(f"faults must be a sequence of fault kinds, got the string {value!r}")
    return tuple(value)


def _check_now(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TypeError(f"now must be a datetime or None, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {value.isoformat()}")


def _check_faults(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    unknown = [kind for kind in value if kind not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {unknown!r}; known: {', '.join(FAULT_KINDS)}")


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """
    How an emulator behaves: its data, clock, rate limits, faults and size.

    Attributes:
        dataset: ``"demo"`` (a seeded organization) or ``"docs-example"`` (answers the
            request on Close's docs page with exactly its response).
        now: The emulator's clock for relative ranges and for the demo data's end;
            None follows the real clock. Must be timezone-aware.
        seed: Seeds the demo data, the keys, fault draws and latency jitter.
        rps: Requests per second allowed per API key and endpoint group; None = no limit.
        burst: Bucket capacity is ``ceil(rps * burst * window)``.
        window: Seconds per refill window; each whole window adds ``rps * window`` tokens.
        org_factor: The organization bucket (all keys together) is this times the key rate.
        header_style: ``comma``/``semicolon`` ``RateLimit`` header, ``legacy``
            ``X-Rate-Limit-*`` headers, or ``none``.
        legacy_429_body: None (empty 429 body, as today), ``"top"`` or ``"nested"`` (the
            deprecated JSON bodies with ``rate_reset``).
        latency: Seconds every response is delayed by.
        jitter: Uniform +- spread added to *latency* (clamped at 0).
        fault_rate: Probability that a request (past auth and the limiter) gets a fault.
        faults: The fault kinds drawn from when *fault_rate* > 0.
        slow_delay: Seconds of delay for the ``slow`` and ``stall`` faults.
        users: Number of users in the demo organization.
        opportunities: Number of opportunities in the demo organization.
        pipelines: Number of pipelines in the demo organization.
        keys: Number of API keys of the organization (``Emulator.api_keys``).
        host: Interface to bind; loopback unless you really mean otherwise.
        port: TCP port; 0 picks a free one.
        max_body: Largest accepted request body in bytes (larger gets 413).
        log_limit: Most requests kept in ``Emulator.log``; the oldest are dropped, so a
            long-running emulator's memory stays bounded (about 100 bytes an entry).
        header_timeout: Seconds a connection may take to send a request's line and
            headers (counted from its first byte, or from the connect for the first
            request); a client that never finishes them is disconnected, so stalled or
            hostile clients cannot hold connections open.
    """

    dataset: DatasetName = attrs.field(default="demo", validator=_one_of(DATASETS))
    now: datetime | None = attrs.field(default=None, validator=_check_now)
    seed: int = attrs.field(default=0, validator=_int_at_least(-(2**63)))
    rps: float | None = attrs.field(default=None, validator=_finite(minimum=0, strict=True))
    burst: float = attrs.field(default=1.0, validator=_finite(minimum=0, strict=True))
    window: float = attrs.field(default=1.0, validator=_finite(minimum=0, strict=True))
    org_factor: float = attrs.field(default=3.0, validator=_finite(minimum=0, strict=True))
    header_style: HeaderStyle = attrs.field(default="comma", validator=_one_of(HEADER_STYLES))
    legacy_429_body: Legacy429Body = attrs.field(default=None, validator=_one_of(LEGACY_429_BODIES))
    latency: float = attrs.field(default=0.0, validator=_finite(minimum=0))
    jitter: float = attrs.field(default=0.0, validator=_finite(minimum=0))
    fault_rate: float = attrs.field(default=0.0, validator=_finite(minimum=0, maximum=1))
    faults: tuple[str, ...] = attrs.field(
        default=ALL_FAULTS, converter=_to_kinds, validator=_check_faults
    )
    slow_delay: float = attrs.field(default=5.0, validator=_finite(minimum=0))
    users: int = attrs.field(default=12, validator=_int_at_least(1, 10_000))
    opportunities: int = attrs.field(default=30_000, validator=_int_at_least(0, 10_000_000))
    pipelines: int = attrs.field(default=3, validator=_int_at_least(1, 1_000))
    keys: int = attrs.field(default=1, validator=_int_at_least(1, 1_000))
    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_int_at_least(0, 65_535))
    max_body: int = attrs.field(default=1 << 20, validator=_int_at_least(1))
    log_limit: int = attrs.field(default=100_000, validator=_int_at_least(1))
    header_timeout: float = attrs.field(default=10.0, validator=_finite(minimum=0, strict=True))

    def __attrs_post_init__(self) -> None:
        if self.fault_rate > 0 and not self.faults:
            raise ValueError("fault_rate > 0 needs at least one fault kind in faults")
        if self.rps is not None and math.ceil(self.rps * self.burst * self.window) < 1:
            raise ValueError("rps * burst * window must allow at least one request")
