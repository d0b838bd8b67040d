"""closefunnel.fastapi served by uvicorn on loopback, driven by a real HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from fastapi import Depends, FastAPI

import closefunnel as cf
from closefunnel._convert import CONVERTER
from closefunnel.emulator import Emulator
from closefunnel.fastapi import client_lifespan, get_client, router

#: The ``serve`` fixture: ``async with serve(cache_ttl=..., **client_options) as url``.
ServeApp = Callable[..., AbstractAsyncContextManager[str]]
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)

TOTALS = "/api/v1/report/funnel/opportunity/totals/"


def _totals_posts(emu: Emulator) -> int:
    return sum(1 for entry in emu.log if entry.path == TOTALS)


async def _get(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any, Any]:
    async with http.get(url, params=params) as response:
        return response.status, await response.json(), response.headers


async def _library(emu: Emulator, query: cf.FunnelQuery, *compared: cf.Compared) -> Any:
    async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0) as client:
        if compared:
            comparison = await client.compare_totals(query, *compared)
            expected = CONVERTER.unstructure(comparison)
            # The web JSON also names each period's resolved range next to what was asked.
            assert comparison.base_range is not None
            expected["base_range"] = CONVERTER.unstructure(comparison.base_range)
            for period, entry in zip(comparison.comparisons, expected["comparisons"], strict=True):
                assert period.compared_range is not None
                entry["compared_range"] = CONVERTER.unstructure(period.compared_range)
            return expected
        return CONVERTER.unstructure(await client.funnel_totals(query))


async def test_routes_return_the_library_results(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """/pipelines and /funnel/{id} (totals, comparison, created-cohort, date ranges)."""
    async with serve() as url:
        status, pipelines, _ = await _get(http, f"{url}/pipelines")
        assert status == 200
        assert [p["id"] for p in pipelines] == [p.id for p in emu.dataset.pipelines]
        pipeline = pipelines[0]["id"]

        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}")
        assert status == 200
        assert body == await _library(
            emu, cf.FunnelQuery(pipeline=pipeline, report_range="this-month")
        )

        params = [("range", "this-quarter"), ("compare", "last-quarter"), ("compare", "last-year")]
        async with http.get(f"{url}/funnel/{pipeline}", params=params) as response:
            assert response.status == 200
            body = await response.json()
        query = cf.FunnelQuery(pipeline=pipeline, report_range="this-quarter")
        assert body == await _library(emu, query, "last-quarter", "last-year")
        assert [c["compared"] for c in body["comparisons"]] == ["last-quarter", "last-year"]

        base = cf.DateRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC))
        users = [u.id for u in emu.dataset.users[:2]]
        params = [
            ("type", "created-cohort"),
            ("cohort_range", "2026-11-01T00:00:00Z..2026-11-19T00:00:00Z"),
            ("compare", "same-days-last-year"),
            ("users", users[0]),
            ("users", users[1]),
        ]
        async with http.get(f"{url}/funnel/{pipeline}", params=params) as response:
            assert response.status == 200
            body = await response.json()
        query = cf.FunnelQuery(
            pipeline=pipeline, type="created-cohort", cohort_range=base, users=users
        )
        assert body == await _library(emu, query, "same-days-last-year")


async def test_errors_map_to_http(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """Invalid query 422 naming the value, unknown pipeline 404, upstream failure 502."""
    retry = cf.RetryPolicy(attempts=2, backoff_initial=0, backoff_max=0)
    async with serve(retry=retry) as url:
        pipeline = emu.dataset.pipelines[0].id
        cases = [
            ({"range": "next-month"}, "next-month"),
            ({"compare": "same-days-last-year"}, "same-days-last-year"),
            ({"range": "2026-11-01..2026-11-19"}, "time zone"),
            ({"type": "created-cohort"}, "cohort_range"),
        ]
        for params, named in cases:
            status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", **params)
            assert status == 422, params
            assert named in body["detail"]
        before = _totals_posts(emu)
        assert before == 0  # every invalid query was refused before anything was sent

        status, body, _ = await _get(http, f"{url}/funnel/pipe_doesnotexist")
        assert status == 404
        assert body["error"] == "NotFoundError"

        emu.fail_next(2, "500", path=TOTALS)
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}")
        assert status == 502
        assert body["error"] == "ServerError"
        assert emu.api_key not in orjson.dumps(body).decode()


async def test_unreachable_close_is_502(
    serve: ServeApp, http: aiohttp.ClientSession, free_port: Callable[[], int]
) -> None:
    """A closed loopback port upstream: 502, not a 500 with a traceback."""
    retry = cf.RetryPolicy(attempts=1)
    async with serve(base_url=f"http://127.0.0.1:{free_port()}/api/v1/", retry=retry) as url:
        status, body, _ = await _get(http, f"{url}/pipelines")
        assert status == 502
        assert body["error"] == "TransportError"


async def test_rate_limit_beyond_max_wait_is_503_with_retry_after(
    http: aiohttp.ClientSession, serve_app: Callable[[Any], AbstractAsyncContextManager[str]]
) -> None:
    """When Close's pause is longer than max_wait, the route answers 503 + Retry-After."""
    from closefunnel.emulator import EmulatorConfig
    from closefunnel.fastapi import create_app

    config = EmulatorConfig(now=NOW, opportunities=500, rps=0.2, window=10)  # 2 per 10 s
    async with Emulator(config) as emu:

        def factory() -> cf.Client:
            policy = cf.RetryPolicy(max_wait=0.5, deadline=5)
            return cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=policy)

        async with serve_app(create_app(client_factory=factory)) as url:
            pipeline = emu.dataset.pipelines[0].id
            statuses = []
            for rng in ("this-month", "last-month", "this-year", "last-year"):
                status, body, headers = await _get(http, f"{url}/funnel/{pipeline}", range=rng)
                statuses.append(status)
                if status == 503:
                    assert body["error"] == "RateLimitedError"
                    assert int(headers["Retry-After"]) >= 1
            assert statuses[:2] == [200, 200]
            assert 503 in statuses


async def test_cache_saves_upstream_requests(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """Within the TTL identical requests are served from memory; concurrent ones share."""
    pipeline = emu.dataset.pipelines[0].id
    params = [("range", "this-month"), ("compare", "last-month"), ("compare", "last-year")]

    async def fetch(url: str) -> Any:
        async with http.get(f"{url}/funnel/{pipeline}", params=params) as response:
            assert response.status == 200
            return await response.json()

    async with serve(cache_ttl=60) as url:
        first = await asyncio.gather(*(fetch(url) for _ in range(5)))
        assert _totals_posts(emu) == 3  # base + two compared, once for five callers
        again = await fetch(url)
        assert _totals_posts(emu) == 3
        assert all(body == first[0] for body in [*first, again])

    emu.clear_log()
    async with serve() as url:  # the library default: no cache
        await fetch(url)
        await fetch(url)
        assert _totals_posts(emu) == 6


async def test_openapi_documents_parameters_and_shape(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """/openapi.json lists the query parameters and the response and error models."""
    async with serve() as url:
        status, schema, _ = await _get(http, f"{url}/openapi.json")
    assert status == 200
    route = schema["paths"]["/funnel/{pipeline_id}"]["get"]
    names = {p["name"] for p in route["parameters"]}
    assert names == {
        "pipeline_id",
        "range",
        "compare",
        "type",
        "cohort_range",
        "users",
        "saved_search",
        "tz_offset",
    }
    ok = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/FunnelResponse"}
    assert {"404", "422", "502", "503"} <= set(route["responses"])
    models = schema["components"]["schemas"]
    either = orjson.dumps(models["FunnelResponse"]).decode()
    assert "FunnelComparisonModel" in either
    assert "FunnelTotalsModel" in either
    assert set(cf.METRIC_NAMES) <= set(models["FunnelMetricsModel"]["properties"])
    assert "/pipelines" in schema["paths"]


async def test_lifespan_and_dependency_in_a_users_own_app(
    emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: Callable[[Any], AbstractAsyncContextManager[str]],
) -> None:
    """client_lifespan + get_client + router in an app the user builds; closed on shutdown."""
    seen: list[cf.Client] = []

    def factory() -> cf.Client:
        return cf.Client(api_key=emu.api_key, base_url=emu.base_url)

    app = FastAPI(lifespan=client_lifespan(factory))
    app.include_router(router, prefix="/close")

    @app.get("/pipeline-names")
    async def pipeline_names(client: cf.Client = Depends(get_client)) -> list[str]:  # noqa: B008
        seen.append(client)
        return [p.name for p in await client.pipelines()]

    async with serve_app(app) as url:
        status, names, _ = await _get(http, f"{url}/pipeline-names")
        assert status == 200
        assert names == [p.name for p in emu.dataset.pipelines]
        await _get(http, f"{url}/pipeline-names")
        status, _, _ = await _get(http, f"{url}/close/pipelines")
        assert status == 200
    assert len(seen) == 2
    assert seen[0] is seen[1]  # one client for the app
    assert "closed" in repr(seen[0])


async def test_the_default_client_reads_the_environment(
    emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: Callable[[Any], AbstractAsyncContextManager[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """client_lifespan() without a factory makes ``Client()``: CLOSE_API_KEY and
    CLOSE_BASE_URL configure it; with no key the app refuses to start, saying which."""
    app = FastAPI(lifespan=client_lifespan())
    app.include_router(router)
    with pytest.raises(cf.InvalidQueryError, match="set CLOSE_API_KEY"):
        async with client_lifespan()(app):
            pass
    monkeypatch.setenv("CLOSE_API_KEY", emu.api_key)
    monkeypatch.setenv("CLOSE_BASE_URL", emu.base_url)
    async with serve_app(app) as url:
        status, pipelines, _ = await _get(http, f"{url}/pipelines")
    assert status == 200
    assert [p["id"] for p in pipelines] == [p.id for p in emu.dataset.pipelines]
