"""
Tidy records, DataFrames, and storing comparisons, against the emulator.

Every expectation is read from the typed values the client returned (the Delta of each
metric, the report's rows, the resolved ranges), never written down by hand, so a record
that drifts from its report fails here.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

import closefunnel as cf
from closefunnel._display import range_text
from closefunnel.emulator import Emulator
from tests.client.conftest import EmulatorFactory

COMPARISON_KEYS = [
    "period",
    "base_start",
    "base_end",
    "compared_start",
    "compared_end",
    "user_id",
    "metric",
    "base",
    "compared",
    "delta",
    "change",
]
TOTALS_KEYS = ["base_start", "base_end", "user_id", "metric", "base"]
#: The metrics typed int (counts and cents).
INT_METRICS = {
    field.name for field in attrs.fields(attrs.resolve_types(cf.FunnelMetrics)) if field.type is int
}
LAST_YEAR_NOV = cf.DateRange(datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))


@pytest.fixture(name="client")
async def _client(demo_emulator: Emulator) -> AsyncIterator[cf.Client]:
    emu = demo_emulator
    async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now) as client:
        yield client


async def _comparison(client: cf.Client, pipeline: int = 0) -> cf.FunnelComparison:
    pipe = (await client.pipelines())[pipeline].id
    query = cf.FunnelQuery(pipeline=pipe, report_range="this-month")
    return await client.compare_totals(query, "last-month", LAST_YEAR_NOV)


def _expected_rows(comparison: cf.FunnelComparison) -> list[tuple[Any, ...]]:
    """(period index, user_id, metric, Delta) in the documented order, from the typed values."""
    rows = []
    for index, period in enumerate(comparison.comparisons):
        assert period.aggregations is not None
        groups: list[tuple[str | None, Any]] = [(None, period.aggregations)]
        groups += [(row.user_id, row) for row in period.users]
        for user_id, deltas in groups:
            rows += [(index, user_id, m, getattr(deltas, m)) for m in cf.METRIC_NAMES]
    return rows


async def test_comparison_records_are_the_deltas_in_order(client: cf.Client) -> None:
    comparison = await _comparison(client)
    records = comparison.to_records()
    expected = _expected_rows(comparison)
    assert len(records) == len(expected) > 2 * 10 * 3  # aggregate + users, two periods
    assert all(list(record) == COMPARISON_KEYS for record in records)
    assert comparison.comparisons[0].compared == "last-month"
    assert isinstance(comparison.comparisons[1].compared, cf.DateRange)
    assert comparison.base_range is not None
    for record, (index, user_id, metric, d) in zip(records, expected, strict=True):
        period = comparison.comparisons[index]
        assert period.compared_range is not None
        assert record["period"] == period.compared  # as given: a name or the DateRange
        assert (record["base_start"], record["base_end"]) == (
            comparison.base_range.start,
            comparison.base_range.end,
        )
        assert (record["compared_start"], record["compared_end"]) == (
            period.compared_range.start,
            period.compared_range.end,
        )
        assert record["user_id"] == user_id
        assert record["metric"] == metric
        assert (record["base"], record["compared"], record["delta"], record["change"]) == (
            d.base,
            d.compared,
            d.delta,
            d.change,
        )
        if metric in INT_METRICS and d.delta is not None:  # ints stay ints, change a float
            assert type(record["base"]) is type(record["delta"]) is int
            assert record["change"] is None or type(record["change"]) is float
    # The ranges as resolved: this month, last month, the custom range itself.
    first, last = records[0], records[-1]
    assert first["base_start"] == datetime(2026, 11, 1, tzinfo=UTC)
    assert first["base_end"] == datetime(2026, 12, 1, tzinfo=UTC)
    assert first["compared_start"] == datetime(2026, 10, 1, tzinfo=UTC)
    assert (last["compared_start"], last["compared_end"]) == (
        LAST_YEAR_NOV.start,
        LAST_YEAR_NOV.end,
    )
    assert all(r["base_start"].tzinfo is not None for r in records)


async def test_names_add_user_name(client: cf.Client) -> None:
    comparison = await _comparison(client)
    users = await client.users()
    by_id = {user.id: user.name for user in users}
    from_users = comparison.to_records(names=users)
    some = dict(list(by_id.items())[:2])
    from_mapping = comparison.to_records(names=some)
    plain = comparison.to_records()
    for named, partial, record in zip(from_users, from_mapping, plain, strict=True):
        assert list(named) == [*COMPARISON_KEYS[:6], "user_name", *COMPARISON_KEYS[6:]]
        assert {k: v for k, v in named.items() if k != "user_name"} == record
        user_id = record["user_id"]
        assert named["user_name"] == (None if user_id is None else by_id[user_id])
        assert partial["user_name"] == (some.get(user_id) if user_id is not None else None)
    assert any(r["user_name"] is None and r["user_id"] is not None for r in from_mapping)

    totals = comparison.base
    rows = totals.to_records(names=users)
    assert all(list(r) == ["base_start", "base_end", "user_id", "user_name", "metric", "base"]
               for r in rows)  # fmt: skip
    assert {r["user_name"] for r in rows if r["user_id"]} <= set(by_id.values())

    for bad in ("user_1", 42, {"user_1": 3}, [object()], {1: "x"}):
        with pytest.raises(cf.InvalidQueryError) as info:
            comparison.to_records(names=bad)  # type: ignore[arg-type]
        assert info.value.field == "names"
        with pytest.raises(cf.InvalidQueryError):
            totals.to_records(names=bad)  # type: ignore[arg-type]


async def test_totals_records(client: cf.Client) -> None:
    pipe = (await client.pipelines())[1].id
    query = cf.FunnelQuery(pipeline=pipe, report_range="last-quarter")
    totals = await client.funnel_totals(query)
    records = totals.to_records()
    assert totals.aggregations is not None
    assert totals.range is not None
    assert len(records) == 10 * (1 + len(totals.data))
    assert all(list(r) == TOTALS_KEYS for r in records)
    assert [r["metric"] for r in records[:10]] == list(cf.METRIC_NAMES)
    assert [r["base"] for r in records[:10]] == [
        getattr(totals.aggregations, m) for m in cf.METRIC_NAMES
    ]
    assert records[0]["base_start"] == datetime(2026, 7, 1, tzinfo=UTC)
    assert records[0]["base_end"] == datetime(2026, 10, 1, tzinfo=UTC)
    for index, row in enumerate(totals.data):
        chunk = records[10 * (index + 1) : 10 * (index + 2)]
        assert {r["user_id"] for r in chunk} == {row.user_id}
        assert [r["base"] for r in chunk] == [getattr(row, m) for m in cf.METRIC_NAMES]

    # A CSV report has no aggregate: only user rows. A stored body without a range: None.
    per_user = await client.funnel_totals(query, format="csv")
    assert all(r["user_id"] is not None for r in per_user.to_records())
    assert len(per_user.to_records()) == 10 * len(per_user.data)
    unknown = cf.FunnelTotals.from_json(totals.to_json().replace('"range"', '"ignored"'))
    assert unknown.range is None
    assert {(r["base_start"], r["base_end"]) for r in unknown.to_records()} == {(None, None)}


async def test_comparison_of_csv_reports_has_no_aggregate_rows(client: cf.Client) -> None:
    pipe = (await client.pipelines())[0].id
    query = cf.FunnelQuery(pipeline=pipe, report_range="this-month")
    comparison = await client.compare_totals(query, "last-month", format="csv")
    records = comparison.to_records()
    assert records
    assert all(r["user_id"] is not None for r in records)
    assert len(records) == 10 * len(comparison.comparisons[0].users)


def _frame_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DataFrame rows as plain Python: NA/NaT as None, timestamps as datetimes."""
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        for key, value in row.items():
            if value is None or (not isinstance(value, str) and _is_na(value)):
                item[key] = None
            elif hasattr(value, "to_pydatetime"):
                item[key] = value.to_pydatetime()
            else:
                item[key] = value
        out.append(item)
    return out


def _is_na(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def _as_floats(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*records* as a frame holds them: values as floats, a DateRange period as its text."""
    numbers = ("base", "compared", "delta", "change")
    return [
        {
            k: float(v) if k in numbers and v is not None else range_text(v) if k == "period" else v
            for k, v in r.items()
        }
        for r in records
    ]


async def test_pandas_frames(client: cf.Client) -> None:
    import pandas as pd

    comparison = await _comparison(client)
    users = await client.users()
    frame = comparison.to_pandas(names=users)
    records = comparison.to_records(names=users)
    assert list(frame.columns) == list(records[0])
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    for name in ("base_start", "base_end", "compared_start", "compared_end"):
        assert dtypes[name] == "datetime64[us, UTC]"
    for name in ("base", "compared", "delta", "change"):
        assert dtypes[name] == "Float64"
    for name in ("period", "user_id", "user_name"):
        assert dtypes[name] == "string"
    assert isinstance(frame["metric"].dtype, pd.CategoricalDtype)
    assert list(frame["metric"].cat.categories) == list(cf.METRIC_NAMES)
    # Same rows, same order, same values (ints exactly: every one is below 2**53).
    assert _frame_records(frame.to_dict("records")) == _as_floats(records)
    # The aggregate rows have no user; a missing value is NA, not 0.
    assert frame["user_id"].isna().sum() == 10 * len(comparison.comparisons)

    totals = comparison.base.to_pandas()
    assert list(totals.columns) == TOTALS_KEYS
    assert str(totals["base_start"].dtype) == "datetime64[us, UTC]"
    assert _frame_records(totals.to_dict("records")) == _as_floats(comparison.base.to_records())
    # Frames of a report and of a comparison line up on their shared columns.
    assert set(TOTALS_KEYS) <= set(frame.columns)
    assert pd.concat([totals, frame[TOTALS_KEYS]]).dtypes.equals(totals.dtypes)


async def test_polars_frames(client: cf.Client) -> None:
    import polars as pl

    comparison = await _comparison(client)
    frame = comparison.to_polars(names={"nobody": "No One"})
    records = comparison.to_records(names={"nobody": "No One"})
    assert frame.columns == list(records[0])
    schema = dict(frame.schema)
    for name in ("base_start", "base_end", "compared_start", "compared_end"):
        assert schema[name] == pl.Datetime("us", "UTC")
    for name in ("base", "compared", "delta", "change"):
        assert schema[name] == pl.Float64
    for name in ("period", "user_id", "user_name"):
        assert schema[name] == pl.String
    assert schema["metric"] == pl.Enum(list(cf.METRIC_NAMES))
    assert frame.to_dicts() == _as_floats(records)

    totals = comparison.base.to_polars()
    assert totals.columns == TOTALS_KEYS
    assert totals.to_dicts() == _as_floats(comparison.base.to_records())
    assert pl.concat([totals, frame.select(TOTALS_KEYS)]).height == totals.height + frame.height


def test_frames_of_reports_without_ranges_or_rows() -> None:
    """No range: null datetimes; no rows: an empty frame that keeps its dtypes."""
    import pandas as pd
    import polars as pl

    empty = cf.FunnelTotals(aggregations=None, data=())
    frame = empty.to_pandas()
    assert (len(frame), list(frame.columns)) == (0, TOTALS_KEYS)
    assert str(frame["base_start"].dtype) == "datetime64[us, UTC]"
    assert empty.to_polars().schema["base"] == pl.Float64
    row = cf.UserFunnelMetrics(
        user_id="u",
        average_time_to_win=None,
        average_value_annualized_per_won_opportunity=0,
        count=2**53,
        count_total_complete=0,
        count_total_won=0,
        count_win_rate=0.0,
        sales_velocity=0.0,
        value_total_complete=0,
        value_total_won=0,
        value_win_rate=0.0,
    )
    one = cf.FunnelTotals(aggregations=None, data=(row,))
    frame = one.to_pandas()
    assert frame["base_start"].isna().all()
    assert frame["base"].isna().sum() == 1  # average_time_to_win: NA, not NaN or 0
    assert frame.loc[frame["metric"] == "count", "base"].iloc[0] == 2**53
    assert pd.isna(frame.loc[frame["metric"] == "average_time_to_win", "base"].iloc[0])
    polars = one.to_polars()
    assert polars["base_start"].null_count() == 10
    # A range outside what nanoseconds hold (years 1 to 9999) is kept to the microsecond.
    wide = cf.DateRange(datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, tzinfo=UTC))
    far = cf.FunnelTotals(aggregations=None, data=(row,), range=wide)
    start = far.to_pandas()["base_start"].iloc[0]
    assert (start.year, far.to_polars()["base_end"][0]) == (1, wide.end)
    # Other zones are shown in UTC, as the same instants.
    east = timezone(timedelta(hours=5, minutes=30))
    local = cf.DateRange(datetime(2026, 11, 1, tzinfo=east), datetime(2026, 12, 1, tzinfo=east))
    shifted = cf.FunnelTotals(aggregations=None, data=(row,), range=local)
    assert shifted.to_pandas()["base_start"].iloc[0].to_pydatetime() == local.start
    assert shifted.to_polars()["base_start"][0] == local.start


@pytest.mark.slow  # a fresh interpreter each: about a second
@pytest.mark.parametrize(
    ("library", "method"),
    [("pandas", "to_pandas"), ("polars", "to_polars")],
)
def test_missing_library_names_the_extra(library: str, method: str) -> None:
    """Without the library (its import blocked in a fresh interpreter): an ImportError
    naming the extra, for reports and comparisons alike."""
    code = f"""
import sys
sys.modules[{library!r}] = None
import closefunnel as cf
totals = cf.FunnelTotals(aggregations=None, data=())
comparison = cf.merge_comparison(totals, [("last-month", totals)])
for value in (totals, comparison):
    try:
        value.{method}()
    except ImportError as exc:
        print(type(value).__name__, exc)
    else:
        raise SystemExit("no error")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line, kind in zip(lines, ("FunnelTotals", "FunnelComparison"), strict=True):
        assert line.startswith(f"{kind} {kind}.{method}() needs {library}")
        assert f"pip install 'closefunnel[{library}]'" in line


async def test_json_round_trip(client: cf.Client, demo_emulator: Emulator) -> None:
    comparison = await _comparison(client)
    text = comparison.to_json()
    back = cf.FunnelComparison.from_json(text)
    assert back == comparison
    assert back.base_range == comparison.base_range
    assert [p.compared for p in back.comparisons] == ["last-month", LAST_YEAR_NOV]
    assert [p.compared_range for p in back.comparisons] == [
        p.compared_range for p in comparison.comparisons
    ]
    assert cf.FunnelComparison.from_json(text.encode()) == comparison
    body = json.loads(text)
    assert body["comparisons"][1]["compared"] == LAST_YEAR_NOV.to_body()
    assert body["base"]["range"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}

    # Same-days (a DateRange base, in a zone other than UTC) and a CSV report.
    zone = timezone(timedelta(hours=-5))
    async with cf.Client(
        api_key=demo_emulator.api_key,
        base_url=demo_emulator.base_url,
        clock=demo_emulator.now,
        tz_offset=-5,
    ) as local:
        pipe = (await local.pipelines())[0].id
        days = cf.DateRange(datetime(2026, 11, 1, tzinfo=zone), datetime(2026, 11, 19, tzinfo=zone))
        query = cf.FunnelQuery(pipeline=pipe, report_range=days)
        same = await local.compare_totals(query, "same-days-last-month", "same-days-last-year")
        per_user = await local.compare_totals(query, "same-days-last-week", format="csv")
    back = cf.FunnelComparison.from_json(same.to_json())
    assert back == same
    ranges = [p.compared_range for p in back.comparisons]
    assert ranges[0] == cf.DateRange(
        datetime(2026, 10, 1, tzinfo=zone), datetime(2026, 10, 19, tzinfo=zone)
    )
    assert ranges[1] is not None
    assert ranges[1].start == datetime(2025, 11, 1, tzinfo=zone)
    assert ranges[1].start.utcoffset() == timedelta(hours=-5)
    assert cf.FunnelComparison.from_json(per_user.to_json()) == per_user
    assert per_user.comparisons[0].aggregations is None


def test_from_json_recomputes_the_deltas() -> None:
    """The deltas are derived: an edited one does not survive the trip."""
    totals = cf.FunnelTotals.from_json(_report("u1", 10))
    compared = cf.FunnelTotals.from_json(_report("u1", 4))
    comparison = cf.merge_comparison(totals, [("last-month", compared)])
    body = json.loads(comparison.to_json())
    body["comparisons"][0]["users"][0]["count"]["delta"] = 999
    back = cf.FunnelComparison.from_json(json.dumps(body))
    assert back == comparison
    assert back.comparisons[0].users[0].count.delta == 6


def _report(user_id: str, count: int, *, twice: bool = False) -> str:
    row = {
        "user_id": user_id,
        "average_time_to_win": None,
        "average_value_annualized_per_won_opportunity": 0,
        "count": count,
        "count_total_complete": 0,
        "count_total_won": 0,
        "count_win_rate": 0,
        "sales_velocity": 0,
        "value_total_complete": 0,
        "value_total_won": 0,
        "value_win_rate": 0,
    }
    return json.dumps({"aggregations": None, "data": [row, row] if twice else [row]})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "not valid JSON"),
        ("[]", "StoredComparison"),
        ('{"comparisons": []}', "base"),
        (f'{{"base": {_report("u", 1)}, "comparisons": {{}}}}', "comparisons"),
        (
            f'{{"base": {_report("u", 1)}, "comparisons": '
            f'[{{"compared": "next-month", "totals": {_report("u", 1)}}}]}}',
            "'next-month' is not a range Close knows",
        ),
        (
            f'{{"base": {_report("u", 1)}, "comparisons": [{{"compared": '
            '{"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, '
            f'"totals": {_report("u", 1)}}}]}}',
            "StoredComparison.comparisons[0].compared",
        ),
        (
            f'{{"base": {_report("u", 1)}, "comparisons": [{{"compared": '
            '{"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00"}, '
            f'"totals": {_report("u", 1)}}}]}}',
            "StoredComparison.comparisons[0].compared",
        ),
        (
            f'{{"base": {_report("u", 1)}, "comparisons": '
            f'[{{"compared": "last-month", "totals": {_report("u", 1, twice=True)}}}]}}',
            "more than once",
        ),
        (
            f'{{"base": {_report("u", 1, twice=True)}, "comparisons": []}}',
            "more than once",
        ),
        (
            f'{{"base": {_report("u", 1)}, "comparisons": [{{"compared": 7, "totals": '
            f"{_report('u', 1)}}}]}}",
            "compared",
        ),
    ],
)
def test_from_json_refuses_bad_input(body: str, says: str) -> None:
    with pytest.raises(cf.ResponseDecodeError) as info:
        cf.FunnelComparison.from_json(body)
    assert says in str(info.value)


async def test_csv_is_the_tidy_table(client: cf.Client) -> None:
    comparison = await _comparison(client)
    users = await client.users()
    text = comparison.to_csv(names=users)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    records = comparison.to_records(names=users)
    assert list(rows[0]) == list(records[0])
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        for key, value in record.items():
            cell = row[key]
            if value is None:
                assert cell == ""
            elif isinstance(value, datetime):
                assert datetime.fromisoformat(cell) == value
            elif isinstance(value, float):
                assert float(cell) == value
            elif isinstance(value, int):
                assert int(cell) == value
            elif isinstance(value, cf.DateRange):
                assert cell == range_text(value)  # START..END, as the command line takes it
            else:
                assert cell == value
    assert text.endswith("\r\n")
    assert comparison.to_csv().splitlines()[0] == ",".join(COMPARISON_KEYS)


def test_csv_neutralizes_formula_text() -> None:
    """User ids and names from strangers: formula-looking text gets a leading quote,
    control characters are replaced; numbers, negative ones included, stay numbers."""
    hostile = '=HYPERLINK("http://x")'
    base = cf.FunnelTotals.from_json(_report(hostile, 1))
    compared = cf.FunnelTotals.from_json(_report(hostile, 5))
    comparison = cf.merge_comparison(base, [("last-month", compared)])
    text = comparison.to_csv(names={hostile: "@SUM(A1)\x1b[31m"})
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    count = next(r for r in rows if r["metric"] == "count")
    assert count["user_id"] == "'" + hostile
    assert count["user_name"] == "'@SUM(A1)\ufffd[31m"
    assert (count["delta"], count["change"]) == ("-4", "-0.8")
    # The records and the JSON keep the exact text.
    assert comparison.to_records()[0]["user_id"] == hostile
    assert cf.FunnelComparison.from_json(comparison.to_json()) == comparison


async def test_cli_json_is_to_json(start_emulator: EmulatorFactory) -> None:
    """What `--format json` prints for a comparison is what from_json reads."""
    from closefunnel._convert import CONVERTER

    async with (
        start_emulator() as emu,
        cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now) as client,
    ):
        comparison = await _comparison(client, 2)
    assert json.loads(comparison.to_json()) == CONVERTER.unstructure(comparison)
