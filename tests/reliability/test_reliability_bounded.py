"""Any response costs bounded memory: bodies are read with a cap, error bodies kept short."""

from __future__ import annotations

import asyncio
import gzip
from datetime import timedelta
from pathlib import Path

import attrs
import pytest
from hostile_server import Hostile, Request, response

import closefunnel as cf

SAMPLE = (Path(__file__).parents[1] / "samples" / "funnel_totals_response.json").read_bytes()
QUERY = cf.FunnelQuery(pipeline="pipe_1", report_range="this-month")
FAST = cf.RetryPolicy(attempts=3, backoff_initial=0, backoff_max=0)


async def _endless_chunked(request: Request, writer: asyncio.StreamWriter) -> None:
    status = 200 if request.method == "POST" else 500
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"[" * 65536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    while True:  # until the client hangs up: drain() then raises ConnectionResetError
        writer.write(framed)
        await writer.drain()


async def _endless_unframed(_: Request, writer: asyncio.StreamWriter) -> None:
    # No Content-Length, no chunking: the body ends when the connection does (never).
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    while True:
        writer.write(b" " * 65536)
        await writer.drain()


async def _announces_800_mb(_: Request, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    writer.write(b"Content-Length: 800000000\r\n\r\n")
    while True:
        writer.write(b" " * 65536)
        await writer.drain()


async def _chunked_under_a_small_length(request: Request, writer: asyncio.StreamWriter) -> None:
    # A small Content-Length beside chunked framing: the length must not be trusted.
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    while True:
        writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        await writer.drain()


async def test_a_small_length_beside_chunked_framing_is_not_trusted() -> None:
    """Only a body framed by its Content-Length alone is read in one go: with chunked
    framing too, the cap still applies (or aiohttp refuses the message outright)."""
    async with (
        Hostile(_chunked_under_a_small_length) as server,
        cf.Client(
            api_key="api_x.secret", base_url=server.base_url, retry=FAST, max_response_bytes=2**20
        ) as client,
    ):
        with pytest.raises((cf.ResponseTooLargeError, cf.TransportError)):
            await client.funnel_totals(QUERY)


@pytest.mark.parametrize("handler", [_endless_chunked, _endless_unframed, _announces_800_mb])
async def test_an_endless_or_huge_200_stops_at_the_cap(handler: object) -> None:
    """Past max_response_bytes: ResponseTooLargeError, one request, the connection closed."""
    async with Hostile(handler) as server:  # type: ignore[arg-type]
        async with cf.Client(
            api_key="api_x.secret", base_url=server.base_url, retry=FAST, max_response_bytes=2**20
        ) as client:
            with pytest.raises(cf.ResponseTooLargeError) as caught:
                await client.funnel_totals(QUERY)
            await server.wait_closed_by_client()
            snapshot = client.pool_snapshot()
            assert snapshot is not None
            assert snapshot.in_use == 0
        assert isinstance(caught.value, cf.ResponseDecodeError)
        assert "max_response_bytes=1048576" in str(caught.value)
        assert len(server.requests) == 1  # never retried


async def test_a_body_exactly_at_the_cap_is_read_and_one_byte_more_is_not() -> None:
    """The cap is inclusive (and a body read whole leaves its connection reusable)."""

    async def report(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, SAMPLE))

    async def report_chunked(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (SAMPLE[:100], SAMPLE[100:]):
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        writer.write(b"0\r\n\r\n")

    for handler in (report, report_chunked):
        async with Hostile(handler) as server:
            base = server.base_url
            async with cf.Client(
                api_key="api_x.y", base_url=base, max_response_bytes=len(SAMPLE)
            ) as client:
                first = await client.funnel_totals(QUERY)
                second = await client.funnel_totals(QUERY)
            # The body decoded as sent (the client adds the range it asked for).
            assert first == second
            assert attrs.evolve(first, range=None) == cf.FunnelTotals.from_json(SAMPLE)
            assert server.connections == 1  # kept alive and reused
            async with cf.Client(
                api_key="api_x.y", base_url=base, retry=FAST, max_response_bytes=len(SAMPLE) - 1
            ) as client:
                for _ in range(2):
                    with pytest.raises(cf.ResponseTooLargeError):
                        await client.funnel_totals(QUERY)
                snapshot = client.pool_snapshot()
                assert snapshot is not None
            assert snapshot.in_use == 0
            assert len(server.requests) == 4


async def test_error_bodies_are_kept_short_and_say_the_cut() -> None:
    """A 1 MiB error page is read and kept up to 64 KiB, with how much more there was."""
    page = b"<html>" + b"x" * (2**20 - 6)

    async def big_404(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(404, page, content_type="text/html"))

    async with Hostile(big_404) as server:
        client = cf.Client(api_key="api_x.y", base_url=server.base_url, retry=FAST)
        async with client:
            with pytest.raises(cf.NotFoundError) as caught:
                await client.funnel_totals(QUERY)
            await server.wait_closed_by_client()  # not read to the end, so not reused
    error = caught.value
    assert isinstance(error.body, str)
    assert error.body.endswith(f" … [truncated, {2**20 - 65536} bytes more]")
    assert len(error.body) < 65536 + 100
    assert len(str(error)) < 400
    assert str(error).endswith(f"[truncated, {2**20 - 200} bytes more]")


async def test_an_endless_error_stream_is_cut_at_64_kib() -> None:
    """An endless chunked 500: each attempt reads 64 KiB and says it cut there."""
    async with Hostile(_endless_chunked) as server:
        policy = cf.RetryPolicy(attempts=2, backoff_initial=0, backoff_max=0)
        async with cf.Client(api_key="api_x.y", base_url=server.base_url, retry=policy) as client:
            with pytest.raises(cf.ServerError) as caught:
                await client.pipelines()
            await server.wait_closed_by_client(2)
    assert caught.value.status == 500
    assert isinstance(caught.value.body, str)
    assert caught.value.body.endswith(" … [truncated after 65536 bytes]")
    assert len(server.requests) == 2  # a 500 is still retried


async def test_a_compressed_body_is_capped_after_decompression() -> None:
    """A gzip bomb (16 MiB of zeros in about 16 KiB) counts what it inflates to, not its size."""
    bomb = gzip.compress(b"\0" * 2**24, 9)

    async def gzip_bomb(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
        )
        writer.write(bomb)

    async with Hostile(gzip_bomb) as server:
        client = cf.Client(
            api_key="api_x.y", base_url=server.base_url, retry=FAST, max_response_bytes=2**20
        )
        async with client:
            with pytest.raises(cf.ResponseTooLargeError):
                await client.funnel_totals(QUERY)
    assert len(bomb) < 2**20  # the cap is on the inflated body
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("value", "rule"), [(0, "positive"), (-1, "positive"), (True, "type"), ("32M", "type")]
)
def test_max_response_bytes_is_checked(value: object, rule: str) -> None:
    """A bad max_response_bytes is refused before anything is made."""
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client(api_key="api_x.y", max_response_bytes=value)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("max_response_bytes", rule)


@pytest.mark.parametrize(
    "extra",
    [b'{"from": "2026-11-01", "to": "2026-12-01"}', b'"this-month"', b"null", b"[1, 2]"],
)
async def test_a_range_key_in_an_answer_is_closes_business(extra: bytes) -> None:
    """
    Close sends no "range"; should it one day, whatever it holds is ignored like any new
    key, and the report carries the range the client resolved, not Close's value.
    """
    body = SAMPLE.rstrip().rstrip(b"}") + b', "range": ' + extra + b"}"

    async def report(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(response(200, body))

    server = Hostile(report)
    async with server, cf.Client(api_key="api_x.y", base_url=server.base_url, retry=FAST) as client:
        totals = await client.funnel_totals(QUERY)
    assert attrs.evolve(totals, range=None) == cf.FunnelTotals.from_json(SAMPLE)
    assert totals.range is not None
    assert totals.range.end - totals.range.start >= timedelta(days=28)  # this month
