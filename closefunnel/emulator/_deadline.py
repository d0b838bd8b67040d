"""
A deadline for request heads: a connection that does not finish a request's line and
headers within ``header_timeout`` seconds is closed.

aiohttp's server has no such timeout of its own (its keep-alive timer depends on the
release), so a client that sends half a request line and waits would hold a connection,
and its buffers, for as long as it likes. :class:`HeadDeadline` sits between the
transport and aiohttp's protocol and only *watches* the bytes: it arms a timer when a
request head starts (at the connect for the first one), disarms it at the blank line
that ends the head, then skips ``Content-Length`` body bytes to find where the next
head starts. When it cannot tell (a chunked body), it stops watching that connection
and leaves it to aiohttp, rather than risk cutting a request that is fine.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any, Final

from aiohttp import web

__all__ = ["SERVER_LOG", "DeadlineSite", "HeadDeadline", "OneLineLog"]

#: Heads larger than this are aiohttp's to refuse (it answers 400); we stop watching.
_MAX_HEAD: Final = 1 << 16
#: The blank line that ends a head (aiohttp also accepts bare LFs).
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")


class HeadDeadline(asyncio.Protocol):
    """Wraps one aiohttp protocol; closes the transport when a head takes too long."""

    def __init__(self, inner: asyncio.Protocol, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = bytearray()  # bytes of the head being received
        self._body_left = 0  # body bytes still to skip before the next head
        self._watching = True

    # -- the watch -------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None and self._watching:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    def _stop_watching(self) -> None:
        self._watching = False
        self._disarm()
        self._head.clear()

    def _watch(self, data: bytes) -> None:
        view = memoryview(data)
        while self._watching and view:
            if self._body_left:
                step = min(self._body_left, len(view))
                self._body_left -= step
                view = view[step:]
                continue
            if not self._head and view[0] in b"\r\n":
                view = view[1:]  # stray line ends between requests (RFC 9112 2.2)
                continue
            self._arm()
            seen = len(self._head)
            self._head += view
            found = _HEAD_END.search(self._head, max(0, seen - 3))
            if found is None:
                if len(self._head) > _MAX_HEAD:
                    self._stop_watching()
                return
            self._disarm()
            head = bytes(self._head[: found.end()])
            rest = len(self._head) - found.end()
            self._head.clear()
            view = view[len(view) - rest :]
            self._after_head(head)

    def _after_head(self, head: bytes) -> None:
        length = 0
        for line in head.splitlines()[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                self._stop_watching()
                return
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self._stop_watching()  # aiohttp answers 400 and closes
                    return
        self._body_left = max(0, length)

    # -- asyncio.Protocol, forwarded -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._arm()  # a client that connects and sends nothing is dropped too
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._watch(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class DeadlineSite(web.BaseSite):
    """A TCP site whose connections get a :class:`HeadDeadline`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, header_timeout: float
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._header_timeout = header_timeout

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        timeout = self._header_timeout

        def protocol() -> asyncio.Protocol:
            inner: Any = server()
            return HeadDeadline(inner, timeout)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, self._host, self._port)


class OneLineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """
    aiohttp's server logger, made to say what a malformed request was in one line.

    aiohttp logs a bad request line, a bad header or a header over its size limit with
    the parser's full traceback at ERROR, which Python's last-resort handler prints to
    stderr. That is a client's mistake, not the emulator's: it is answered 400 by
    aiohttp and logged here at INFO as ``malformed request from HOST: BadHttpMessage:
    ...`` (the reason's first line, 200 characters at most, in ``repr`` so that the
    client's bytes cannot drive a terminal).
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            exc = sys.exc_info()[1] if exc_info is True else exc_info
            if isinstance(exc, tuple):
                exc = exc[1]
            if isinstance(exc, BaseException):
                reason = str(exc).strip().splitlines()[:2]
                text = " ".join(part.strip() for part in reason)[:200]
                msg = f"malformed request: {msg} ({type(exc).__name__}: {text!r})"
                level = min(level, logging.INFO)
        kwargs.pop("stack_info", None)
        super().log(level, msg, *args, **kwargs)


#: Where :class:`OneLineLog` writes.
SERVER_LOG: Final = OneLineLog(logging.getLogger("closefunnel.emulator.http"), {})
