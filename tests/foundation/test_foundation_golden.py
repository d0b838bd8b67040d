"""Golden tests: the reference page's request and response, key for key."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from closefunnel import FunnelMetrics, FunnelQuery, FunnelTotals, UserFunnelMetrics
from closefunnel._models import decode_totals_csv, decode_totals_json

USER_1 = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"
USER_2 = "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk"

EXPECTED = FunnelTotals(
    aggregations=FunnelMetrics(
        average_time_to_win=3600,
        average_value_annualized_per_won_opportunity=1000000,
        count=2,
        count_total_complete=2,
        count_total_won=1,
        count_win_rate=0.5,
        sales_velocity=1000000,
        value_total_complete=2000000,
        value_total_won=1000000,
        value_win_rate=0.5,
    ),
    data=(
        UserFunnelMetrics(
            user_id=USER_1,
            average_time_to_win=3600,
            average_value_annualized_per_won_opportunity=1000000,
            count=1,
            count_total_complete=1,
            count_total_won=1,
            count_win_rate=1,
            sales_velocity=1000000,
            value_total_complete=1000000,
            value_total_won=1000000,
            value_win_rate=1,
        ),
        UserFunnelMetrics(
            user_id=USER_2,
            average_time_to_win=None,
            average_value_annualized_per_won_opportunity=0,
            count=1,
            count_total_complete=1,
            count_total_won=0,
            count_win_rate=0,
            sales_velocity=0,
            value_total_complete=1000000,
            value_total_won=0,
            value_win_rate=0,
        ),
    ),
)


def _types(value: Any) -> Any:
    """The JSON value with every number replaced by its Python type, to compare int vs float."""
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value)


def test_request_body_matches_reference(
    reference_query: FunnelQuery, reference_request: dict[str, Any]
) -> None:
    """The reference query's to_body() is the reference page's request, key for key."""
    body = reference_query.to_body()
    assert body == reference_request
    assert body["type"] == "active-stage-cohort"
    assert body["report_datetime_range"] == {
        "start": "2019-01-01T00:00:00Z",
        "end": "2019-01-08T00:00:00Z",
    }


def test_request_body_is_json_serialisable(
    reference_query: FunnelQuery, reference_request: dict[str, Any]
) -> None:
    """The body survives a JSON round trip unchanged (no tuples, datetimes or attrs left)."""
    assert orjson.loads(orjson.dumps(reference_query.to_body())) == reference_request


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_response_decodes_from_json(reference_response_bytes: bytes, as_text: bool) -> None:
    """FunnelTotals.from_json decodes the reference response from bytes and from str."""
    body: bytes | str = reference_response_bytes.decode() if as_text else reference_response_bytes
    totals = FunnelTotals.from_json(body)
    assert totals == EXPECTED
    assert totals.data[1].average_time_to_win is None


def test_response_decodes_strictly(reference_response_bytes: bytes) -> None:
    """The reference response has no key the models do not know: strict decoding accepts it."""
    assert decode_totals_json(reference_response_bytes, strict=True) == EXPECTED


def test_response_to_json_round_trip(
    reference_response_bytes: bytes, reference_response: dict[str, Any]
) -> None:
    """to_json gives back the reference JSON, with ints still ints and floats still floats."""
    encoded = orjson.loads(FunnelTotals.from_json(reference_response_bytes).to_json())
    assert encoded == reference_response
    assert _types(encoded) == _types(reference_response)


def test_response_keeps_number_types(reference_response_bytes: bytes) -> None:
    """Decoded numbers keep the JSON's type: 1 stays int, 0.5 stays float."""
    totals = FunnelTotals.from_json(reference_response_bytes)
    assert type(totals.data[0].count_win_rate) is int
    assert type(totals.aggregations.count_win_rate) is float  # type: ignore[union-attr]
    assert type(totals.aggregations.count) is int  # type: ignore[union-attr]


def test_csv_decodes_to_reference_rows(reference_csv: str) -> None:
    """The CSV of the same rows decodes to the reference data with no aggregations."""
    totals = FunnelTotals.from_csv(reference_csv)
    assert totals.aggregations is None
    assert totals.data == EXPECTED.data


def test_csv_decodes_from_bytes_with_bom(reference_csv: str) -> None:
    """A UTF-8 CSV with a byte-order mark decodes the same as the text."""
    assert FunnelTotals.from_csv(b"\xef\xbb\xbf" + reference_csv.encode()).data == EXPECTED.data


def test_csv_round_trip(reference_csv: str) -> None:
    """to_csv writes back exactly the CSV it was decoded from."""
    assert FunnelTotals.from_csv(reference_csv).to_csv() == reference_csv


def test_json_report_to_csv_and_back(reference_response_bytes: bytes) -> None:
    """A JSON report's rows survive to_csv then from_csv (strictly) unchanged."""
    totals = FunnelTotals.from_json(reference_response_bytes)
    again = decode_totals_csv(totals.to_csv(), strict=True)
    assert again.data == totals.data
    assert again.aggregations is None


def test_csv_report_to_json_has_null_aggregations(reference_csv: str) -> None:
    """A CSV report encodes to JSON with aggregations null and the same rows."""
    encoded = orjson.loads(FunnelTotals.from_csv(reference_csv).to_json())
    assert encoded["aggregations"] is None
    assert [row["user_id"] for row in encoded["data"]] == [USER_1, USER_2]
