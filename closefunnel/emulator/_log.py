"""
The emulator's request log: what arrived, from which key, and what was answered.

Bounded: a long-running emulator (``closefunnel emulator`` left serving a load test, a
benchmark of millions of requests) keeps only the newest ``EmulatorConfig.log_limit``
entries, so its memory does not grow with its uptime. :attr:`RequestLog.dropped` says
how many older entries were let go.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import overload

import attrs

__all__ = ["LogEntry", "RequestLog"]


@attrs.frozen(kw_only=True)
class LogEntry:
    """
    One request as the emulator saw it.

    Attributes:
        time: ``time.monotonic()`` at arrival (the clock of asyncio's ``loop.time()``).
        key_id: The ``api_<id>`` part of the key (never the secret), ``"oauth"`` for the
            Bearer token, None when unauthenticated.
        method: HTTP method.
        path: URL path.
        status: Status sent; 0 while in flight and for ``reset`` faults (nothing sent).
        fault: The injected fault kind, or None.
    """

    time: float
    key_id: str | None
    method: str
    path: str
    status: int
    fault: str | None


class RequestLog(Sequence[LogEntry]):
    """
    The newest *limit* requests in arrival order; older ones are dropped.

    A request is logged when it arrives (:meth:`open`, status 0) and completed in place
    when answered (:meth:`finish`); finishing an entry that was dropped or cleared in the
    meantime is a no-op. Compares equal to a list or tuple with the same entries.
    """

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._entries: deque[LogEntry] = deque(maxlen=limit)
        self._opened = 0  # tickets handed out so far (the next ticket)
        self.dropped = 0

    def open(self, entry: LogEntry) -> int:
        """Log *entry*; return the ticket that :meth:`finish` takes."""
        if len(self._entries) == self.limit:
            self.dropped += 1
        self._entries.append(entry)
        ticket = self._opened
        self._opened += 1
        return ticket

    def finish(self, ticket: int, entry: LogEntry) -> None:
        """Replace the entry logged under *ticket* by *entry*, if it is still kept."""
        index = ticket - (self._opened - len(self._entries))
        if 0 <= index < len(self._entries):
            self._entries[index] = entry

    def clear(self) -> None:
        """Forget every entry (requests in flight are not logged again)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(self._entries)

    @overload
    def __getitem__(self, index: int) -> LogEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[LogEntry]: ...
    def __getitem__(self, index: int | slice) -> LogEntry | list[LogEntry]:
        if isinstance(index, slice):
            return list(self._entries)[index]
        return self._entries[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RequestLog | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RequestLog({list(self._entries)!r}, dropped={self.dropped})"
