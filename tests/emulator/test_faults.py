"""Injected faults: each kind, scripted and random (seeded), and serving goes on after each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime

import aiohttp
import pytest
from emulator_helpers import DOCS_REQUEST, DOCS_RESPONSE_TEXT, TOTALS, basic, post_totals

from closefunnel.emulator import FAULT_KINDS, Emulator, EmulatorConfig

DELAY = 0.3


async def _ok(session: aiohttp.ClientSession, emu: Emulator) -> None:
    status, _, body = await post_totals(session, emu, DOCS_REQUEST)
    assert status == 200
    assert json.loads(body) == json.loads(DOCS_RESPONSE_TEXT)


@pytest.mark.parametrize("kind", ["500", "502", "503", "503-no-retry-after", "504"])
async def test_status_faults(session: aiohttp.ClientSession, kind: str) -> None:
    """5xx faults answer that status (503 with Retry-After: 1), then service resumes."""
    async with Emulator(EmulatorConfig(dataset="docs-example", rps=100)) as emu:
        emu.fail_next(1, kind)
        status, headers, body = await post_totals(session, emu, DOCS_REQUEST)
        assert status == int(kind[:3])
        assert (headers.get("Retry-After") == "1") is (kind == "503")
        assert "RateLimit" in headers
        assert not body or "error" in json.loads(body)
        await _ok(session, emu)
        assert [(e.status, e.fault) for e in emu.log] == [(status, kind), (200, None)]


async def test_reset_fault(session: aiohttp.ClientSession) -> None:
    """A reset closes the connection before any response byte; it is logged with status 0."""
    async with Emulator(EmulatorConfig(dataset="docs-example")) as emu:
        emu.fail_next(1, "reset")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post_totals(session, emu, DOCS_REQUEST)
        await _ok(session, emu)
        assert [(e.status, e.fault) for e in emu.log] == [(0, "reset"), (200, None)]


async def test_truncate_fault(session: aiohttp.ClientSession) -> None:
    """A truncated 200 promises the full length, sends part, and closes."""
    async with Emulator(EmulatorConfig(dataset="docs-example")) as emu:
        emu.fail_next(1, "truncate")
        url, headers = emu.base_url + TOTALS, basic(emu.api_key)
        async with session.post(url, json=DOCS_REQUEST, headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_length == len(
                json.dumps(json.loads(DOCS_RESPONSE_TEXT), separators=(",", ":"))
            )
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        await _ok(session, emu)


async def test_malformed_fault(session: aiohttp.ClientSession) -> None:
    """A malformed fault is a 200 JSON response whose body does not parse."""
    async with Emulator(EmulatorConfig(dataset="docs-example")) as emu:
        emu.fail_next(1, "malformed")
        status, headers, body = await post_totals(session, emu, DOCS_REQUEST)
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
        await _ok(session, emu)


@pytest.mark.parametrize("kind", ["slow", "stall"])
async def test_slow_and_stall_faults(session: aiohttp.ClientSession, kind: str) -> None:
    """Slow delays the whole response; stall sends headers and half, waits, then the rest."""
    async with Emulator(EmulatorConfig(dataset="docs-example", slow_delay=DELAY)) as emu:
        emu.fail_next(1, kind)
        url, headers = emu.base_url + TOTALS, basic(emu.api_key)
        start = time.monotonic()
        async with session.post(url, json=DOCS_REQUEST, headers=headers) as resp:
            headers_at = time.monotonic() - start
            body = await resp.read()
        total = time.monotonic() - start
        assert json.loads(body) == json.loads(DOCS_RESPONSE_TEXT)
        # Order, from lower bounds only (a sleep never ends early, while load can make anything
        # late): a stall's wait comes after the headers, a slow response's before them.
        assert total >= DELAY * 0.9
        if kind == "stall":
            assert total - headers_at >= DELAY * 0.9
        else:
            assert headers_at >= DELAY * 0.9
        await _ok(session, emu)


async def test_stall_times_out_a_client_and_server_keeps_serving(
    session: aiohttp.ClientSession,
) -> None:
    """A client read timeout during a stall leaves the emulator serving; close() is quick."""
    emu = Emulator(EmulatorConfig(dataset="docs-example", slow_delay=30))
    await emu.start()
    try:
        emu.fail_next(1, "stall")
        url, headers = emu.base_url + TOTALS, basic(emu.api_key)
        timeout = aiohttp.ClientTimeout(sock_read=0.2)
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(url, json=DOCS_REQUEST, headers=headers, timeout=timeout) as r:
                await r.read()
        await _ok(session, emu)
    finally:
        start = time.monotonic()
        await emu.close()
        assert time.monotonic() - start < 3


async def test_fail_next_with_path_and_count(session: aiohttp.ClientSession) -> None:
    """Scripts apply to the next n matching requests only, in order."""
    async with Emulator(EmulatorConfig(dataset="docs-example")) as emu:
        emu.fail_next(2, "503", path="/report/")
        emu.fail_next(1, "500")
        headers = basic(emu.api_key)
        async with session.get(emu.base_url + "pipeline/", headers=headers) as resp:
            assert resp.status == 500  # the second script matches any path
        assert (await post_totals(session, emu, DOCS_REQUEST))[0] == 503
        assert (await post_totals(session, emu, DOCS_REQUEST))[0] == 503
        await _ok(session, emu)
        with pytest.raises(ValueError, match="unknown fault kind"):
            emu.fail_next(1, "teapot")


async def _random_run(session: aiohttp.ClientSession, seed: int) -> list[tuple[int, str | None]]:
    config = EmulatorConfig(
        dataset="docs-example",
        seed=seed,
        fault_rate=0.5,
        faults=("500", "502", "503", "503-no-retry-after", "504", "malformed", "reset", "truncate"),
    )
    async with Emulator(config) as emu:
        for _ in range(30):
            with contextlib.suppress(aiohttp.ClientError):
                await post_totals(session, emu, DOCS_REQUEST)
        await asyncio.sleep(0)
        return [(e.status, e.fault) for e in emu.log]


async def test_random_faults_are_seeded(session: aiohttp.ClientSession) -> None:
    """The same seed gives the same faults in the same order; another seed differs."""
    first = await _random_run(session, 1)
    assert first == await _random_run(session, 1)
    assert first != await _random_run(session, 2)
    faults = [f for _, f in first if f]
    assert 5 <= len(faults) <= 25
    assert len(set(faults)) >= 3
    assert all(f in FAULT_KINDS for f in faults)


async def test_latency_and_jitter(session: aiohttp.ClientSession) -> None:
    """Every response waits latency +- jitter."""
    config = EmulatorConfig(dataset="docs-example", latency=0.15, jitter=0.05)
    async with Emulator(config) as emu:
        for _ in range(3):
            start = time.monotonic()
            async with session.get(emu.base_url + "me/", headers=basic(emu.api_key)) as resp:
                await resp.read()
            assert time.monotonic() - start >= 0.09  # a lower bound: load can only add time
        start = time.monotonic()
        async with session.get(emu.base_url + "me/") as resp:
            assert resp.status == 401
        assert time.monotonic() - start >= 0.09


def test_config_validation() -> None:
    """Bad options fail at construction."""
    for bad in (
        {"rps": -1},
        {"rps": 0},
        {"burst": 0},
        {"window": -2},
        {"latency": -0.1},
        {"fault_rate": 1.5},
        {"faults": ("boom",)},
        {"fault_rate": 0.1, "faults": ()},
        {"users": 0},
        {"port": 70000},
        {"dataset": "prod"},
        {"header_style": "fancy"},
        {"rps": float("inf")},
    ):
        with pytest.raises(ValueError, match=r"must|unknown|needs|allow"):
            EmulatorConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        EmulatorConfig(now=datetime(2025, 1, 1))
