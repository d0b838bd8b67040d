"""Shared constants and helpers of the emulator tests (imported by conftest and the tests)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import aiohttp
import orjson

from closefunnel.emulator import Emulator

NOW = datetime(2025, 6, 18, 15, 30, tzinfo=UTC)  # a Wednesday, mid-quarter
TOTALS = "report/funnel/opportunity/totals/"

DOCS_REQUEST = {
    "pipeline": "pipe_4vukv2FUlFh9FDiVYAop1U",
    "query": {
        "saved_search_id": "save_ZVc26G33JTNiDNEFdZhBQAONg9cJHleAAHqBJakf239",
        "type": "saved_search",
    },
    "report_datetime_range": {"end": "2019-01-08T00:00:00Z", "start": "2019-01-01T00:00:00Z"},
    "type": "active-stage-cohort",
    "users": [
        "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA",
        "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk",
    ],
}

DOCS_RESPONSE_TEXT = """{
 "aggregations": {
 "average_time_to_win": 3600,
 "average_value_annualized_per_won_opportunity": 1000000,
 "count": 2,
 "count_total_complete": 2,
 "count_total_won": 1,
 "count_win_rate": 0.5,
 "sales_velocity": 1000000,
 "value_total_complete": 2000000,
 "value_total_won": 1000000,
 "value_win_rate": 0.5
 },
 "data": [
 {
 "average_time_to_win": 3600,
 "average_value_annualized_per_won_opportunity": 1000000,
 "count": 1,
 "count_total_complete": 1,
 "count_total_won": 1,
 "count_win_rate": 1,
 "sales_velocity": 1000000,
 "user_id": "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA",
 "value_total_complete": 1000000,
 "value_total_won": 1000000,
 "value_win_rate": 1
 },
 {
 "average_time_to_win": null,
 "average_value_annualized_per_won_opportunity": 0,
 "count": 1,
 "count_total_complete": 1,
 "count_total_won": 0,
 "count_win_rate": 0,
 "sales_velocity": 0,
 "user_id": "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk",
 "value_total_complete": 1000000,
 "value_total_won": 0,
 "value_win_rate": 0
 }
 ]
}"""


def basic(key: str, password: str = "") -> dict[str, str]:
    """The Authorization header Close expects for *key* (empty password)."""
    token = base64.b64encode(f"{key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def post_totals(
    session: aiohttp.ClientSession,
    emu: Emulator,
    body: object,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST *body* (or *raw* bytes) to the totals endpoint with the emulator's key."""
    all_headers = {**basic(emu.api_key), "Content-Type": "application/json", **(headers or {})}
    data = raw if raw is not None else orjson.dumps(body)
    async with session.post(emu.base_url + TOTALS, data=data, headers=all_headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()
