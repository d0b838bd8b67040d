"""The web API cannot be used to drain the key: caps, a bearer token, one 422 shape."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import orjson
import pytest
import yarl

import closefunnel as cf
from closefunnel.emulator import Emulator
from closefunnel.fastapi import MAX_COMPARED, MAX_USERS, create_app, make_router

#: The ``serve`` fixture: ``async with serve(app={...create_app options}) as url``.
ServeApp = Callable[..., AbstractAsyncContextManager[str]]

TOTALS = "/api/v1/report/funnel/opportunity/totals/"
TOKEN = "web-token-0f1e2d3c4b5a"
ERROR_KEYS = {"detail", "error", "field"}


def _upstream(emu: Emulator) -> int:
    """Requests that reached the emulator (Close) so far."""
    return len(emu.log)


async def _get(
    http: aiohttp.ClientSession, url: str | yarl.URL, params: Any = None, **headers: str
) -> tuple[int, Any, Any]:
    async with http.get(url, params=params, headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers


async def test_too_many_compared_ranges_or_users_send_nothing_upstream(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """300 ``compare=`` values were 301 upstream requests; now a 422 and none."""
    pipeline = emu.dataset.pipelines[0].id
    async with serve() as url:
        params = [("range", "this-month")] + [("compare", "last-month")] * 300
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
        assert status == 422
        assert set(body) == ERROR_KEYS
        assert body["field"] == "compare"
        assert f"at most {MAX_COMPARED}" in body["detail"]

        params = [("users", f"user_{n}") for n in range(MAX_USERS + 1)]
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
        assert status == 422
        assert body["field"] == "users"
        assert f"at most {MAX_USERS}" in body["detail"]
        assert _upstream(emu) == 0

        distinct = ["last-month", "last-quarter", "last-year", "last-week", "yesterday"]
        params = [("compare", name) for name in distinct[:MAX_COMPARED]]
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
        assert status == 200
        assert len(body["comparisons"]) == MAX_COMPARED
        assert sum(entry.path == TOTALS for entry in emu.log) == MAX_COMPARED + 1


async def test_the_caps_are_configurable(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    pipeline = emu.dataset.pipelines[0].id
    async with serve(app={"max_compared": 1, "max_users": 0}) as url:
        status, body, _ = await _get(
            http, f"{url}/funnel/{pipeline}", [("compare", "last-month")] * 2
        )
        assert (status, body["field"]) == (422, "compare")
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", {"users": "user_x"})
        assert (status, body["field"]) == (422, "users")
        assert _upstream(emu) == 0
        status, _, _ = await _get(http, f"{url}/funnel/{pipeline}", {"compare": "last-month"})
        assert status == 200
    with pytest.raises(cf.InvalidQueryError, match="max_compared"):
        create_app(max_compared=-1)
    with pytest.raises(ValueError, match="max_users"):
        make_router(max_users=True)


async def test_a_token_guards_every_route_but_health(
    emu: Emulator,
    serve: ServeApp,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pipeline = emu.dataset.pipelines[0].id
    async with serve(app={"token": TOKEN}) as url:
        status, body, _ = await _get(http, f"{url}/health")
        assert (status, body) == (200, {"status": "ok"})
        async with http.head(f"{url}/health") as response:  # load balancers probe with HEAD
            assert response.status == 200

        refused = [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": "Bearer"},
        ]
        texts = []
        for path in ("/pipelines", f"/funnel/{pipeline}", "/openapi.json", "/docs", "/nowhere"):
            for headers in refused:
                status, body, response_headers = await _get(http, f"{url}{path}", **headers)
                assert status == 401, (path, headers)
                assert response_headers["WWW-Authenticate"] == "Bearer"
                assert set(body) == ERROR_KEYS
                texts.append(orjson.dumps(body).decode() + str(response_headers))
        assert _upstream(emu) == 0  # nothing refused reached Close

        good = {"Authorization": f"Bearer {TOKEN}"}
        status, pipelines, _ = await _get(http, f"{url}/pipelines", **good)
        assert status == 200
        assert [p["id"] for p in pipelines] == [p.id for p in emu.dataset.pipelines]
        lower = {"authorization": f"bearer {TOKEN}"}  # header name and scheme in any case
        status, _, _ = await _get(http, f"{url}/funnel/{pipeline}", **lower)
        assert status == 200
        status, schema, _ = await _get(http, f"{url}/openapi.json", **good)
        assert status == 200
        texts.append(orjson.dumps(schema).decode())
    texts.append(caplog.text)
    assert all(TOKEN not in text for text in texts)


def test_a_bad_token_is_refused_before_serving() -> None:
    for bad in ("", "two words", "tab\tinside", "caf\u00e9", "line\nbreak"):
        with pytest.raises(cf.InvalidQueryError, match="token"):
            create_app(token=bad)


async def test_every_validation_error_has_one_shape(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """FastAPI's own checks, closefunnel's query rules and the caps: one ErrorBody."""
    pipeline = emu.dataset.pipelines[0].id
    async with serve() as url:
        cases: list[tuple[Any, str, str]] = [
            ({"type": "bogus"}, "type", "active-stage-cohort"),  # FastAPI's Literal check
            ({"range": "next-month"}, "range", "next-month"),  # closefunnel's rule
            ([("compare", "last-month")] * 9, "compare", "at most"),  # a cap
            ({"format": "csv"}, "format", "'format'"),  # an unknown parameter
        ]
        for params, field, named in cases:
            status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
            assert status == 422, params
            assert set(body) == ERROR_KEYS
            assert body["error"] == "InvalidQueryError"
            assert body["field"] == field
            assert named in body["detail"]
        status, body, _ = await _get(http, f"{url}/pipelines", {"limit": "5"})
        assert (status, body["field"]) == (422, "limit")
        assert _upstream(emu) == 0

        status, schema, _ = await _get(http, f"{url}/openapi.json")
    assert status == 200
    models = schema["components"]["schemas"]
    assert "HTTPValidationError" not in models
    assert "ValidationError" not in models
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            unprocessable = operation["responses"]["422"]
            ref = unprocessable["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorBody", path
    assert set(models["ErrorBody"]["properties"]) == ERROR_KEYS


async def test_an_unencoded_plus_gets_a_hint(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """``+02:00`` typed into a URL arrives as `` 02:00``; the 422 says to write ``%2B``."""
    pipeline = emu.dataset.pipelines[0].id
    async with serve() as url:
        raw = "2026-11-01T00:00:00+02:00..2026-11-19T00:00:00+02:00"
        target = yarl.URL(f"{url}/funnel/{pipeline}?range={raw}", encoded=True)
        status, body, _ = await _get(http, target)
        assert status == 422
        assert "%2B" in body["detail"]
        status, _, _ = await _get(http, f"{url}/funnel/{pipeline}", {"range": raw})
        assert status == 200  # encoded properly, the same range is fine


async def test_openapi_titles_and_parameter_docs_are_readable(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    async with serve() as url:
        status, schema, _ = await _get(http, f"{url}/openapi.json")
    assert status == 200
    text = orjson.dumps(schema).decode()
    assert "Response Funnel" not in text
    assert "Response List" not in text
    route = schema["paths"]["/funnel/{pipeline_id}"]["get"]
    for parameter in route["parameters"]:
        assert parameter.get("description"), parameter["name"]
        assert parameter.get("examples") or parameter["schema"].get("examples"), parameter["name"]


async def test_tz_offset_gives_zone_less_ranges_a_zone(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """``range=2026-11-01..2026-11-19`` as the command line takes it, with ``tz_offset``."""
    pipeline = emu.dataset.pipelines[0].id
    plain = "2026-11-01..2026-11-19"
    async with serve() as url:
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", {"range": plain})
        assert status == 422
        assert "tz_offset" in body["detail"]
        params = {"range": plain, "tz_offset": "2"}
        status, body, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
        assert status == 200
        zoned = "2026-11-01T00:00:00%2B02:00..2026-11-19T00:00:00%2B02:00"
        target = yarl.URL(f"{url}/funnel/{pipeline}?range={zoned}", encoded=True)
        status, same, _ = await _get(http, target)
        assert (status, same) == (200, body)
        params = {"range": plain, "tz_offset": "-17.99999999999999"}  # rounds to the minute
        status, _, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
        assert status == 200
        for bad in ("18.01", "-24", "nan", "inf", "two"):
            params = {"range": plain, "tz_offset": bad}
            status, error, _ = await _get(http, f"{url}/funnel/{pipeline}", params)
            assert (status, error["field"]) == (422, "tz_offset"), bad


async def test_the_router_alone_takes_the_token_and_caps(
    emu: Emulator,
    http: aiohttp.ClientSession,
    serve_app: Callable[[Any], AbstractAsyncContextManager[str]],
) -> None:
    """``make_router(token=..., max_compared=...)`` in a user's own app."""
    from fastapi import FastAPI

    from closefunnel.fastapi import add_exception_handlers, client_lifespan

    app = FastAPI(
        lifespan=client_lifespan(lambda: cf.Client(api_key=emu.api_key, base_url=emu.base_url))
    )
    app.include_router(make_router(token=TOKEN, max_compared=1), prefix="/close")
    add_exception_handlers(app)

    @app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"open": "yes"}  # the user's own route: not the router's to guard

    pipeline = emu.dataset.pipelines[0].id
    async with serve_app(app) as url:
        assert (await _get(http, f"{url}/close/health"))[:2] == (200, {"status": "ok"})
        assert (await _get(http, f"{url}/mine"))[0] == 200
        status, body, headers = await _get(http, f"{url}/close/pipelines")
        assert (status, body["error"], headers["WWW-Authenticate"]) == (
            401,
            "Unauthorized",
            "Bearer",
        )
        good = {"Authorization": f"Bearer {TOKEN}"}
        params = [("compare", "last-month"), ("compare", "last-year")]
        status, body, _ = await _get(http, f"{url}/close/funnel/{pipeline}", params, **good)
        assert (status, body["field"]) == (422, "compare")
        assert _upstream(emu) == 0
        assert (await _get(http, f"{url}/close/pipelines", **good))[0] == 200
