"""
The single-flight primitive's races, tested once: the client and the TTL cache both use it.

(Moved here from tests/web/test_cache.py and tests/client/test_gate.py, which tested the
same races against the two copies the primitive replaces.)
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from closefunnel._singleflight import SingleFlight


async def test_concurrent_identical_calls_share_one_run() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    started = 0
    release = asyncio.Event()

    async def work() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "value"

    waiters = [asyncio.create_task(flights.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert "k" in flights
    release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 5
    assert started == 1
    assert len(flights) == 0  # forgotten once done


async def test_failures_are_shared_and_then_forgotten() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    attempts = 0

    async def work() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("upstream down")
        return "ok"

    results = await asyncio.gather(
        flights.run("k", work), flights.run("k", work), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert attempts == 1
    assert await flights.run("k", work) == "ok"


async def test_cancelling_every_waiter_cancels_the_work() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    running = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    one = asyncio.create_task(flights.run("k", work))
    two = asyncio.create_task(flights.run("k", work))
    await running.wait()
    one.cancel()
    with pytest.raises(asyncio.CancelledError):
        await one
    await asyncio.sleep(0)
    assert not cancelled.is_set()  # *two* still wants it
    two.cancel()
    async with asyncio.timeout(2):
        await cancelled.wait()
    with pytest.raises(asyncio.CancelledError):
        await two


async def test_a_caller_arriving_as_the_work_is_cancelled_gets_its_own() -> None:
    """Joining work whose last waiter just left starts fresh work, not the cancelled one."""
    flights: SingleFlight[str, int] = SingleFlight()
    runs = 0
    running = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        running.set()
        await asyncio.sleep(0.05)
        return runs

    first = asyncio.create_task(flights.run("k", work))
    await running.wait()
    first.cancel()
    await asyncio.sleep(0)  # the first caller leaves; its work is still winding down
    second = asyncio.create_task(flights.run("k", work))
    assert await second == 2
    assert runs == 2


async def test_a_failure_nobody_awaits_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The last waiter leaving after the work failed: asyncio logs no unretrieved error."""
    flights: SingleFlight[str, int] = SingleFlight()

    async def work() -> int:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await flights.run("k", work)
    tasks = flights.tasks()
    assert tasks == []
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_work_cancelled_from_outside_cancels_every_caller() -> None:
    """What a shutdown does (cancelling the work itself) ends every caller, and frees the key."""
    flights: SingleFlight[str, str] = SingleFlight()
    running = asyncio.Event()

    async def work() -> str:
        running.set()
        await asyncio.Event().wait()
        return "never"

    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(3)]
    await running.wait()
    [task] = flights.tasks()
    task.cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(result) for result in results] == [asyncio.CancelledError] * 3
    assert len(flights) == 0


async def test_the_last_caller_to_leave_returns_after_the_work_has_ended() -> None:
    """A cancelled caller (or bulk run) leaves nothing behind still winding down."""
    flights: SingleFlight[str, str] = SingleFlight()
    running = asyncio.Event()
    wound_down = False

    async def work() -> str:
        nonlocal wound_down
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that takes a turn of the loop
            await asyncio.sleep(0)
            wound_down = True
        return "never"

    future = flights.join("k", work)
    await running.wait()
    assert future.cancel()
    assert future.cancel()  # asked twice: still cancelled only once the work has ended
    assert not future.done()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert wound_down
    assert flights.tasks() == []


class _Report:
    """A result that can be referenced weakly."""


async def test_a_finished_flight_is_freed_at_once() -> None:
    """
    Nothing of a finished call is left in a reference cycle: its result is freed as soon
    as the caller drops it, not later by the cyclic collector (which would walk every
    result held meanwhile, again and again, in a long bulk run).
    """
    flights: SingleFlight[str, _Report] = SingleFlight()

    async def work() -> _Report:
        await asyncio.sleep(0)
        return _Report()

    gc.collect()
    gc.disable()
    try:
        shared = await asyncio.gather(flights.run("k", work), flights.run("k", work))
        assert shared[0] is shared[1]
        ref = weakref.ref(shared[0])
        del shared
        await asyncio.sleep(0)  # the loop's handle that woke us holds the finished future
        assert ref() is None
        future = flights.join("j", work)
        ref = weakref.ref(await future)
        del future
        await asyncio.sleep(0)
        assert ref() is None
    finally:
        gc.enable()


# -- a caller leading the work in its own task (bulk workers) ------------------------------


class _Gated:
    """Work that counts its runs and answers *value* (else its run count) once released."""

    def __init__(self, value: object = None) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.value = value
        self.ran_in: list[asyncio.Task[object] | None] = []
        self.cancelled = asyncio.Event()

    async def __call__(self) -> object:
        self.runs += 1
        self.ran_in.append(asyncio.current_task())
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return self.runs if self.value is None else self.value


async def _led_and_joined(
    flights: SingleFlight[str, object], work: _Gated
) -> tuple[asyncio.Task[object], asyncio.Task[object]]:
    """A caller leading *work* under "k", and one that joined it: both waiting."""
    leader = asyncio.create_task(flights.lead("k", work))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    return leader, joiner


async def test_a_leader_does_the_work_in_its_own_task_and_shares_it() -> None:
    """lead(): no task made for the work; callers arriving meanwhile join it."""
    flights: SingleFlight[str, object] = SingleFlight()
    work = _Gated("value")
    leader = asyncio.create_task(flights.lead("k", work))
    await asyncio.sleep(0)
    joiners = [asyncio.create_task(flights.run("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    assert flights.tasks() == [leader]
    work.release.set()
    assert await asyncio.gather(leader, *joiners) == ["value"] * 4
    assert work.ran_in == [leader]
    assert len(flights) == 0


async def test_a_cancelled_leader_hands_the_work_to_those_still_waiting() -> None:
    """The leader's cancellation is its own: the others get an answer, from the work
    started again for them (the one case that costs a second run), and the key is
    free once it ends."""
    flights: SingleFlight[str, object] = SingleFlight()
    work = _Gated()
    leader, joiner = await _led_and_joined(flights, work)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert "k" in flights
    work.release.set()
    assert await joiner == 2
    assert work.runs == 2
    assert len(flights) == 0


async def test_a_cancelled_leader_alone_cancels_the_work_and_frees_the_key() -> None:
    flights: SingleFlight[str, object] = SingleFlight()
    work = _Gated()
    leader = asyncio.create_task(flights.lead("k", work))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert work.cancelled.is_set()
    assert len(flights) == 0


async def test_a_joiner_leaving_a_led_flight_leaves_the_work_to_the_leader() -> None:
    flights: SingleFlight[str, object] = SingleFlight()
    work = _Gated("value")
    leader, joiner = await _led_and_joined(flights, work)
    joiner.cancel()
    async with asyncio.timeout(5):  # a joiner treated as the last one would never end
        with pytest.raises(asyncio.CancelledError):
            await joiner
        work.release.set()
        assert await leader == "value"


async def test_a_leaders_failure_reaches_every_joiner(caplog: pytest.LogCaptureFixture) -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        raise LookupError("boom")

    leader = asyncio.create_task(flights.lead("k", work))
    await asyncio.sleep(0)
    joiners = [asyncio.create_task(flights.run("k", work)) for _ in range(2)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(leader, *joiners, return_exceptions=True)
    assert [type(result) for result in results] == [LookupError] * 3
    assert len(flights) == 0
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_cancel_all_ends_led_work_and_the_leader_goes_on() -> None:
    """Shutting down cancels led work too, and returns once it has ended; the leader's
    task itself decides what the cancellation means for it (the client's say 'closed')."""
    flights: SingleFlight[str, str] = SingleFlight()
    after: list[str] = []

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # winding down takes a turn of the loop
            raise LookupError("closed") from None
        return "never"

    async def leader() -> None:
        with pytest.raises(LookupError):
            await flights.lead("k", work)
        after.append("went on")

    task = asyncio.create_task(leader())
    await asyncio.sleep(0)
    await flights.cancel_all()
    assert len(flights) == 0
    await task
    assert after == ["went on"]


async def test_cancel_all_hands_nothing_over_and_ends_the_joiners_too() -> None:
    """Shutting down is not a leader leaving: the work is not started again for its
    joiners (cancel_all would wait on that new run), they end cancelled with it."""
    flights: SingleFlight[str, object] = SingleFlight()
    work = _Gated()
    leader, joiner = await _led_and_joined(flights, work)
    async with asyncio.timeout(5):
        await flights.cancel_all()
        results = await asyncio.gather(leader, joiner, return_exceptions=True)
    assert [type(result) for result in results] == [asyncio.CancelledError] * 2
    assert work.runs == 1
    assert len(flights) == 0
