"""Emulator hardening across endpoints: auth everywhere, loopback only, 4xx for hostile input."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import orjson
import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig
from closefunnel.emulator._cli import add_arguments, config_from_args

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]

TOTALS = "report/funnel/opportunity/totals/"
#: Every route with its method, a wrong method on each, and paths that match no route.
ENDPOINTS = [
    ("POST", TOTALS),
    ("GET", "pipeline/"),
    ("GET", "user/"),
    ("GET", "me/"),
    ("GET", TOTALS),
    ("DELETE", "pipeline/"),
    ("PUT", "me/"),
    ("GET", "lead/"),
    ("GET", "../../etc/passwd"),
    ("POST", ""),
]


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture(name="emu")
async def _emu(start_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    """A small demo emulator with a 4 KiB body limit."""
    async with start_emulator(max_body=4096) as emu:
        yield emu


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session for hand-made requests."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _still_serves(http: aiohttp.ClientSession, emu: Emulator) -> None:
    pipeline = emu.dataset.pipelines[0].id
    body = cf.FunnelQuery(pipeline=pipeline, report_range="this-month").to_body()
    async with http.post(emu.base_url + TOTALS, json=body, headers=_basic(emu.api_key)) as resp:
        assert resp.status == 200
    assert [e for e in emu.log if e.status >= 500] == []
    assert emu.internal_errors == []


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_requires_auth(
    http: aiohttp.ClientSession, emu: Emulator, method: str, path: str
) -> None:
    """Every path and method answers 401 without valid credentials, before routing."""
    key_id = emu.api_key.partition(".")[0]
    bad = [
        {},
        _basic(key_id + ".notTheSecret"),
        _basic(key_id),
        {"Authorization": "Bearer " + emu.api_key},
        {"Authorization": "Basic " + "A" * 5000},
        {"Authorization": "Bearer"},
        {"Authorization": "Digest " + emu.api_key},
    ]
    for headers in bad:
        async with http.request(method, emu.base_url + path, headers=headers, data=b"{}") as resp:
            assert resp.status == 401, (headers, await resp.text())
            assert "error" in orjson.loads(await resp.read())
    await _still_serves(http, emu)


def _outward_address() -> str | None:
    """This machine's address on its default route, or None if it only has loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_binds_loopback_only_by_default(emu: Emulator) -> None:
    """The emulator, from code or the command line, listens on 127.0.0.1 and nowhere else."""
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).host == "127.0.0.1"
    assert EmulatorConfig().host == "127.0.0.1"
    assert emu.base_url.startswith("http://127.0.0.1:")
    outward = _outward_address()
    if outward is not None:
        with pytest.raises((ConnectionRefusedError, TimeoutError)):
            await asyncio.wait_for(asyncio.open_connection(outward, emu.port), 2)


async def test_oversized_bodies_get_413(http: aiohttp.ClientSession, emu: Emulator) -> None:
    """Bodies over max_body get 413, with or without a Content-Length, and serving goes on."""
    big = orjson.dumps({"pipeline": "p", "users": ["user_" + "x" * 40] * 200})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    url, headers = emu.base_url + TOTALS, _basic(emu.api_key)
    for data in (big, chunks(), b"{" * 100_000):
        async with http.post(url, data=data, headers=headers) as resp:
            assert resp.status == 413
    await _still_serves(http, emu)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"pipeline": ' + b"[" * 900 + b"]" * 900 + b"}", "application/json"),
        (b'{"users": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}", "application/json"),
        (b"[" * 3000 + b"]" * 3000, "application/json"),
        (b"pipeline=p&report_relative_range=this-month", "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--", "multipart/form-data"),
        (b'{"pipeline": "p\x00", "report_relative_range": "this-month"}', "application/json"),
        (b'{"pipeline": 1e999, "type": []}', "application/json"),
        ('{"pipeline": "\ud800"}'.encode("utf-8", "surrogatepass"), "application/json"),
        (b'{"pipeline": "p", "pipeline": 3}', "application/json"),
        (b"\xef\xbb\xbf{}", "text/plain"),
    ],
    ids=[
        "deep-list",
        "deep-object",
        "deep-top",
        "form",
        "multipart",
        "nul",
        "huge-number",
        "lone-surrogate",
        "duplicate-key",
        "bom",
    ],
)
async def test_hostile_bodies_get_4xx(
    http: aiohttp.ClientSession, emu: Emulator, body: bytes, content_type: str
) -> None:
    """Deeply nested, non-JSON and wrongly typed bodies get a 4xx with an error, never a 5xx."""
    headers = {**_basic(emu.api_key), "Content-Type": content_type}
    async with http.post(emu.base_url + TOTALS, data=body, headers=headers) as resp:
        assert 400 <= resp.status < 500, await resp.text()
        assert orjson.loads(await resp.read())
    await _still_serves(http, emu)


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /api/v1/me/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"POST /api/v1/" + TOTALS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the HTTP port
    ],
    ids=["garbage", "huge-header", "negative-length", "huge-path", "tls"],
)
async def test_malformed_http_is_refused_and_serving_goes_on(
    http: aiohttp.ClientSession, emu: Emulator, raw: bytes
) -> None:
    """Broken HTTP gets a 4xx or a closed connection, and the emulator keeps serving."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(200)
    finally:
        writer.close()
        await writer.wait_closed()
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer
    await _still_serves(http, emu)
