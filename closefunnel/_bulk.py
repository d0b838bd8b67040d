"""
The bulk scheduler: many calls at once, as a group or as a stream.

:func:`all_or_first_error` backs ``compare_totals`` (a base report and its compared
ranges succeed together or fail with the first error); :func:`stream` backs
``totals_many``/``compare_many`` (each query's outcome yielded as it completes, a
bounded window of queries in flight, drawn lazily from any iterable). Both cancel and
await what they started before returning, so nothing outlives the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence, Sized
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
    ``run(query)`` for each of *queries*, at most *window* at once, yielded as each ends.

    A :class:`CloseFunnelError` is the item's ``error``; any other exception (a bug) is
    raised, after cancelling the rest.
    """
    total = len(queries) if isinstance(queries, Sized) else None
    source = iter(queries)
    running: dict[asyncio.Future[R], FunnelQuery] = {}
    # Each task reports its own completion here: waiting on the queue costs the same
    # for any window, where asyncio.wait(running) would re-register on every task.
    finished: asyncio.Queue[asyncio.Future[R]] = asyncio.Queue()
    done_count = 0

    def refill() -> None:
        while len(running) < window:
            query = next(source, _END)  # not None: a None item is an error, not the end
            if query is _END:
                return
            task: asyncio.Future[R]
            try:
                # A coroutine becomes a task; a future (the client's shared call) is
                # taken as it is, with no task of its own.
                task = asyncio.ensure_future(run(query))
            except CloseFunnelError as exc:  # refused before anything was started
                task = asyncio.get_running_loop().create_future()
                task.set_exception(exc)
            task.add_done_callback(finished.put_nowait)
            running[task] = query

    try:
        refill()
        while running:
            task = await finished.get()
            query = running.pop(task)
            error = task.exception()
            if error is not None and not isinstance(error, CloseFunnelError):
                raise error
            item: BulkItem[R] = (
                BulkItem(query, error=error)
                if error is not None
                else BulkItem(query, result=task.result())
            )
            done_count += 1
            if on_progress is not None:
                on_progress(done_count, total)
            yield item
            refill()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
