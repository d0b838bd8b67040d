"""cf.SyncClient: Client's arguments and methods, blocking, over its own loop thread."""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator
from tests.sync.conftest import NOW, BarrierServer, StallServer, wait_until

TOTALS = "/api/v1/report/funnel/opportunity/totals/"
#: No retries: a 504 from the barrier server fails the call at once.
ONCE = cf.RetryPolicy(attempts=1)
MONTH = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))


def _sync(emu: Emulator, **options: Any) -> cf.SyncClient:
    return cf.SyncClient(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now, **options)


def _queries(emu: Emulator) -> list[cf.FunnelQuery]:
    return [
        cf.FunnelQuery(pipeline=pipeline.id, report_range=MONTH)
        for pipeline in emu.dataset.pipelines
    ]


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _posts(emu: Emulator) -> int:
    return sum(1 for entry in emu.log if entry.path == TOTALS)


# -- the same surface ----------------------------------------------------------------------


def test_the_same_arguments_as_client() -> None:
    """Name, kind, default and annotation of every parameter, in order."""
    ours = inspect.signature(cf.SyncClient).parameters
    theirs = inspect.signature(cf.Client).parameters
    assert list(ours.values()) == list(theirs.values())


#: A non-default value for every Client argument (token and session aside: see below).
SAMPLES: dict[str, Any] = {
    "api_key": "api_sample.secretsecret",
    "base_url": "https://close.invalid/api/v1/",
    "tz_offset": -5.5,
    "max_concurrency": 3,
    "timeout": 7.0,
    "retry": cf.RetryPolicy(attempts=2),
    "max_response_bytes": 4096,
    "allow_insecure_http": True,
    "redis": "redis://127.0.0.1:1/3",
    "redis_fallback": "fail",
    "redis_prefix": "sample",
    "clock": lambda: NOW,
}


def test_every_argument_reaches_the_client() -> None:
    """Each argument given to SyncClient configures its Client exactly as given to Client
    (a new Client argument fails here until it has a sample value)."""
    names = set(inspect.signature(cf.Client).parameters)
    assert names == set(SAMPLES) | {"token", "session"}
    with cf.SyncClient(**SAMPLES) as sync:
        assert sync._client._options == cf.Client(**SAMPLES)._options
        assert sync.base_url == SAMPLES["base_url"]
        assert sync.retry is SAMPLES["retry"]
    with cf.SyncClient(token="oauth-sample-token") as bearer:
        assert bearer._client._options.token == "oauth-sample-token"


def test_the_same_methods_as_client() -> None:
    """Every public method and property of Client, with the same parameters; close()
    for aclose(), with for async with."""
    assert _public(cf.SyncClient) - {"close"} == _public(cf.Client) - {"aclose"}
    for name in _public(cf.Client) - {"aclose"}:
        ours, theirs = getattr(cf.SyncClient, name), getattr(cf.Client, name)
        assert isinstance(ours, property) == isinstance(theirs, property), name
        if callable(theirs):
            ours_params = list(inspect.signature(ours).parameters.values())
            assert ours_params == list(inspect.signature(theirs).parameters.values()), name
    assert hasattr(cf.SyncClient, "__enter__")
    assert hasattr(cf.SyncClient, "__exit__")
    assert "SyncClient" in cf.__all__


# -- blocking calls ------------------------------------------------------------------------


def test_blocking_calls_return_what_the_async_client_returns(emu: Emulator) -> None:
    """Reports, comparisons, CSV, pipelines and users, equal to the async client's."""
    query = cf.FunnelQuery(pipeline=emu.dataset.pipelines[0].id, report_range="this-month")

    async def expected() -> list[Any]:
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now) as c:
            return [
                await c.funnel_totals(query),
                await c.funnel_totals(query, format="csv"),
                await c.compare_totals(query, "last-month", "last-year"),
                await c.pipelines(),
                await c.users(),
            ]

    with _sync(emu) as client:
        first = client.funnel_totals(query)
        got = [
            first,
            client.funnel_totals(query, format="csv"),
            client.compare_totals(query, "last-month", "last-year"),
            client.pipelines(),
            client.users(),
        ]
        assert client.base_url == emu.base_url
        assert client.gate_snapshots()["POST report/funnel"].sent == 5
        pool = client.pool_snapshot()
        assert pool is not None
        assert pool.in_use == 0
    assert got == asyncio.run(expected())
    assert first.range == MONTH  # resolved on the emulator's clock (clock= is forwarded)


def test_errors_are_the_clients_own_with_a_readable_traceback(emu: Emulator) -> None:
    """A 404 is a NotFoundError (not wrapped); its traceback runs from the caller's line
    through SyncClient into the Client's frames on the loop, no executor machinery."""
    with _sync(emu) as client:
        with pytest.raises(cf.NotFoundError) as caught:
            client.funnel_totals(cf.FunnelQuery(pipeline="pipe_nope", report_range=MONTH))
        with pytest.raises(cf.InvalidQueryError):
            client.funnel_totals(
                cf.FunnelQuery(pipeline="pipe_x", report_range=MONTH),
                format="xml",  # type: ignore[arg-type]
            )
        with pytest.raises(cf.InvalidQueryError):
            client.compare_totals(cf.FunnelQuery(pipeline="pipe_x", report_range=MONTH))
    assert type(caught.value) is cf.NotFoundError
    assert caught.value.__cause__ is None
    stack = traceback.extract_tb(caught.value.__traceback__)
    assert stack[0].name == "test_errors_are_the_clients_own_with_a_readable_traceback"
    files = [frame.filename.rsplit("/", 1)[-1] for frame in stack]
    assert files.index("_sync.py") < files.index("_client.py")  # SyncClient's, then Client's
    printed = "".join(traceback.format_exception(caught.value))
    assert "concurrent/futures" not in printed
    assert "asyncio/" not in printed


def test_bad_options_fail_before_a_thread_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client's option errors, raised in the caller's thread; a session is refused."""
    before = threading.active_count()
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.SyncClient()
    assert "CLOSE_API_KEY" in str(caught.value)
    with pytest.raises(cf.InvalidQueryError):
        cf.SyncClient(api_key="api_x.secretsecret", max_concurrency=0)
    with pytest.raises(cf.InvalidQueryError) as refused:
        cf.SyncClient(api_key="api_x.secretsecret", session=object())  # type: ignore[arg-type]
    assert (refused.value.field, refused.value.rule) == ("session", "sync")
    assert threading.active_count() == before
    monkeypatch.setenv("CLOSE_API_KEY", "api_fromenv.secretsecret")
    with cf.SyncClient() as client:
        assert "api_fromenv" in repr(client)
        assert "secretsecret" not in repr(client)


# -- bulk iterators ------------------------------------------------------------------------


def test_bulk_methods_are_plain_iterators_with_progress_in_the_callers_thread(
    emu: Emulator,
) -> None:
    """totals_many/compare_many yield BulkItems; one failure is its item's error;
    on_progress runs in the iterating thread, once per item, before it."""
    queries = [*_queries(emu), cf.FunnelQuery(pipeline="pipe_nope", report_range=MONTH)]
    seen: list[tuple[int, int | None, str]] = []

    def progress(done: int, total: int | None) -> None:
        seen.append((done, total, threading.current_thread().name))

    with _sync(emu) as client:
        items = client.compare_many(queries, "same-days-last-year", on_progress=progress)
        assert iter(items) is items
        compared: list[cf.BulkItem[cf.FunnelComparison]] = []
        for item in items:
            assert len(seen) == len(compared) + 1
            compared.append(item)
        totals = list(client.totals_many(iter(queries)))
    assert len(compared) == len(totals) == len(queries)
    assert [done for done, _, _ in seen] == list(range(1, len(queries) + 1))
    assert {total for _, total, _ in seen} == {len(queries)}
    assert {name for _, _, name in seen} == {threading.current_thread().name}
    for items_of_one_kind in (compared, totals):
        failed = [item for item in items_of_one_kind if not item.ok]
        assert [item.query.pipeline for item in failed] == ["pipe_nope"]
        assert isinstance(failed[0].error, cf.NotFoundError)
        assert {item.query for item in items_of_one_kind} == set(queries)


def test_a_bulk_iterator_streams_and_break_cancels_what_is_in_flight() -> None:
    """An endless generator of queries is drawn only as room frees up (max_concurrency
    queries in flight, none queued at the gate); leaving the loop cancels at once the
    queries in flight (held at the server until it stops)."""
    drawn = 0

    def endless() -> Iterator[cf.FunnelQuery]:
        nonlocal drawn
        for n in itertools.count():
            drawn += 1
            yield cf.FunnelQuery(pipeline=f"pipe_{n}", report_range=MONTH)

    with (
        StallServer(answer=3) as server,
        cf.SyncClient(
            api_key="api_t.secretsecret", base_url=server.base_url, max_concurrency=2
        ) as client,
    ):
        got = []
        for item in client.totals_many(endless()):
            assert item.ok
            got.append(item)
            if len(got) == 3:
                # Requests 4 and 5 hold both permits at the server; no 6th is drawn.
                wait_until(lambda: server.arrived == 5, what="two stalled requests")
                gate = client.gate_snapshots()["POST report/funnel"]
                assert (gate.in_flight, gate.waiting) == (2, 0)
                assert drawn == 5
                break
        gate = client.gate_snapshots()["POST report/funnel"]
        pool = client.pool_snapshot()
        assert (gate.in_flight, gate.waiting) == (0, 0)
        assert pool is not None
        assert pool.in_use == 0
        assert drawn == 5
        assert server.arrived == 5


def test_a_query_iterable_that_calls_the_client_gets_a_clear_error(emu: Emulator) -> None:
    """The queries are drawn on the loop thread: a blocking call from there would wait
    for itself forever, so it is refused."""
    with _sync(emu) as client:

        def queries() -> Iterator[cf.FunnelQuery]:
            for pipeline in client.pipelines():
                yield cf.FunnelQuery(pipeline=pipeline.id, report_range=MONTH)

        with pytest.raises(RuntimeError, match="own event loop thread"):
            list(client.totals_many(queries()))
        assert client.pipelines()  # still usable


# -- loops and threads ---------------------------------------------------------------------


def test_it_works_inside_a_running_loop(emu: Emulator) -> None:
    """What a notebook cell does: blocking calls from a coroutine, inside asyncio.run."""
    query = cf.FunnelQuery(pipeline=emu.dataset.pipelines[0].id, report_range=MONTH)

    async def cell() -> tuple[cf.FunnelTotals, list[cf.BulkItem[cf.FunnelTotals]]]:
        asyncio.get_running_loop()  # there is one, and SyncClient does not mind
        with _sync(emu) as client:
            return client.funnel_totals(query), list(client.totals_many([query]))

    totals, items = asyncio.run(cell())
    assert items[0].result == totals


async def test_it_works_from_an_async_test(emu: Emulator) -> None:
    """The same from pytest-asyncio's running loop."""
    with _sync(emu) as client:
        assert len(client.users()) == len(emu.dataset.users)


def test_calls_from_many_threads_run_at_once_on_one_loop() -> None:
    """Four threads, four different reports: the server answers only once all four are
    in flight together, so serialized calls would fail; one loop thread serves them."""
    before = {thread.name for thread in threading.enumerate()}
    with (
        BarrierServer(parties=4, patience=5.0) as server,
        cf.SyncClient(api_key="api_t.secretsecret", base_url=server.base_url, retry=ONCE) as client,
    ):
        started = {thread.name for thread in threading.enumerate()} - before
        assert len([name for name in started if name.startswith("closefunnel-sync")]) == 1
        queries = [cf.FunnelQuery(pipeline=f"pipe_{n}", report_range=MONTH) for n in range(4)]
        with ThreadPoolExecutor(4) as pool:
            reports = list(pool.map(client.funnel_totals, queries))
        assert all(report.data == () for report in reports)
        assert server.arrived == server.most_at_once == 4
        assert client.gate_snapshots()["POST report/funnel"].sent == 4


# -- closing -------------------------------------------------------------------------------


def test_close_is_idempotent_joins_the_thread_and_refuses_later_use(emu: Emulator) -> None:
    client = _sync(emu)
    thread = client._runner.thread
    items = client.totals_many(_queries(emu))
    assert next(items).ok
    client.close()
    client.close()
    assert not thread.is_alive()
    assert "closed" in repr(client)
    with pytest.raises(cf.ClientClosedError):
        client.users()
    with pytest.raises(cf.ClientClosedError):
        next(items)
    with pytest.raises(cf.ClientClosedError):
        next(client.totals_many(_queries(emu)))
    assert client.gate_snapshots()["POST report/funnel"].in_flight == 0  # still readable


def test_closing_ends_a_call_in_flight_in_another_thread() -> None:
    """A call held at the server ends with ClientClosedError when another thread closes
    the client, instead of keeping its thread waiting."""
    with StallServer(answer=0) as server:
        client = cf.SyncClient(api_key="api_t.secretsecret", base_url=server.base_url)
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(client.users)
            wait_until(lambda: server.arrived == 1, what="the request")
            client.close()
            with pytest.raises(cf.ClientClosedError):
                call.result()


def _use_and_drop(emu: Emulator) -> threading.Thread:
    client = _sync(emu)
    client.users()
    return client._runner.thread  # the client itself is dropped here, still open


def test_an_unclosed_client_warns_and_still_stops_its_thread(emu: Emulator) -> None:
    """Like Client: a ResourceWarning; unlike a bare loop, its thread does not live on."""
    with pytest.warns(ResourceWarning, match="unclosed <closefunnel.SyncClient"):
        thread = _use_and_drop(emu)
    gc.collect()
    thread.join(20)
    assert not thread.is_alive()


def test_a_warning_that_raises_does_not_skip_the_close(emu: Emulator) -> None:
    """Under -W error the ResourceWarning raises in __del__: the client is closed first."""
    client = _sync(emu)
    client.users()
    thread = client._runner.thread

    def raising(*_: object, **__: object) -> None:
        raise ResourceWarning("as under -W error")

    with pytest.raises(ResourceWarning):
        client.__del__(_warn=raising)
    thread.join(20)
    assert not thread.is_alive()


# -- Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_cancels_the_call_on_the_loop() -> None:
    """A real SIGINT to this (main) thread while a call waits on a held response: the
    KeyboardInterrupt reaches the caller, the request is cancelled on the loop (its
    permit and connection are free again) and the client goes on working."""
    assert threading.current_thread() is threading.main_thread()
    with (
        StallServer(answer=0) as server,
        cf.SyncClient(api_key="api_t.secretsecret", base_url=server.base_url) as client,
    ):

        def interrupt() -> None:
            wait_until(lambda: server.arrived == 1, what="the request")
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        sender = threading.Thread(target=interrupt)
        sender.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.users()
        finally:
            sender.join()
        gate = client.gate_snapshots()["GET user"]
        pool = client.pool_snapshot()
        assert (gate.in_flight, gate.waiting) == (0, 0)
        assert pool is not None
        assert pool.in_use == 0
        server.answer = 2
        assert client.users() == []


#: A script that blocks in a SyncClient call on a held response until it is interrupted.
INTERRUPTED_SCRIPT = """
import json, sys, threading
import closefunnel as cf
from tests.sync.conftest import StallServer, wait_until

with (
    StallServer(answer=0) as server,
    cf.SyncClient(api_key="api_t.secretsecret", base_url=server.base_url) as client,
):
    def announce():
        wait_until(lambda: server.arrived == 1, what="the request")
        print("in flight", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        client.users()
    except KeyboardInterrupt:
        if sys.argv[1] == "uncaught":
            raise
        gate, pool = client.gate_snapshots()["GET user"], client.pool_snapshot()
        print(json.dumps([gate.in_flight, pool.in_use]), flush=True)
print("closed", flush=True)
"""


@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.parametrize("handling", ["caught", "uncaught"])
def test_ctrl_c_in_a_script_cancels_the_call_and_exits(handling: str, tmp_path: Path) -> None:
    """SIGINT to a real process blocked in a call: the KeyboardInterrupt is raised there,
    the call is cancelled on the loop, and ``with`` still closes the client; uncaught, the
    process dies of the interrupt instead of hanging on the loop thread."""
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_SCRIPT, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-W", "error", str(script), handling],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "in flight\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if handling == "caught":
        assert process.returncode == 0, err
        assert out.splitlines() == ["[0, 0]", "closed"]
        assert err == ""
    else:
        assert process.returncode == -signal.SIGINT
        assert "closed" not in out
        assert err.rstrip().endswith("KeyboardInterrupt")
        assert f'File "{script}", line 16, in <module>\n    client.users()' in err


def _call_in_a_fork(client: cf.SyncClient, answer: Connection) -> None:
    try:
        client.users()
    except cf.ClientClosedError as exc:
        answer.send(str(exc))
    else:
        answer.send("no error")
    client.close()  # the parent's: nothing to do here, and no warning when collected


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_an_error_instead_of_waiting_forever(emu: Emulator) -> None:
    """The loop thread does not survive fork(): a call in the child is refused at once,
    and the parent's client goes on working."""
    with _sync(emu) as client:
        assert client.users()
        ours, theirs = multiprocessing.get_context("fork").Pipe()
        child = multiprocessing.get_context("fork").Process(
            target=_call_in_a_fork, args=(client, theirs)
        )
        child.start()
        try:
            assert ours.poll(30), "the child's call did not return"
            assert "does not survive a fork" in ours.recv()
            child.join(30)
            assert child.exitcode == 0
        finally:
            if child.is_alive():
                child.kill()
                child.join()
        assert client.users()
