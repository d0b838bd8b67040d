"""The emulator against clients that misbehave: a bounded log, stalled heads, bad HTTP."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator_helpers import NOW, basic

from closefunnel.emulator import Emulator, EmulatorConfig, RequestLog

#: Generous bound on waits that must end on their own (a hang fails, not a slow run).
GUARD = 10.0


@pytest.fixture(name="quick_emu")
async def _quick_emu() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(now=NOW, opportunities=50, header_timeout=0.3, log_limit=5)
    async with Emulator(config) as emu:
        yield emu
        assert not emu.internal_errors


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(GUARD):
        return await reader.read()


async def test_the_log_keeps_only_the_newest_entries(
    quick_emu: Emulator, session: aiohttp.ClientSession
) -> None:
    for n in range(8):
        async with session.get(f"{quick_emu.base_url}unknown-{n}/") as response:
            assert response.status == 401
    log = quick_emu.log
    assert isinstance(log, RequestLog)
    assert len(log) == 5
    assert log.dropped == 3
    assert [entry.path for entry in log] == [f"/api/v1/unknown-{n}/" for n in range(3, 8)]
    assert all(entry.status == 401 for entry in log)
    quick_emu.clear_log()
    assert quick_emu.log == []


def test_the_log_finishes_entries_in_place_and_ignores_dropped_ones() -> None:
    from closefunnel.emulator import LogEntry

    def entry(path: str, status: int = 0) -> LogEntry:
        return LogEntry(time=0.0, key_id=None, method="GET", path=path, status=status, fault=None)

    log = RequestLog(2)
    first = log.open(entry("/a"))
    second = log.open(entry("/b"))
    log.finish(second, entry("/b", 200))
    third = log.open(entry("/c"))  # drops /a
    log.finish(first, entry("/a", 200))  # gone: no effect
    log.finish(third, entry("/c", 404))
    assert [(e.path, e.status) for e in log] == [("/b", 200), ("/c", 404)]
    assert log[-1].path == "/c"
    assert [e.path for e in log[:1]] == ["/b"]
    log.clear()
    log.finish(third, entry("/c", 500))  # in flight across a clear: not logged again
    assert log == []
    with pytest.raises(ValueError, match="limit"):
        RequestLog(0)
    with pytest.raises(ValueError, match="log_limit"):
        EmulatorConfig(log_limit=0)
    with pytest.raises(ValueError, match="header_timeout"):
        EmulatorConfig(header_timeout=0)


async def test_a_client_that_never_finishes_its_head_is_disconnected(
    quick_emu: Emulator,
) -> None:
    """Half a request line, then silence: the emulator closes the connection."""
    reader, writer = await _raw(quick_emu.port)
    try:
        writer.write(b"GET /api/v1/me/ HT")
        await writer.drain()
        assert await _read_until_closed(reader) == b""  # EOF, no response
    finally:
        writer.close()
    reader, writer = await _raw(quick_emu.port)  # connects and sends nothing at all
    try:
        assert await _read_until_closed(reader) == b""
    finally:
        writer.close()
    assert quick_emu.log == []  # no request ever started


async def test_a_stalled_second_head_on_a_kept_alive_connection_is_disconnected(
    quick_emu: Emulator,
) -> None:
    reader, writer = await _raw(quick_emu.port)
    body = b'{"not": "a report"}'
    head = (
        f"POST /api/v1/report/funnel/opportunity/totals/ HTTP/1.1\r\nHost: emu\r\n"
        f"Authorization: {basic(quick_emu.api_key)['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(GUARD):
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 400")
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
        # The next request on the kept-alive connection stalls mid-head.
        writer.write(b"GET /api/v1/me/ HTTP/1.1\r\nHost: emu\r")
        await writer.drain()
        assert await _read_until_closed(reader) == b""
    finally:
        writer.close()


async def test_a_slow_but_complete_request_is_still_answered(
    quick_emu: Emulator,
) -> None:
    """The deadline covers the head only: a body sent after it is still read and answered."""
    reader, writer = await _raw(quick_emu.port)
    body = b'{"pipeline": "pipe_x",\r\n\r\n "type": 3}'
    head = (
        f"POST /api/v1/report/funnel/opportunity/totals/ HTTP/1.1\r\nHost: emu\r\n"
        f"Authorization: {basic(quick_emu.api_key)['Authorization']}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.6)  # twice the header timeout, with the body outstanding
        writer.write(body)
        await writer.drain()
        answer = await _read_until_closed(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"field-errors" in answer


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\x1b[2J garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /api/v1/me/ HTTP/9.9.9\r\n\r\n",
        b"GET /api/v1/me/ HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GET /api/v1/me/ HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
        b"GET /api/v1/me/ HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["bytes", "request-line", "version", "huge-header", "content-length", "header"],
)
async def test_malformed_http_is_refused_without_a_traceback(
    quick_emu: Emulator, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await _raw(quick_emu.port)
    try:
        writer.write(garbage)
        await writer.drain()
        answer = await _read_until_closed(reader)
    finally:
        writer.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
    assert "Traceback" not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    assert "\x1b" not in caplog.text  # the client's bytes are shown escaped


def test_a_dataset_out_of_creation_order_is_refused() -> None:
    """The report index trusts this order (it no longer sorts each series again)."""
    import attrs

    from closefunnel.emulator import build_dataset

    dataset = build_dataset(EmulatorConfig(now=NOW, opportunities=20))
    with pytest.raises(ValueError, match="sorted by creation"):
        attrs.evolve(dataset, opportunities=dataset.opportunities[::-1])


@pytest.mark.slow
def test_the_served_emulator_prints_no_traceback_for_malformed_http() -> None:
    """``python -m closefunnel.emulator`` (no logging set up): stderr stays empty."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closefunnel.emulator",
            "--port",
            "0",
            "--header-timeout",
            "0.3",
            "--opportunities",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        port = int(banner.rsplit(":", 1)[1].split("/", 1)[0])
        for garbage in (
            b"\x00\xff garbage\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
            b"GET /api/v1/me/ HT",  # then silence: dropped after the header timeout
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
                sock.sendall(garbage)
                while sock.recv(65536):
                    pass  # until the emulator closes the connection
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert err == ""
