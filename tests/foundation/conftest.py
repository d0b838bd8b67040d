"""Shared fixtures for the foundation tests: the reference page's request and response."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from closefunnel import DateRange, FunnelQuery

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

USER_1 = "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"
USER_2 = "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk"


@pytest.fixture(name="reference_query")
def fixture_reference_query() -> FunnelQuery:
    """The query that the reference page's request example describes."""
    return FunnelQuery(
        pipeline="pipe_4vukv2FUlFh9FDiVYAop1U",
        report_range=DateRange(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 8, tzinfo=UTC)),
        saved_search_id="save_ZVc26G33JTNiDNEFdZhBQAONg9cJHleAAHqBJakf239",
        users=(USER_1, USER_2),
    )


@pytest.fixture(name="reference_request")
def fixture_reference_request() -> dict[str, Any]:
    """The reference page's request body, parsed."""
    data: dict[str, Any] = orjson.loads((SAMPLES / "funnel_totals_request.json").read_bytes())
    return data


@pytest.fixture(name="reference_response_bytes")
def fixture_reference_response_bytes() -> bytes:
    """The reference page's JSON response, as bytes off the wire."""
    return (SAMPLES / "funnel_totals_response.json").read_bytes()


@pytest.fixture(name="reference_response")
def fixture_reference_response(reference_response_bytes: bytes) -> dict[str, Any]:
    """The reference page's JSON response, parsed."""
    data: dict[str, Any] = orjson.loads(reference_response_bytes)
    return data


@pytest.fixture(name="reference_csv")
def fixture_reference_csv() -> str:
    """The reference response's per-user rows as the CSV Close sends (CRLF line ends)."""
    with (SAMPLES / "funnel_totals_response.csv").open(newline="", encoding="utf-8") as f:
        return f.read()
