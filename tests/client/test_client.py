"""The client against the emulator over real loopback sockets: no network mocks."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import attrs
import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator

from .conftest import DOCS_QUERY, EmulatorFactory

SAMPLES = Path(__file__).parent.parent / "samples"
TOTALS = "/api/v1/report/funnel/opportunity/totals/"


def _docs_response() -> dict[str, object]:
    data: dict[str, object] = json.loads((SAMPLES / "funnel_totals_response.json").read_text())
    return data


async def _pipeline_queries(client: cf.Client, count: int) -> list[cf.FunnelQuery]:
    """*count* distinct queries over the demo organization's pipelines and ranges."""
    pipelines = await client.pipelines()
    ranges = [r for r in cf.RELATIVE_RANGES if r != "all-time"]
    queries = [
        cf.FunnelQuery(pipeline=pipeline.id, report_range=rng)
        for rng in ranges
        for pipeline in pipelines
    ]
    users = [u.id for u in await client.users()]
    extra = (
        cf.FunnelQuery(pipeline=p.id, report_range=r, users=(u,))
        for u in users
        for p in pipelines
        for r in ranges
    )
    while len(queries) < count:
        queries.append(next(extra))
    return queries[:count]


async def test_docs_example_json(docs_emulator: Emulator) -> None:
    """The reference page's request returns exactly the reference response."""
    async with cf.Client(api_key=docs_emulator.api_key, base_url=docs_emulator.base_url) as client:
        totals = await client.funnel_totals(DOCS_QUERY)
    body = json.loads(totals.to_json())
    # The one key Close does not send: the range the report covered, kept for from_json.
    assert body.pop("range") == DOCS_QUERY.report_range.to_body()  # type: ignore[union-attr]
    assert body == _docs_response()
    assert totals.data[1].average_time_to_win is None
    assert cf.FunnelTotals.from_json(totals.to_json()) == totals


async def test_docs_example_csv(docs_emulator: Emulator) -> None:
    """CSV gives the same per-user rows and no aggregations."""
    async with cf.Client(api_key=docs_emulator.api_key, base_url=docs_emulator.base_url) as client:
        as_json = await client.funnel_totals(DOCS_QUERY)
        as_csv = await client.funnel_totals(DOCS_QUERY, format="csv")
    assert as_csv.aggregations is None
    assert as_csv.data == as_json.data


async def test_bearer_token(docs_emulator: Emulator) -> None:
    """An OAuth token authenticates as Bearer."""
    async with cf.Client(token=docs_emulator.token, base_url=docs_emulator.base_url) as client:
        totals = await client.funnel_totals(DOCS_QUERY)
    assert totals.aggregations is not None
    assert totals.aggregations.count == 2


async def test_compare_totals_runs_concurrently_and_merges(start_emulator: EmulatorFactory) -> None:
    """Base and two compared reports arrive together and merge into correct deltas."""
    async with (
        start_emulator(latency=0.2) as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        pipeline = (await client.pipelines())[0].id
        query = cf.FunnelQuery(pipeline=pipeline, report_range="this-quarter")
        emu.clear_log()
        comparison = await client.compare_totals(query, "last-quarter", "last-year")
        arrivals = [entry.time for entry in emu.log if entry.path == TOTALS]
        assert len(arrivals) == 3
        assert max(arrivals) - min(arrivals) < 0.05  # a quarter of the emulator's latency

        base = await client.funnel_totals(query)
        last_quarter = await client.funnel_totals(attrs.evolve(query, report_range="last-quarter"))
        last_year = await client.funnel_totals(attrs.evolve(query, report_range="last-year"))

    assert comparison.base == base
    assert [period.compared for period in comparison.comparisons] == ["last-quarter", "last-year"]
    assert comparison.comparisons[0].totals == last_quarter
    assert comparison.comparisons[1].totals == last_year
    for period, other in zip(comparison.comparisons, (last_quarter, last_year), strict=True):
        assert period.aggregations is not None
        assert base.aggregations is not None
        assert other.aggregations is not None
        for name in cf.METRIC_NAMES:
            delta = getattr(period.aggregations, name)
            assert delta.base == getattr(base.aggregations, name)
            assert delta.compared == getattr(other.aggregations, name)
            if delta.base is not None and delta.compared is not None:
                assert delta.delta == delta.base - delta.compared
        base_ids = [row.user_id for row in base.data]
        other_ids = [row.user_id for row in other.data if row.user_id not in base_ids]
        assert [row.user_id for row in period.users] == base_ids + other_ids


async def test_compare_with_same_days_and_custom_ranges(start_emulator: EmulatorFactory) -> None:
    """Same-days and custom compared ranges equal the base report of the shifted range."""
    from datetime import UTC, datetime

    async with (
        start_emulator() as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client,
    ):
        pipeline = (await client.pipelines())[0].id
        base_range = cf.DateRange(
            datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
        )
        custom = cf.DateRange(datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))
        query = cf.FunnelQuery(pipeline=pipeline, report_range=base_range)
        comparison = await client.compare_totals(query, "same-days-last-year", custom)
        shifted = cf.DateRange(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
        expected_same_days = await client.funnel_totals(attrs.evolve(query, report_range=shifted))
        expected_custom = await client.funnel_totals(attrs.evolve(query, report_range=custom))
    assert comparison.comparisons[0].totals == expected_same_days
    assert comparison.comparisons[1].totals == expected_custom


@pytest.mark.parametrize(
    ("report_range", "compared"),
    [
        ("this-month", "same-days-last-month"),
        ("this-month", "next-month"),
        ("this-month", 7),
    ],
)
async def test_invalid_pairing_sends_nothing(
    demo_emulator: Emulator, report_range: str, compared: object
) -> None:
    """A compared range that breaks the pairing rules raises before any request."""
    async with cf.Client(api_key=demo_emulator.api_key, base_url=demo_emulator.base_url) as client:
        query = cf.FunnelQuery(pipeline="pipe_any", report_range=report_range)
        demo_emulator.clear_log()
        with pytest.raises(cf.InvalidQueryError) as info:
            await client.compare_totals(query, "last-month", compared)  # type: ignore[arg-type]
    assert info.value.field == "compared"
    assert demo_emulator.log == []


async def test_not_found_is_sent_once(demo_emulator: Emulator, fast_retry: cf.RetryPolicy) -> None:
    """An unknown pipeline is a NotFoundError after exactly one request."""
    async with cf.Client(
        api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, retry=fast_retry
    ) as client:
        demo_emulator.clear_log()
        with pytest.raises(cf.NotFoundError) as info:
            await client.funnel_totals(cf.FunnelQuery(pipeline="pipe_nope", report_range="today"))
    assert info.value.status == 404
    assert [entry.status for entry in demo_emulator.log] == [404]


async def test_bad_key_is_sent_once(demo_emulator: Emulator, fast_retry: cf.RetryPolicy) -> None:
    """A wrong key is an AuthenticationError after exactly one request."""
    key_id = demo_emulator.api_key.partition(".")[0]
    async with cf.Client(
        api_key=f"{key_id}.wrongsecret", base_url=demo_emulator.base_url, retry=fast_retry
    ) as client:
        demo_emulator.clear_log()
        with pytest.raises(cf.AuthenticationError) as info:
            await client.pipelines()
    assert info.value.status == 401
    assert "wrongsecret" not in str(info.value)
    assert [entry.status for entry in demo_emulator.log] == [401]


@pytest.mark.slow
async def test_rate_limited_bulk_loses_nothing(start_emulator: EmulatorFactory) -> None:
    """A bulk run at a few rps gets every report, with at most a handful of 429s."""
    async with start_emulator(rps=4, window=1.0, latency=0.01) as emu:
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, max_concurrency=8
        ) as client:
            queries = await _pipeline_queries(client, 32)
            emu.clear_log()
            items = [item async for item in client.totals_many(queries)]
            snapshot = client.gate_snapshots()["POST report/funnel"]
        statuses = [entry.status for entry in emu.log if entry.path == TOTALS]
    assert sorted(map(id, (item.query for item in items))) == sorted(map(id, queries))
    assert all(item.ok for item in items)
    assert statuses.count(200) == 32
    assert statuses.count(429) <= 3
    assert snapshot.in_flight == 0
    assert snapshot.waiting == 0


@pytest.mark.slow
async def test_no_request_before_the_reset_after_a_429(start_emulator: EmulatorFactory) -> None:
    """After a 429, no request of that group arrives before the announced reset."""
    async with start_emulator(rps=3, window=1.0, header_style="none") as emu:
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client:
            queries = await _pipeline_queries(client, 15)
            emu.clear_log()
            items = [item async for item in client.totals_many(queries)]
        log = [entry for entry in emu.log if entry.path == TOTALS]
    assert all(item.ok for item in items)
    limited = [entry for entry in log if entry.status == 429]
    assert limited, "the run was meant to meet the limit at least once"
    for hit in limited:
        # With no RateLimit header the 429's Retry-After (ceil of the reset, 1 s here) is
        # all the client knows. Requests already in flight land within a few ms of the 429;
        # nothing sent after the client saw it may arrive before the second is up.
        too_soon = [e.time - hit.time for e in log if 0.05 < e.time - hit.time < 0.999]
        assert too_soon == []


async def test_faults_give_the_same_results_as_a_clean_run(
    start_emulator: EmulatorFactory, fast_retry: cf.RetryPolicy
) -> None:
    """With 30% faults of every kind, every result equals the fault-free one."""
    async with (
        start_emulator(seed=7) as clean,
        cf.Client(api_key=clean.api_key, base_url=clean.base_url) as client,
    ):
        queries = await _pipeline_queries(client, 24)
        expected = {
            item.query: item.result async for item in client.compare_many(queries, "last-year")
        }
    async with start_emulator(fault_rate=0.3, slow_delay=0.5, seed=7) as faulty:
        async with cf.Client(
            api_key=faulty.api_key, base_url=faulty.base_url, retry=fast_retry, timeout=0.3
        ) as client:
            got = {item.query: item async for item in client.compare_many(queries, "last-year")}
        faults = {entry.fault for entry in faulty.log if entry.fault}
    assert [item.error for item in got.values() if item.error] == []
    assert {query: item.result for query, item in got.items()} == expected
    assert len(faults) >= 6, faults


async def test_identical_concurrent_calls_share_one_request(demo_emulator: Emulator) -> None:
    """Ten identical calls in flight together make one HTTP request."""
    async with cf.Client(api_key=demo_emulator.api_key, base_url=demo_emulator.base_url) as client:
        pipeline = (await client.pipelines())[0].id
        query = cf.FunnelQuery(pipeline=pipeline, report_range="this-year")
        demo_emulator.clear_log()
        results = await asyncio.gather(*(client.funnel_totals(query) for _ in range(10)))
    assert len({id(result) for result in results}) == 1
    assert len([e for e in demo_emulator.log if e.path == TOTALS]) == 1


async def test_cancelled_bulk_run_leaves_the_client_usable(start_emulator: EmulatorFactory) -> None:
    """Cancelling a bulk run mid-flight frees every permit; the client keeps working."""
    async with (
        start_emulator(latency=0.05) as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url, max_concurrency=2) as client,
    ):
        queries = await _pipeline_queries(client, 20)

        async def consume() -> int:
            return len([item async for item in client.totals_many(queries)])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        snapshot = client.gate_snapshots()["POST report/funnel"]
        assert snapshot.in_flight == 0
        assert snapshot.waiting == 0
        done = [item async for item in client.totals_many(queries[:4])]
    assert all(item.ok for item in done)


async def test_a_busy_consumer_leaves_the_others_running_with_a_bounded_buffer(
    demo_emulator: Emulator,
) -> None:
    """While the caller holds one item, the next queries start as others end (not when
    it asks for more): max_concurrency run, a worker draws its next query only while
    fewer than max_concurrency ended ones wait, and none of them queues at the gate."""
    async with cf.Client(
        api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, max_concurrency=2
    ) as client:
        queries = await _pipeline_queries(client, 12)
        drawn = 0

        def counted() -> Iterator[cf.FunnelQuery]:
            nonlocal drawn
            for query in queries:
                drawn += 1
                yield query

        demo_emulator.clear_log()
        items = []
        async for item in client.totals_many(counted()):
            items.append(item)
            if len(items) == 1:
                # Held by us: q2 and q3 run. q2 ends and q4 starts (one item waits);
                # q3 ends (two wait: no more is drawn); q4 ends. Four drawn, three wait.
                for _ in range(500):
                    if len([e for e in demo_emulator.log if e.path == TOTALS]) >= 4:
                        break
                    await asyncio.sleep(0.01)
                for _ in range(20):  # let every answer in flight land
                    await asyncio.sleep(0.01)
                assert drawn == 4
                assert client.gate_snapshots()["POST report/funnel"].waiting == 0
        assert [item.error for item in items if not item.ok] == []
        assert sorted(map(id, (item.query for item in items))) == sorted(map(id, queries))


async def test_an_iterable_failing_between_items_is_raised(demo_emulator: Emulator) -> None:
    """The iterable is drawn as queries end (inside the loop's callbacks): its own error
    still reaches the caller, after what ended before it, and nothing is left running."""
    async with cf.Client(
        api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, max_concurrency=2
    ) as client:
        queries = await _pipeline_queries(client, 6)

        def failing() -> Iterator[cf.FunnelQuery]:
            yield from queries[:3]
            raise LookupError("the query source broke")

        got: list[cf.BulkItem[cf.FunnelTotals]] = []

        async def drain() -> None:
            async for item in client.totals_many(failing()):
                got.append(item)

        with pytest.raises(LookupError, match="source broke"):
            await drain()
        snapshot = client.gate_snapshots()["POST report/funnel"]
        assert (snapshot.in_flight, snapshot.waiting) == (0, 0)
        assert len(got) <= 3
        assert all(item.ok for item in got)


@pytest.mark.slow
async def test_secret_never_logged(
    start_emulator: EmulatorFactory, fast_retry: cf.RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, with faults and auth errors, the secret is in no log line or error."""
    caplog.set_level(logging.DEBUG, logger="closefunnel")
    async with start_emulator(fault_rate=0.5, seed=3, slow_delay=0.5) as emu:
        secret = emu.api_key.partition(".")[2]
        texts: list[str] = []
        for key in (emu.api_key, emu.api_key + "x"):
            async with cf.Client(
                api_key=key, base_url=emu.base_url, retry=fast_retry, timeout=0.3
            ) as client:
                texts.append(repr(client))
                emu.fail_next(2, "503")  # at least one retry is logged, whatever the draws
                try:
                    await client.pipelines()
                    queries = await _pipeline_queries(client, 6)
                    async for item in client.totals_many(queries):
                        texts.append(repr(item))
                        texts.append(str(item.error))
                except cf.CloseFunnelError as exc:
                    texts.append(repr(exc))
                    texts.append(str(exc))
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(repr(record.__dict__) for record in caplog.records)
    assert any("closefunnel.retry" in text for text in texts)
    for text in texts:
        assert secret not in text


async def test_rate_limit_longer_than_max_wait_raises(start_emulator: EmulatorFactory) -> None:
    """A server pause longer than max_wait raises RateLimitedError instead of sleeping."""
    async with start_emulator(rps=0.02, window=50.0) as emu:
        policy = cf.RetryPolicy(max_wait=2.0)
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy) as client:
            await client.pipelines()
            with pytest.raises(cf.RateLimitedError) as info:
                await client.pipelines()
    assert info.value.retry_after is not None
    assert info.value.retry_after > 2.0


async def test_outage_stops_after_the_configured_attempts(
    demo_emulator: Emulator, fast_retry: cf.RetryPolicy
) -> None:
    """Every request failing with 503 stops after `attempts` tries with a ServerError."""
    policy = attrs.evolve(fast_retry, attempts=3)
    demo_emulator.fail_next(100, "503-no-retry-after")
    async with cf.Client(
        api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, retry=policy
    ) as client:
        demo_emulator.clear_log()
        with pytest.raises(cf.ServerError):
            await client.pipelines()
    assert len(demo_emulator.log) == 3


async def test_timeout_is_a_typed_error(demo_emulator: Emulator) -> None:
    """A response slower than the timeout ends in RequestTimeoutError, not a hang."""
    demo_emulator.fail_next(10, "slow")
    policy = cf.RetryPolicy(attempts=2, backoff_initial=0.0, backoff_max=0.0)
    async with cf.Client(
        api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, retry=policy, timeout=0.2
    ) as client:
        with pytest.raises(cf.RequestTimeoutError):
            await client.pipelines()


async def test_lifecycle(demo_emulator: Emulator) -> None:
    """aclose is idempotent, use after close raises, and an injected session stays open."""
    async with aiohttp.ClientSession() as session:
        client = cf.Client(
            api_key=demo_emulator.api_key, base_url=demo_emulator.base_url, session=session
        )
        assert (await client.pipelines())[0].statuses
        await client.aclose()
        await client.aclose()
        assert not session.closed
        with pytest.raises(RuntimeError):
            await client.pipelines()


async def test_unclosed_client_warns(demo_emulator: Emulator) -> None:
    """A client dropped while open warns with ResourceWarning."""

    async def use_and_drop() -> aiohttp.ClientSession | None:
        client = cf.Client(api_key=demo_emulator.api_key, base_url=demo_emulator.base_url)
        await client.pipelines()
        return client._session  # the client itself is dropped here, still open

    with pytest.warns(ResourceWarning):
        session = await use_and_drop()
    gc.collect()
    assert session is not None
    await session.close()


def test_constructor_checks_input() -> None:
    """Bad options are InvalidQueryError before anything runs, and repr hides the key."""
    with pytest.raises(cf.InvalidQueryError):
        cf.Client()
    with pytest.raises(cf.InvalidQueryError):
        cf.Client(api_key="a", token="b")
    with pytest.raises(cf.InvalidQueryError):
        cf.Client(api_key="api_x.y", tz_offset=20)
    with pytest.raises(cf.InvalidQueryError):
        cf.Client(api_key="api_x.y", base_url="ftp://example")
    with pytest.raises(cf.InvalidQueryError):
        cf.Client(api_key="api_x.y", max_concurrency=0)
    client = cf.Client(api_key="api_abc.topsecret")
    assert "topsecret" not in repr(client)


async def test_tz_offset_changes_relative_ranges(start_emulator: EmulatorFactory) -> None:
    """With tz_offset=-12, 'this-month' is the month of the caller's calendar."""
    from datetime import datetime, timedelta, timezone

    west = timezone(timedelta(hours=-12))
    async with start_emulator() as emu:
        async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as utc:
            pipeline = (await utc.pipelines())[0].id
            month = cf.DateRange(
                datetime(2026, 11, 1, tzinfo=west), datetime(2026, 12, 1, tzinfo=west)
            )
            explicit = await utc.funnel_totals(
                cf.FunnelQuery(pipeline=pipeline, report_range=month)
            )
        async with cf.Client(
            api_key=emu.api_key, base_url=emu.base_url, tz_offset=-12, clock=emu.now
        ) as client:
            emu.clear_log()
            relative = await client.funnel_totals(
                cf.FunnelQuery(pipeline=pipeline, report_range="this-month")
            )
    assert relative == explicit
