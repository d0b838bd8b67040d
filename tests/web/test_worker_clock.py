"""A ``serve --workers`` worker resolves relative ranges on the emulator's fixed ``--now``."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

from closefunnel.cli.serve import WORKER_ENV, worker_app
from closefunnel.emulator import Emulator
from tests.web.conftest import NOW


async def test_a_worker_dates_reports_on_the_emulators_clock(
    emu: Emulator,
    serve_app: Callable[[Any], AbstractAsyncContextManager[str]],
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulator answers "this-month" for --now's month, and the worker says so too."""
    spec = {
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        "tz_offset": None,
        "max_concurrency": 4,
        "redis": None,
        "cache_ttl": 0,
        "token": None,
        "host": "127.0.0.1",
        "now": NOW.isoformat(),
    }
    monkeypatch.setenv(WORKER_ENV, json.dumps(spec))
    async with serve_app(worker_app()) as url:
        async with http.get(f"{url}/pipelines") as response:
            pipeline = (await response.json())[0]["id"]
        query = {"range": "this-month", "compare": "last-month"}
        async with http.get(f"{url}/funnel/{pipeline}", params=query) as response:
            assert response.status == 200
            body = await response.json()
    assert body["base_range"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}
    assert body["comparisons"][0]["compared_range"]["start"] == "2026-10-01T00:00:00Z"
