"""
The HTTP transport: one aiohttp request out, its answer read with a cap, and the pool's
connections counted. The only place aiohttp's request and response objects are handled;
nothing of them (they hold the request's headers, Authorization included) is kept or
chained into an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import attrs

from closefunnel._errors import RequestTimeoutError, ResponseTooLargeError, TransportError
from closefunnel._sansio import ERROR_BODY_LIMIT, HttpRequest

__all__ = ["PoolSnapshot", "Response", "TrackedConnector", "read_capped", "send"]

logger: Final = logging.getLogger("closefunnel")

#: ``(status, headers, body)`` of one answer.
Response = tuple[int, Mapping[str, str], bytes]


@attrs.frozen(kw_only=True)
class PoolSnapshot:
    """
    A read-only view of the client's connection pool, for monitoring and leak checks.

    Attributes:
        limit: The most connections open at once (0: no limit).
        in_use: Connections handed out to requests and not yet given back to the pool.
        handed_out: Connections handed out since the session was made.
    """

    limit: int
    in_use: int
    handed_out: int


class TrackedConnector(aiohttp.TCPConnector):
    # aiohttp keeps checked-out connections in private attributes only. This counts them
    # through public API instead: +1 for each Connection that connect() hands out, -1 when
    # its release callback runs (Connection.add_callback: called once, by release() or
    # close()). A connection dropped without either stays counted, as the leak it is.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_use = 0
        self.handed_out = 0

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        connection = await super().connect(*args, **kwargs)
        self.in_use += 1
        self.handed_out += 1
        connection.add_callback(self._given_back)
        return connection

    def _given_back(self) -> None:
        self.in_use -= 1


async def send(
    session: aiohttp.ClientSession,
    request: HttpRequest,
    *,
    attempt_timeout: aiohttp.ClientTimeout,
    max_response_bytes: int,
) -> Response:
    """
    Send *request* once and read its answer with a cap; aiohttp's failures become our
    :class:`TransportError` / :class:`RequestTimeoutError`.
    """
    debug = logger.isEnabledFor(logging.DEBUG)
    started = time.monotonic() if debug else 0.0
    what = f"{request.method} {request.path}"
    # Each branch raises ``from None`` with a description of its own: aiohttp's
    # errors carry the request info, Authorization header included, and a chained
    # exception is printed (and sent to Sentry) with everything it holds.
    try:
        async with session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            timeout=attempt_timeout,
            allow_redirects=False,
        ) as response:
            status = response.status
            headers = response.headers
            body = await read_capped(response, what, max_response_bytes=max_response_bytes)
    except TimeoutError:
        raise RequestTimeoutError(
            f"{what} took longer than {attempt_timeout.total:g}s (the per-attempt timeout)"
        ) from None
    except aiohttp.ClientPayloadError as exc:
        raise TransportError(
            f"{what}: the response body was cut short ({_describe(exc)})"
        ) from None
    except aiohttp.ClientError as exc:
        raise TransportError(f"{what} failed: {_describe(exc)}") from None
    if debug:
        logger.debug(
            "closefunnel.response: %s %s -> %d in %.3fs",
            request.method,
            request.path,
            status,
            time.monotonic() - started,
        )
    return status, headers, body


async def read_capped(
    response: aiohttp.ClientResponse, what: str, *, max_response_bytes: int
) -> bytes:
    """
    The body of *response*, read with a cap: ``max_response_bytes`` for a 2xx (past
    it, :class:`ResponseTooLargeError`), one byte past ``ERROR_BODY_LIMIT`` for any
    other status (the protocol core keeps that much and says the cut). Either way a
    body cut short leaves its connection closed, never back in the pool, where the
    rest of the body would poison the next request.
    """
    ok = 200 <= response.status < 300
    limit = max_response_bytes if ok else ERROR_BODY_LIMIT + 1
    declared = response.content_length
    if ok and declared is not None and declared > limit:
        response.close()
        raise ResponseTooLargeError(
            f"{what}: the response announces {declared} bytes, more than "
            f"max_response_bytes={limit}; not read"
        )
    if _framed_within(response, max_response_bytes):
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    content = response.content
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            response.close()
            if not ok:
                chunks.append(chunk[: limit - (size - len(chunk))])
                break
            raise ResponseTooLargeError(
                f"{what}: the response body is longer than max_response_bytes={limit}; "
                f"stopped reading after {size} bytes"
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _framed_within(response: aiohttp.ClientResponse, max_response_bytes: int) -> bool:
    """
    Whether *response* is a 2xx framed by its Content-Length alone, within the cap, and
    not decompressed (a small gzip body can inflate without end): aiohttp then reads
    exactly that many bytes, so one ``read()`` is as bounded as the capped loop.
    """
    declared = response.content_length
    if declared is None or declared > max_response_bytes or not 200 <= response.status < 300:
        return False
    headers = response.headers
    return "Content-Encoding" not in headers and "Transfer-Encoding" not in headers


def _describe(exc: aiohttp.ClientError) -> str:
    """
    A safe one-line account of an aiohttp error: its type and what it says, without the
    request info (headers) that ``ClientResponseError`` and friends carry.
    """
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status}, {exc.message}"
    return f"{type(exc).__name__}: {exc}"
