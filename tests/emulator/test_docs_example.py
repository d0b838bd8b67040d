"""The docs-example dataset answers the request on Close's docs page with exactly its response."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from closeio_api import API, ValidationError
from emulator_helpers import DOCS_REQUEST, DOCS_RESPONSE_TEXT, TOTALS, post_totals

from closefunnel._models import CSV_COLUMNS
from closefunnel.emulator import Emulator


def _pairs(text: str | bytes) -> object:
    """Parse JSON keeping key order and number types visible."""
    return json.loads(text, object_pairs_hook=list)


async def test_docs_request_gets_docs_response(
    session: aiohttp.ClientSession, docs_emu: Emulator
) -> None:
    """The reference request returns the reference response: same data, key order and ints."""
    status, headers, body = await post_totals(session, docs_emu, DOCS_REQUEST)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == json.loads(DOCS_RESPONSE_TEXT)
    assert _pairs(body) == _pairs(DOCS_RESPONSE_TEXT)
    parsed = json.loads(body)
    assert type(parsed["data"][0]["count_win_rate"]) is int
    assert type(parsed["aggregations"]["count_win_rate"]) is float


async def test_docs_request_as_csv(session: aiohttp.ClientSession, docs_emu: Emulator) -> None:
    """Accept: text/csv returns the per-user rows of the reference response as CSV."""
    status, headers, body = await post_totals(
        session, docs_emu, DOCS_REQUEST, headers={"Accept": "text/csv"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0].split(",") == list(CSV_COLUMNS)
    assert lines[1:] == [
        "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA,3600,1000000,1,1,1,1,1000000,1000000,1000000,1",
        "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk,,0,1,1,0,0,0,1000000,0,0",
    ]


async def test_docs_example_is_computed_not_canned(
    session: aiohttp.ClientSession, docs_emu: Emulator
) -> None:
    """Dropping the saved search or the user filter changes the numbers (real data behind it)."""
    body = {k: v for k, v in DOCS_REQUEST.items() if k != "query"}
    status, _, raw = await post_totals(session, docs_emu, body)
    assert status == 200
    assert json.loads(raw)["aggregations"]["count"] == 3  # plus the open one outside the search
    body = {k: v for k, v in DOCS_REQUEST.items() if k != "users"}
    status, _, raw = await post_totals(session, docs_emu, body)
    assert json.loads(raw)["aggregations"]["count"] == 3  # plus the third user's win
    group = {**DOCS_REQUEST, "users": ["group_docsFounders"]}
    status, _, raw = await post_totals(session, docs_emu, group)
    assert json.loads(raw) == json.loads(DOCS_RESPONSE_TEXT)


async def test_closeio_client_against_emulator(docs_emu: Emulator) -> None:
    """Close's own Python client gets the docs response and a ValidationError for a bad body."""
    api = API(docs_emu.base_url, api_key=docs_emu.api_key, tz_offset="0", max_retries=1)

    def run() -> tuple[object, ValidationError]:
        try:
            report = api.post(TOTALS.rstrip("/"), DOCS_REQUEST)
            try:
                api.post(TOTALS.rstrip("/"), {**DOCS_REQUEST, "type": "funnel"})
            except ValidationError as exc:
                return report, exc
            raise AssertionError("no ValidationError")
        finally:
            api.session.close()

    report, error = await asyncio.wait_for(asyncio.to_thread(run), timeout=20)
    assert report == json.loads(DOCS_RESPONSE_TEXT)
    assert "type" in error.field_errors
    assert error.errors == []


@pytest.mark.parametrize("accept", ["application/json", "*/*", ""])
async def test_json_is_the_default(
    session: aiohttp.ClientSession, docs_emu: Emulator, accept: str
) -> None:
    """Any Accept without text/csv gets JSON."""
    status, _, body = await post_totals(session, docs_emu, DOCS_REQUEST, headers={"Accept": accept})
    assert status == 200
    assert json.loads(body) == json.loads(DOCS_RESPONSE_TEXT)
