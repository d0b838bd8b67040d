"""The throttle: bucket arithmetic, the org cap, header styles and 429 bodies."""

from __future__ import annotations

import json
import math

import aiohttp
import pytest
from emulator_helpers import DOCS_REQUEST, TOTALS, basic, post_totals

from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.emulator._limiter import RateLimiter

GROUP = "POST report/funnel"


def test_bucket_capacity_and_window_refill() -> None:
    """Capacity is ceil(rps*burst*window); each whole window refills rps*window, capped."""
    limiter = RateLimiter(rps=2.5, burst=2.0, window=2.0, org_factor=100)
    results = [limiter.check("k", GROUP, 10.0) for _ in range(11)]
    assert [r.allowed for r in results] == [True] * 10 + [False]
    assert results[0].limit == math.ceil(2.5 * 2.0 * 2.0)
    assert [r.remaining for r in results[:3]] == [9, 8, 7]
    assert results[-1].remaining == 0
    assert results[-1].reset == pytest.approx(2.0)
    # Still inside the first window: nothing refilled.
    assert not limiter.check("k", GROUP, 11.99).allowed
    # One whole window later: 5 tokens.
    assert [limiter.check("k", GROUP, 12.5).allowed for _ in range(6)] == [True] * 5 + [False]
    assert limiter.check("k", GROUP, 12.5).reset == pytest.approx(1.5)
    # Many windows later: capped at capacity.
    assert [limiter.check("k", GROUP, 100.0).allowed for _ in range(11)] == [True] * 10 + [False]


def test_429_consumes_nothing_and_groups_are_separate() -> None:
    """Rejected requests take no token; another endpoint group has its own bucket."""
    limiter = RateLimiter(rps=1, window=1.0)
    assert limiter.check("k", GROUP, 0.0).allowed
    for _ in range(50):
        assert not limiter.check("k", GROUP, 0.5).allowed
    assert limiter.check("k", GROUP, 1.0).allowed
    assert limiter.check("k", "GET pipeline", 0.5).allowed


def test_org_bucket_caps_keys_together() -> None:
    """With org_factor 1.5, two keys together get 1.5x one key's capacity."""
    limiter = RateLimiter(rps=4, window=1.0, org_factor=1.5)
    a = [limiter.check("a", GROUP, 0.0) for _ in range(4)]
    assert all(d.allowed for d in a)
    b = [limiter.check("b", GROUP, 0.1) for _ in range(4)]
    assert [d.allowed for d in b] == [True, True, False, False]
    assert b[-1].scope == "organization"
    assert b[-1].limit == 6
    assert b[1].scope == "organization"  # org has 0 left, the key 2: org is closer


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("comma", lambda h: h["RateLimit"].startswith("limit=3, remaining=2, reset=")),
        ("semicolon", lambda h: h["RateLimit"].startswith("limit=3; remaining=2; reset=")),
        (
            "legacy",
            lambda h: h["X-Rate-Limit-Limit"] == "3" and h["X-Rate-Limit-Remaining"] == "2",
        ),
        ("none", lambda h: "RateLimit" not in h and "X-Rate-Limit-Limit" not in h),
    ],
)
async def test_header_styles(session: aiohttp.ClientSession, style: str, check: object) -> None:
    """Each header style writes limit/remaining/reset its own way (reset with 3 decimals)."""
    config = EmulatorConfig(dataset="docs-example", rps=0.3, window=10, header_style=style)  # type: ignore[arg-type]
    async with Emulator(config) as emu:
        status, headers, _ = await post_totals(session, emu, DOCS_REQUEST)
        assert status == 200
        assert callable(check)
        assert check(headers)
        if style in ("comma", "semicolon"):
            reset = headers["RateLimit"].rsplit("reset=", 1)[1]
            assert len(reset.split(".")[1]) == 3
            assert 9 < float(reset) <= 10


@pytest.mark.parametrize("legacy", [None, "top", "nested"])
async def test_429_with_retry_after_and_bodies(
    session: aiohttp.ClientSession, legacy: str | None
) -> None:
    """Past the burst a request gets 429, Retry-After = ceil(reset), and the chosen body."""
    config = EmulatorConfig(
        dataset="docs-example",
        rps=2,
        window=3,
        legacy_429_body=legacy,  # type: ignore[arg-type]
    )
    async with Emulator(config) as emu:
        statuses = [(await post_totals(session, emu, DOCS_REQUEST))[0] for _ in range(6)]
        assert statuses == [200] * 6  # capacity 2*1*3 = 6
        status, headers, body = await post_totals(session, emu, DOCS_REQUEST)
        assert status == 429
        reset = float(headers["RateLimit"].rsplit("reset=", 1)[1])
        assert headers["Retry-After"] == str(math.ceil(reset))
        assert "remaining=0" in headers["RateLimit"]
        if legacy is None:
            assert body == b""
        else:
            data = json.loads(body)
            details = data if legacy == "top" else data["error"]
            assert details["message"] == "API call count exceeded for this period"
            assert details["rate_limit"] == 6
            assert details["rate_window"] == 3
            assert details["rate_limit_type"] == "key"
            assert float(details["rate_reset"]) == pytest.approx(reset, abs=0.01)
            assert isinstance(details["rate_reset"], str if legacy == "top" else float)
        assert [e.status for e in emu.log] == [200] * 6 + [429]


async def test_unauthenticated_requests_are_not_throttled(session: aiohttp.ClientSession) -> None:
    """401s take no token and carry no rate-limit header."""
    async with Emulator(EmulatorConfig(dataset="docs-example", rps=0.1, window=10)) as emu:
        for _ in range(3):
            async with session.get(emu.base_url + "me/") as resp:
                assert resp.status == 401
                assert "RateLimit" not in resp.headers
        async with session.get(emu.base_url + "me/", headers=basic(emu.api_key)) as resp:
            assert resp.status == 200


async def test_org_cap_with_two_keys_over_http(session: aiohttp.ClientSession) -> None:
    """Two keys share the org bucket: key B is refused when the org cap is used up."""
    config = EmulatorConfig(dataset="docs-example", rps=2, window=10, org_factor=1.5, keys=2)
    async with Emulator(config) as emu:
        url = emu.base_url + TOTALS

        async def send(key: str) -> tuple[int, str]:
            async with session.post(url, json=DOCS_REQUEST, headers=basic(key)) as resp:
                return resp.status, resp.headers.get("RateLimit", "")

        a, b = emu.api_keys
        assert [(await send(a))[0] for _ in range(21)] == [200] * 20 + [429]  # key cap 20
        results = [await send(b) for _ in range(40)]
        statuses = [s for s, _ in results]
        assert statuses.count(200) == 10  # org cap 30 - 20 used by key a
        assert statuses[10:] == [429] * 30
        # The org bucket (9 left) is closer to exhaustion than key b's (19 left).
        assert results[0][1].startswith("limit=30, remaining=9,")


async def test_rate_is_per_group(session: aiohttp.ClientSession) -> None:
    """GET pipeline and POST report/funnel are throttled separately."""
    async with Emulator(EmulatorConfig(dataset="docs-example", rps=0.1, window=10)) as emu:
        assert (await post_totals(session, emu, DOCS_REQUEST))[0] == 200
        assert (await post_totals(session, emu, DOCS_REQUEST))[0] == 429
        async with session.get(emu.base_url + "pipeline/", headers=basic(emu.api_key)) as resp:
            assert resp.status == 200
