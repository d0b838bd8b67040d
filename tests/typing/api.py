"""
Type-checked use of closefunnel's public API (``mypy --strict tests/typing``).

Never run and never collected by pytest (the name is not ``test_*.py``): it exists so that
a change to a public signature or return type shows up as a mypy error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import assert_type

import closefunnel as cf

REPORT_BODY = b'{"aggregations": null, "data": []}'


def build_queries() -> list[cf.FunnelQuery]:
    """Queries of every shape the public constructor takes."""
    week = cf.DateRange(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 8, tzinfo=UTC))
    assert_type(week.start, datetime)
    active = cf.FunnelQuery(
        pipeline="pipe_4vukv2FUlFh9FDiVYAop1U",
        report_range=week,
        saved_search_id="save_x",
        users=("user_1", "user_2"),
    )
    created = cf.FunnelQuery(
        pipeline="pipe_x", type="created-cohort", cohort_range="last-month", report_range=None
    )
    body: dict[str, object] = active.to_body()
    assert_type(active.users, tuple[str, ...])
    assert_type(active.type, cf.ReportType)
    names: tuple[str, ...] = cf.RELATIVE_RANGES + cf.SAME_DAYS_RANGES + cf.REPORT_TYPES
    checked: cf.Compared = cf.validate_compared(active, "same-days-last-year")
    del body, names, checked
    return [active, created]


def tables(comparison: cf.FunnelComparison, users: list[cf.User]) -> str:
    """Tidy records, frames and stored comparisons."""
    records: list[dict[str, object]] = comparison.to_records(names=users)
    named: list[dict[str, object]] = comparison.base.to_records(names={"user_1": "Ann"})
    frame = comparison.to_pandas()  # pandas ships no types: Any here
    polars_frame = comparison.to_polars(names=users)
    height: int = polars_frame.height + comparison.base.to_polars().height
    stored: cf.FunnelComparison = cf.FunnelComparison.from_json(comparison.to_json())
    del records, named, frame, height, stored
    return comparison.to_csv(names=users)


def decode_and_merge() -> cf.FunnelComparison:
    """Decoding, encoding and merging stored reports."""
    base = cf.FunnelTotals.from_json(REPORT_BODY)
    other = cf.FunnelTotals.from_json(REPORT_BODY.decode())
    per_user = cf.FunnelTotals.from_csv("user_id\r\n")
    assert_type(base.aggregations, cf.FunnelMetrics | None)
    assert_type(base.data, tuple[cf.UserFunnelMetrics, ...])
    text: str = base.to_json() + per_user.to_csv()
    rate: float | None = base.aggregations.count_win_rate if base.aggregations else None
    merged = cf.merge_comparison(base, [("last-month", other)])
    period: cf.ComparedPeriod = merged.comparisons[0]
    row: cf.UserDeltas = period.users[0]
    change: float | None = row.count.change
    aggregations: cf.MetricDeltas | None = period.aggregations
    delta: cf.Delta = row.value_total_won
    del text, rate, change, aggregations, delta
    metric_names: tuple[str, ...] = cf.METRIC_NAMES
    del metric_names
    converter = cf.make_converter(strict=True)
    pipeline: cf.Pipeline = converter.structure({"id": "p", "name": "n"}, cf.Pipeline)
    status: tuple[cf.PipelineStatus, ...] = pipeline.statuses
    user = cf.User(id="user_1", first_name="Ada")
    name: str = user.name
    del status, name
    return merged


def handle_errors() -> str:
    """The exception tree, caught from the most specific class to the root."""
    info: cf.RateLimitInfo | None = cf.parse_ratelimit({"RateLimit": "remaining=1, reset=2"})
    wait: float | None = cf.parse_retry_after("3", now=0.0)
    del info, wait
    try:
        build_queries()
    except cf.BadRequestError as exc:
        return f"{exc.status} {exc.errors} {exc.field_errors}"
    except cf.InvalidQueryError as exc:
        field: str | None = exc.field
        rule: str | None = exc.rule
        return f"{field}: {rule}"
    except cf.RateLimitedError as exc:
        retry_after: float | None = exc.retry_after
        return str(retry_after)
    except (cf.AuthenticationError, cf.NotFoundError, cf.ServerError) as exc:
        return str(exc.status)
    except cf.APIError as exc:
        return exc.message
    except cf.RequestTimeoutError as exc:
        return str(exc)
    except (cf.TransportError, cf.ResponseDecodeError) as exc:
        return str(exc)
    except cf.CloseFunnelError as exc:
        return str(exc)
    credentials = cf.Credentials.api_key("api_x.y")
    return credentials.redact(repr(credentials)) + cf.__version__ + cf.DEFAULT_BASE_URL


async def use_client(queries: list[cf.FunnelQuery]) -> None:
    """The async client as DESIGN §2 shows it; defined for mypy only, never called."""
    async with cf.Client(
        api_key="api_xxx.yyy",
        base_url=cf.DEFAULT_BASE_URL,
        tz_offset=None,
        max_concurrency=8,
        retry=cf.RetryPolicy(),
    ) as client:
        q = cf.FunnelQuery(
            pipeline="pipe_x",
            type="active-stage-cohort",
            report_range="this-month",
            cohort_range=None,
            saved_search_id=None,
            users=(),
        )
        totals: cf.FunnelTotals = await client.funnel_totals(q)
        per_user: cf.FunnelTotals = await client.funnel_totals(q, format="csv")
        cmp: cf.FunnelComparison = await client.compare_totals(q, "last-month", "last-year")
        del totals, per_user, cmp
        async for item in client.compare_many(queries, "last-month"):
            query: cf.FunnelQuery = item.query
            result: cf.FunnelComparison | None = item.result
            error: cf.CloseFunnelError | None = item.error
            del query, result, error
        async for single in client.totals_many(queries):
            report: cf.FunnelTotals | None = single.result
            del report
        pipelines: list[cf.Pipeline] = await client.pipelines()
        del pipelines
    async with cf.Client(token="oauth-token") as bearer:
        await bearer.funnel_totals(q)


def use_sync_client(queries: list[cf.FunnelQuery]) -> None:
    """The blocking client: Client's arguments (checked as Client's), plain return values
    and iterators; defined for mypy only, never called."""
    with cf.SyncClient(api_key="api_xxx.yyy", tz_offset=None, max_concurrency=8) as client:
        q = queries[0]
        assert_type(client.funnel_totals(q), cf.FunnelTotals)
        assert_type(client.compare_totals(q, "last-month"), cf.FunnelComparison)
        assert_type(client.pipelines(), list[cf.Pipeline])
        assert_type(client.users(), list[cf.User])
        for item in client.totals_many(queries, on_progress=lambda done, total: None):
            assert_type(item, cf.BulkItem[cf.FunnelTotals])
        for compared in client.compare_many(queries, "last-year"):
            assert_type(compared.result, cf.FunnelComparison | None)
        assert_type(client.gate_snapshots(), dict[str, cf.GateSnapshot])
        assert_type(client.pool_snapshot(), cf.PoolSnapshot | None)
        assert_type(client.base_url, str)
        assert_type(client.retry, cf.RetryPolicy)
    # The constructor is typed as Client's: an unknown or mistyped option is an error.
    cf.SyncClient(api_key="k", bogus=1)  # type: ignore[call-arg]
    cf.SyncClient(api_key="k", timeout="3")  # type: ignore[arg-type]
    cf.SyncClient().close()
