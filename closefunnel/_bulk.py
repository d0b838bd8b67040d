"""
The bulk scheduler: many calls at once, as a group or as a stream.

:func:`all_or_first_error` backs ``compare_totals`` (a base report and its compared
ranges succeed together or fail with the first error); :func:`stream` backs
``totals_many``/``compare_many`` (each query's outcome yielded as it completes, a fixed
number of workers drawing queries lazily from any iterable). Both cancel and await what
they started before returning, so nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from typing import Any, Final, Generic, TypeVar

import attrs

from closefunnel._errors import CloseFunnelError
from closefunnel._query import FunnelQuery

__all__ = ["BulkItem", "ProgressCallback", "all_or_first_error", "stream"]

R = TypeVar("R")
T = TypeVar("T")

#: Called as ``on_progress(done, total)`` after each item of a bulk run; *total* is
#: None when the queries were not a sized collection.
ProgressCallback = Callable[[int, int | None], None]

_END: Final[Any] = object()  # the end of a bulk run's queries


@attrs.frozen
class BulkItem(Generic[R]):
    """
    One finished query of a bulk run: exactly one of *result* and *error* is set.
    """

    query: FunnelQuery
    result: R | None = None
    error: CloseFunnelError | None = None

    @property
    def ok(self) -> bool:
        """Whether the query produced a result."""
        return self.error is None


async def all_or_first_error(calls: Sequence[Awaitable[T]]) -> list[T]:
    """
    The results of *calls*, run concurrently; the first failure cancels the rest and is
    raised as itself (not wrapped in an ExceptionGroup).
    """
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [task for task in tasks if task.done() and task.exception() is not None]
        if failed:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]  # checked not None above
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        if any(not task.done() for task in tasks):
            await asyncio.gather(*tasks, return_exceptions=True)


async def stream(
    queries: Iterable[FunnelQuery],
    run: Callable[[FunnelQuery], Awaitable[R]],
    *,
    window: int,
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[BulkItem[R]]:
    """
    ``await run(query)`` for each of *queries*, *window* at once, yielded as each ends.

    *window* workers (tasks) each draw the next query and await its call, one after
    another: no task per query, and the next query starts the moment one ends, not
    when the caller asks for the next item. A caller busy with one item (writing it
    somewhere) leaves the others running, until *window* ended items wait for it (more
    would be memory no one asked for). Queries are drawn only as a worker is free, so
    an endless iterable streams.

    A :class:`CloseFunnelError` is the item's ``error``; any other exception (a bug, or
    the iterable's own) is raised, after cancelling the rest.
    """
    total = len(queries) if isinstance(queries, Sized) else None
    state: _Stream[R] = _Stream(iter(queries), run, window)
    workers = [asyncio.ensure_future(state.work()) for _ in range(window)]
    state.active = len(workers)
    done_count = 0
    try:
        while True:
            ready = state.ready
            if not ready:
                if state.failure is not None:
                    raise state.failure
                if not state.active:
                    return
                await state.wait()
                continue
            item = ready.popleft()
            state.wake_workers()
            done_count += 1
            if on_progress is not None:
                on_progress(done_count, total)
            yield item
    finally:
        state.closing = True
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


class _Stream(Generic[R]):
    """
    What the workers of one :func:`stream` share: the queries, the ended items not yet
    yielded, and the two futures that sleepers wait on (the generator for an item, the
    workers for room in ``ready``).
    """

    __slots__ = (
        "active",
        "closing",
        "failure",
        "ready",
        "room",
        "run",
        "source",
        "waker",
        "window",
    )

    def __init__(
        self,
        source: Iterator[FunnelQuery],
        run: Callable[[FunnelQuery], Awaitable[R]],
        window: int,
    ) -> None:
        self.source = source
        self.run = run
        self.window = window
        self.ready: collections.deque[BulkItem[R]] = collections.deque()
        self.active = 0  # workers not yet finished
        #: Raised by the iterable, or by run() outside CloseFunnelError: for the caller.
        self.failure: BaseException | None = None
        self.closing = False  # the iterable ended or failed: workers draw no more
        self.waker: asyncio.Future[None] | None = None  # the generator, waiting for an item
        self.room: asyncio.Future[None] | None = None  # workers, waiting for room in ready

    async def work(self) -> None:
        """One worker: draw a query, await its call, hand on the item; until the end."""
        try:
            while not self.closing:
                if len(self.ready) >= self.window:  # the caller is behind: wait for it
                    if self.room is None:
                        self.room = asyncio.get_running_loop().create_future()
                    await self.room
                    continue
                try:
                    query = next(self.source, _END)  # not None: a None item is an error
                except Exception as exc:  # the iterable's own: the caller's to see
                    self._fail(exc)
                    return
                if query is _END:
                    self.closing = True
                    return
                try:
                    item = BulkItem(query, result=await self.run(query))
                except CloseFunnelError as exc:
                    item = BulkItem(query, error=exc)
                except Exception as exc:  # a bug: the caller's to see, the run ends
                    self._fail(exc)
                    return
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise  # the stream's own: it is closing
                    # The call was cancelled by someone else (a shared future its owner
                    # cancelled): the query has no answer, and the caller must hear so.
                    self._fail(exc)
                    return
                self.ready.append(item)
                self._wake()
        finally:
            self.active -= 1
            self._wake()

    async def wait(self) -> None:
        """Sleep until an item is ready, or a worker has ended."""
        waker = self.waker = asyncio.get_running_loop().create_future()
        try:
            await waker
        finally:
            self.waker = None

    def wake_workers(self) -> None:
        """An item was taken: workers waiting for room go on."""
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _wake(self) -> None:
        waker = self.waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.closing = True
