"""
The blocking client: :class:`~closefunnel.Client` from a plain script, threads or a notebook.

A :class:`SyncClient` owns one event loop, run by a daemon thread it starts when it is
made, and one :class:`Client` that lives on that loop. Each call is a coroutine handed to
the loop while the calling thread waits for it, which gives the rest:

- It works where a loop is already running (a notebook cell, code inside
  ``asyncio.run``): the caller's loop is blocked for the call, as by any blocking
  function, and never re-entered, so there is no "loop already running".
- Several threads may call it at once: their calls run concurrently on the one loop,
  under the one rate-limit gate and single-flight, as tasks of one Client would.
- Errors are the Client's own, raised again in the calling thread (not wrapped); the
  traceback runs from the caller's line into the frames that failed on the loop.
- Ctrl-C while waiting (KeyboardInterrupt, or any exception raised in the waiting
  thread) cancels the call on the loop and waits a moment for the cancellation to
  finish, so no request keeps running unseen.
- ``totals_many``/``compare_many`` are plain iterators that fetch one item per
  ``next()``: the queries in flight keep running between items, queries are drawn from
  the iterable only as room frees up, and closing the iterator (leaving the ``for`` loop
  with ``break``) cancels what is in flight.

The constructor forwards its arguments to :class:`Client` unchanged, typed as Client's
own parameters (:func:`_takes_arguments_of`), so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar

from closefunnel._bulk import BulkItem, ProgressCallback
from closefunnel._client import Client
from closefunnel._compare import FunnelComparison
from closefunnel._errors import ClientClosedError, InvalidQueryError
from closefunnel._gate import GateSnapshot
from closefunnel._models import FunnelTotals, Pipeline, User
from closefunnel._query import Compared, FunnelQuery
from closefunnel._retry import RetryPolicy
from closefunnel._sansio import Format
from closefunnel._transport import PoolSnapshot

__all__ = ["SyncClient"]

P = ParamSpec("P")
S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: How long an interrupted call is given to finish cancelling before the interrupt
#: propagates anyway (a cancelled request ends at once; this only bounds a bug).
_CANCEL_GRACE: Final = 5.0
#: Rounds of "cancel every task left" at close: a task cancelled in one round may start
#: cleanup tasks of its own (a bulk run's), cancelled in the next.
_CANCEL_ROUNDS: Final = 3
_serial = itertools.count(1)


def _takes_arguments_of(
    target: Callable[P, object],
) -> Callable[[Callable[Concatenate[S, ...], None]], Callable[Concatenate[S, P], None]]:
    """
    Give an ``__init__(self, *args, **kwargs)`` that forwards everything to *target* the
    parameters of *target*: for type checkers (through the ParamSpec) and for
    :func:`inspect.signature` and ``help()`` (through ``__signature__``). A new Client
    option is then a SyncClient option too, with nothing to copy by hand.
    """
    signature = inspect.signature(target)

    def apply(init: Callable[Concatenate[S, ...], None]) -> Callable[Concatenate[S, P], None]:
        self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        parameters = [self, *signature.parameters.values()]
        init.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters, return_annotation=None
        )
        return init

    return apply


class _Call(Generic[T]):
    """One coroutine running as a task on a loop in another thread, waited for here."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        *,
        then: Callable[[], object] | None = None,
    ) -> None:
        self._loop = loop
        self._task: asyncio.Task[T] | None = None
        self._done = threading.Event()
        self._then = then
        loop.call_soon_threadsafe(self._start, coro)

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        self._task = self._loop.create_task(coro)
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up waiting logs nothing
        self._done.set()
        if self._then is not None:
            self._then()

    def _cancel(self) -> None:
        if self._task is not None:  # _start ran first: callbacks run in order
            self._task.cancel()

    def result(self) -> T:
        """Wait for the task; its result, or its exception raised here."""
        try:
            self._done.wait()
        except BaseException:
            # Ctrl-C while waiting: the call must not go on running where nobody waits.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._cancel)
            self._done.wait(_CANCEL_GRACE)
            raise
        task = self._task
        assert task is not None  # done is set by the task's own callback
        if task.cancelled():  # only closing cancels a task it did not start
            raise ClientClosedError(
                "the call did not finish: the closefunnel SyncClient was closed while it "
                "was in flight"
            )
        error = task.exception()
        if error is not None:
            raise error
        return task.result()


class _LoopThread:
    """An event loop running forever in a daemon thread of its own, until shut down."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._pid = os.getpid()
        # Held while a call is handed over and while shutting down, so no call is handed
        # to a loop that is stopping (it would never start, and its caller never wake).
        self._lock = threading.Lock()
        self._open = True
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def open(self) -> bool:
        """Whether calls are still taken."""
        return self._open

    def forked(self) -> bool:
        """Whether this is a child process forked after the loop started: the thread did
        not come along, so a call would wait forever (and the lock may be held for good)."""
        return os.getpid() != self._pid

    @property
    def thread(self) -> threading.Thread:
        """The thread running the loop."""
        return self._thread

    def in_loop_thread(self) -> bool:
        """Whether the current thread is the loop's (waiting there would wait forever)."""
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> _Call[T]:
        """Start *coro* on the loop; ClientClosedError once shut down (or in a fork)."""
        if self.forked():
            coro.close()
            raise ClientClosedError(
                "this closefunnel SyncClient was made in the parent process: its loop thread "
                "does not survive a fork; make one in each process"
            )
        with self._lock:
            if not self._open:
                coro.close()
                raise ClientClosedError("this closefunnel SyncClient is closed; make a new one")
            return _Call(self._loop, coro)

    def shutdown(self, final: Coroutine[Any, Any, None], *, wait: bool) -> None:
        """
        Take no more calls, run *final*, cancel every task left, stop the loop; with
        *wait*, until the thread has ended. Does nothing (but close *final*) the second time,
        or in a forked child (the parent's client is the parent's to close).
        """
        if self.forked():
            final.close()
            return
        with self._lock:
            if not self._open:
                final.close()
                return
            self._open = False
            call = _Call(self._loop, self._finish(final), then=self._loop.stop)
        if wait:
            try:
                call.result()
            finally:
                self._thread.join()

    async def _finish(self, final: Coroutine[Any, Any, None]) -> None:
        try:
            await final
        finally:
            current = asyncio.current_task()
            for _ in range(_CANCEL_ROUNDS):
                rest = [task for task in asyncio.all_tasks() if task is not current]
                if not rest:
                    break
                for task in rest:
                    task.cancel()
                await asyncio.gather(*rest, return_exceptions=True)
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()  # aiohttp's DNS lookups use it


class SyncClient:
    """
    A blocking :class:`Client`: the same arguments and methods, for code without asyncio.

    Use it as ``with cf.SyncClient(api_key=...) as client:`` or call :meth:`close`. It
    runs its own event loop in a daemon thread, so it also works inside a running loop
    (a notebook cell) and from several threads at once. ``totals_many``/``compare_many``
    return plain iterators (leave them with ``break`` to cancel the rest, or wrap one
    you abandon in :func:`contextlib.closing`); ``on_progress`` is called in the thread
    iterating, before each item.

    Every argument is :class:`Client`'s (the key from ``CLOSE_API_KEY`` when none is
    given), except that ``session=`` is refused: an ``aiohttp.ClientSession`` belongs to
    the loop it was made on, and this client's loop is its own. A ``redis=`` URL is the
    simple way to share the gate; a ``redis.asyncio.Redis`` given must not have been used
    on another loop.
    """

    @_takes_arguments_of(Client)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("session") is not None:
            raise InvalidQueryError(
                "SyncClient makes its aiohttp session on its own event loop: a session "
                "belongs to the loop it was made on; pass no session=",
                field="session",
                rule="sync",
            )
        # Made here, in the caller's thread: a bad option is raised before a thread starts.
        self._client = Client(*args, **kwargs)
        self._closing = threading.Lock()
        self._runner = _LoopThread(f"closefunnel-sync-{next(_serial)}")

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Close the client and its session, stop the loop and join its thread. Calls still
        in flight (in other threads) end with :class:`ClientClosedError`, as do calls
        made afterwards. Closing again does nothing.
        """
        self._refuse_loop_thread("close()")
        with self._closing:  # a second closer returns once the first is done
            self._runner.shutdown(self._client.aclose(), wait=True)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        runner: _LoopThread | None = getattr(self, "_runner", None)
        if runner is None or not runner.open or runner.forked():
            return
        # Close it first, without waiting (the loop and its thread would outlive us), then
        # warn: under -W error the warning raises, and must not skip the close.
        with contextlib.suppress(Exception):
            runner.shutdown(self._client.aclose(), wait=False)
        _warn(
            f"unclosed {self!r}: use 'with SyncClient(...)' or 'client.close()'",
            ResourceWarning,
            source=self,
            stacklevel=2,
        )

    def __repr__(self) -> str:
        inner = repr(self._client).removeprefix("<closefunnel.Client")
        return "<closefunnel.SyncClient" + inner

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._client.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this client."""
        return self._client.retry

    def gate_snapshots(self) -> dict[str, GateSnapshot]:
        """:meth:`Client.gate_snapshots` (read on the loop, where the gates change)."""
        return self._read(self._client.gate_snapshots)

    def pool_snapshot(self) -> PoolSnapshot | None:
        """:meth:`Client.pool_snapshot` (read on the loop, where the pool changes)."""
        return self._read(self._client.pool_snapshot)

    # -- reports -------------------------------------------------------------------

    def funnel_totals(self, query: FunnelQuery, *, format: Format = "json") -> FunnelTotals:
        """:meth:`Client.funnel_totals`, blocking."""
        return self._run(self._client.funnel_totals(query, format=format))

    def compare_totals(
        self, query: FunnelQuery, *compared: Compared, format: Format = "json"
    ) -> FunnelComparison:
        """:meth:`Client.compare_totals`, blocking (the reports are still fetched at once)."""
        return self._run(self._client.compare_totals(query, *compared, format=format))

    def totals_many(
        self,
        queries: Iterable[FunnelQuery],
        *,
        format: Format = "json",
        on_progress: ProgressCallback | None = None,
    ) -> Iterator[BulkItem[FunnelTotals]]:
        """:meth:`Client.totals_many` as a plain iterator, yielding each item as it completes."""
        return self._iterate(
            lambda progress: self._client.totals_many(queries, format=format, on_progress=progress),
            on_progress,
        )

    def compare_many(
        self,
        queries: Iterable[FunnelQuery],
        *compared: Compared,
        format: Format = "json",
        on_progress: ProgressCallback | None = None,
    ) -> Iterator[BulkItem[FunnelComparison]]:
        """:meth:`Client.compare_many` as a plain iterator, yielding each item as it completes."""
        return self._iterate(
            lambda progress: self._client.compare_many(
                queries, *compared, format=format, on_progress=progress
            ),
            on_progress,
        )

    def pipelines(self) -> list[Pipeline]:
        """:meth:`Client.pipelines`, blocking."""
        return self._run(self._client.pipelines())

    def users(self) -> list[User]:
        """:meth:`Client.users`, blocking."""
        return self._run(self._client.users())

    # -- machinery -----------------------------------------------------------------

    def _refuse_loop_thread(self, what: str) -> None:
        if self._runner.in_loop_thread():
            raise RuntimeError(
                f"SyncClient.{what} was called from the client's own event loop thread "
                "(from the iterable of queries of a bulk call?): it would wait for itself"
            )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            self._refuse_loop_thread("a method")
        except RuntimeError:
            coro.close()
            raise
        return self._runner.submit(coro).result()

    def _read(self, read: Callable[[], T]) -> T:
        # The state is only changed on the loop: read it there, or after the loop ended.
        if self._runner.in_loop_thread():
            return read()

        async def on_loop() -> T:
            return read()

        with contextlib.suppress(ClientClosedError):
            return self._run(on_loop())
        with self._closing:  # closed, or closing in another thread: wait until it is done
            return read()

    def _iterate(
        self,
        start: Callable[[ProgressCallback | None], AsyncIterator[BulkItem[R]]],
        on_progress: ProgressCallback | None,
    ) -> Iterator[BulkItem[R]]:
        # A generator: nothing starts before the first next(), as with the async iterator.
        reported: list[tuple[int, int | None]] = []

        def record(done: int, total: int | None) -> None:  # on the loop, before each item
            reported.append((done, total))

        items = start(None if on_progress is None else record)
        try:
            while True:
                step = self._run(_next(items))
                if not step:
                    return
                if on_progress is not None:  # in the caller's thread, once the item is here
                    for done, total in reported:
                        on_progress(done, total)
                    reported.clear()
                yield step[0]
        finally:
            # Left early (break, an error, Ctrl-C): cancel what is still in flight.
            aclose = getattr(items, "aclose", None)
            if aclose is not None and self._runner.open and not self._runner.in_loop_thread():
                with contextlib.suppress(ClientClosedError, RuntimeError):
                    self._run(aclose())


async def _next(items: AsyncIterator[T]) -> list[T]:
    """The next item as a one-item list, or an empty one at the end (a task cannot
    carry StopAsyncIteration across as the end)."""
    try:
        return [await anext(items)]
    except StopAsyncIteration:
        return []
