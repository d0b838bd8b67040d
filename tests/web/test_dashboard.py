"""
The browser-facing routes over a real socket: ``/users``, the per-user CSV, the dashboard
page and its assets (types, CSP, no other host), the token's reach, and ``/docs`` offline.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any

import aiohttp
import pytest

import closefunnel as cf
from closefunnel._query import paired_range
from closefunnel.cli._render import CSV_HEADER, comparison_csv_rows, write_csv
from closefunnel.emulator import Emulator
from closefunnel.fastapi import create_app
from closefunnel.fastapi import router as default_router
from tests.web.conftest import serve_app
from tests.web.fake_close import FakeClose

ServeApp = Callable[..., AbstractAsyncContextManager[str]]
TOKEN = "dash-token-5a4b3c2d1e"
ERROR_KEYS = {"detail", "error", "field"}
STATIC = resources.files("closefunnel._web").joinpath("static")
#: An XML namespace name, not an address anything is fetched from.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


async def _get(
    http: aiohttp.ClientSession, url: str, params: Any = None, **headers: str
) -> tuple[int, bytes, Any]:
    async with http.get(url, params=params, headers=headers, allow_redirects=False) as response:
        return response.status, await response.read(), response.headers


# -- /users --------------------------------------------------------------------------------


async def test_users_lists_names_and_refuses_unknown_parameters(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    async with serve() as url:
        async with http.get(f"{url}/users") as response:
            assert response.status == 200
            users = await response.json()
        expected = [
            {
                "id": u.id,
                "name": f"{u.first_name} {u.last_name}".strip(),
                "first_name": u.first_name,
                "last_name": u.last_name,
            }
            for u in emu.dataset.users
        ]
        assert users == expected  # names to show, and no email addresses
        assert any(u.email for u in emu.dataset.users)
        async with http.get(f"{url}/users", params={"limit": "5"}) as response:
            assert response.status == 422
            body = await response.json()
        assert set(body) == ERROR_KEYS
        assert (body["error"], body["field"]) == ("InvalidQueryError", "limit")


async def test_users_upstream_failure_is_502(
    serve: ServeApp, http: aiohttp.ClientSession, free_port: Callable[[], int]
) -> None:
    retry = cf.RetryPolicy(attempts=1)
    upstream = f"http://127.0.0.1:{free_port()}/api/v1/"
    async with serve(base_url=upstream, retry=retry) as url, http.get(f"{url}/users") as response:
        assert response.status == 502
        assert set(await response.json()) == ERROR_KEYS


# -- the per-user CSV ----------------------------------------------------------------------


async def test_csv_is_the_command_lines_csv(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """Same rows as ``closefunnel totals --format csv`` for the same comparison."""
    pipeline = emu.dataset.pipelines[0].id
    params = [("range", "this-quarter"), ("compare", "last-quarter"), ("compare", "last-year")]
    async with (
        serve() as url,
        http.get(f"{url}/funnel/{pipeline}/users.csv", params=params) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        disposition = response.headers["Content-Disposition"]
        text = await response.text()
    assert disposition == f'attachment; filename="funnel-{pipeline}.csv"'
    query = cf.FunnelQuery(pipeline=pipeline, report_range="this-quarter")
    async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0) as client:
        comparison = await client.compare_totals(query, "last-quarter", "last-year")
    _, base = paired_range(query)
    assert text == write_csv(comparison_csv_rows(comparison, base_range=base))
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_HEADER
    periods = {(row[0], row[1]) for row in rows[1:]}
    assert periods == {
        ("base", "this-quarter"),
        ("compared", "last-quarter"),
        ("compared", "last-year"),
    }


async def test_csv_refusals_are_error_bodies_and_send_nothing(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    pipeline = emu.dataset.pipelines[0].id
    async with serve() as url:
        for params, field in (
            ({"format": "xlsx"}, "format"),
            ({"range": "next-month"}, "range"),
            ([("compare", "last-month")] * 9, "compare"),
        ):
            async with http.get(f"{url}/funnel/{pipeline}/users.csv", params=params) as response:
                assert response.status == 422, params
                body = await response.json()
            assert set(body) == ERROR_KEYS
            assert body["field"] == field
        assert len(emu.log) == 0
        async with http.get(f"{url}/funnel/pipe_doesnotexist/users.csv") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "NotFoundError"


async def test_csv_cells_from_strangers_cannot_be_formulas(
    http: aiohttp.ClientSession, serve_app: Callable[[Any], AbstractAsyncContextManager[str]]
) -> None:
    """A user id that starts like a formula is written as text; the file name stays tame."""
    hostile = '=HYPERLINK("http://127.0.0.1/x","click")'
    fake = FakeClose(pipelines=[("pipe_1", "Sales")], users=[(hostile, "Eve", "Mallory")])

    def factory() -> cf.Client:
        return cf.Client(api_key="api_test.secret", base_url=fake.base_url, tz_offset=0)

    async with fake.serving(), serve_app(create_app(client_factory=factory)) as url:
        path = f"{url}/funnel/pipe%22%0d%0ax/users.csv"
        async with http.get(f"{url}/funnel/pipe_1/users.csv") as response:
            assert response.status == 200
            rows = list(csv.reader(io.StringIO(await response.text())))
        async with http.get(path) as response:
            disposition = response.headers["Content-Disposition"]
    assert rows[1][rows[0].index("user_id")] == "'" + hostile
    assert disposition == 'attachment; filename="funnel-pipe___x.csv"'


# -- the page and its assets -----------------------------------------------------------------


async def test_page_is_served_with_a_strict_policy(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    async with serve() as url:
        status, page, headers = await _get(http, f"{url}/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        policy = headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, again, _ = await _get(http, f"{url}/", **{"If-None-Match": headers["ETag"]})
        assert (status, again) == (304, b"")
    text = page.decode()
    assert '<meta name="closefunnel-max-compared" content="4">' in text
    ranges = re.search(r'name="closefunnel-ranges" content="([^"]*)"', text)
    assert ranges is not None
    assert ranges.group(1).split() == list(cf.RELATIVE_RANGES)
    assert "<script>" not in text  # nothing inline: the policy would refuse it
    assert " style=" not in text


async def test_assets_have_their_types_and_nothing_else_is_served(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    types = {
        "dashboard.js": "text/javascript; charset=utf-8",
        "dashboard.css": "text/css; charset=utf-8",
        "favicon.svg": "image/svg+xml",
    }
    async with serve() as url:
        for name, kind in types.items():
            status, body, headers = await _get(http, f"{url}/static/{name}")
            assert status == 200, name
            assert headers["Content-Type"] == kind
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert body == STATIC.joinpath(name).read_bytes()
        for name in ("index.html", "..%2F_dashboard.py", "../__init__.py", "nope.js"):
            status, _, _ = await _get(http, f"{url}/static/{name}")
            assert status == 404, name


def test_no_shipped_asset_names_another_host() -> None:
    """Every file under static/: no URL with a scheme, no protocol-relative URL."""
    names = [entry.name for entry in STATIC.iterdir()]
    assert {"index.html", "dashboard.js", "dashboard.css", "favicon.svg"} <= set(names)
    for name in names:
        text = STATIC.joinpath(name).read_text(encoding="utf-8").replace(SVG_NAMESPACE, "")
        assert not re.search(r"[a-z][a-z0-9+.-]*://", text, re.IGNORECASE), name
        assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?//""", text), name
        assert "@import" not in text, name


def test_the_page_puts_server_text_on_as_text_only() -> None:
    """No innerHTML, outerHTML, insertAdjacentHTML, document.write or eval in the script."""
    script = STATIC.joinpath("dashboard.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
    ):
        assert sink not in script, sink


async def test_the_router_serves_the_page_under_a_prefix(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    """Mounted at /close like the JSON routes: the page and the API it asks are both there."""
    from fastapi import FastAPI

    from closefunnel.fastapi import client_lifespan

    def factory() -> cf.Client:
        return cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0)

    app = FastAPI(lifespan=client_lifespan(factory))
    app.include_router(default_router, prefix="/close")
    async with serve_app(app) as url:
        status, _, headers = await _get(http, f"{url}/close/")
        assert status == 200
        assert "Content-Security-Policy" in headers
        status, _, _ = await _get(http, f"{url}/close/static/dashboard.js")
        assert status == 200
        status, _, headers = await _get(http, f"{url}/close")
        assert status in (307, 308)
        assert headers["Location"].endswith("/close/")
        status, _, _ = await _get(http, f"{url}/close/users")  # what the page asks
        assert status == 200


async def test_with_a_token_the_page_is_open_and_the_data_is_not(
    emu: Emulator, serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """The page and assets carry no data (the page asks for the token); the API is gated."""
    pipeline = emu.dataset.pipelines[0].id
    async with serve(app={"token": TOKEN, "prefix": "/close"}) as url:
        for path in ("/close/", "/close/static/dashboard.js", "/close/static/dashboard.css"):
            status, body, _ = await _get(http, f"{url}{path}")
            assert status == 200, path
            assert TOKEN.encode() not in body
        for path in (
            "/close/users",
            "/close/pipelines",
            f"/close/funnel/{pipeline}/users.csv",
            "/docs",
        ):
            status, _, headers = await _get(http, f"{url}{path}")
            assert status == 401, path
            assert headers["WWW-Authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {TOKEN}"}
        status, _, _ = await _get(http, f"{url}/close/users", **good)
        assert status == 200
    assert len([e for e in emu.log if e.path.endswith("/user/")]) == 1


# -- /docs -------------------------------------------------------------------------------------


async def test_docs_load_swagger_ui_from_the_app(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    async with serve() as url:
        status, page, _ = await _get(http, f"{url}/docs")
        assert status == 200
        text = page.decode()
        sources = re.findall(r"""(?:src|href)="([^"]+)\"""", text)
        assert sources, text
        assert all(source.startswith("/docs/assets/") for source in sources), sources
        assert "cdn" not in text.lower()
        assert "'/openapi.json'" in text
        assert '"validatorUrl": null' in text
        kinds = {
            "swagger-ui-bundle.js": "text/javascript",
            "swagger-ui.css": "text/css",
            "favicon.png": "image/png",
        }
        for name, kind in kinds.items():
            status, body, headers = await _get(http, f"{url}/docs/assets/{name}")
            assert status == 200, name
            assert headers["Content-Type"].startswith(kind)
            assert len(body) > 100
        status, _, _ = await _get(http, f"{url}/docs/assets/swagger-ui.js.map")
        assert status == 404
        status, _, _ = await _get(http, f"{url}/docs/assets/redoc.standalone.js")
        assert status == 404
        status, _, _ = await _get(http, f"{url}/redoc")
        assert status == 404  # off: ReDoc loads its logo from elsewhere
        status, page, _ = await _get(http, f"{url}/docs/oauth2-redirect")
        assert status == 200


async def test_every_api_parameter_is_documented(
    serve: ServeApp, http: aiohttp.ClientSession
) -> None:
    """The new routes keep the OpenAPI readability rules; the page routes are not in it."""
    async with serve() as url, http.get(f"{url}/openapi.json") as response:
        schema = await response.json()
    paths = schema["paths"]
    assert {"/users", "/funnel/{pipeline_id}/users.csv"} <= set(paths)
    assert "/" not in paths
    assert "/static/{asset}" not in paths
    csv_route = paths["/funnel/{pipeline_id}/users.csv"]["get"]
    funnel_route = paths["/funnel/{pipeline_id}"]["get"]
    assert [p["name"] for p in csv_route["parameters"]] == [
        p["name"] for p in funnel_route["parameters"]
    ]
    assert "text/csv" in csv_route["responses"]["200"]["content"]
    for route in (csv_route, paths["/users"]["get"]):
        for parameter in route.get("parameters", []):
            assert parameter.get("description"), parameter["name"]
            assert parameter.get("examples") or parameter["schema"].get("examples")
    comparison = schema["components"]["schemas"]["FunnelComparisonModel"]["properties"]
    assert "base_range" in comparison
    period = schema["components"]["schemas"]["ComparedPeriodModel"]["properties"]
    assert "compared_range" in period


async def test_docs_without_swagger_ui_say_what_to_install(
    serve: ServeApp, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No CDN fallback: without the package the page names the extra (503)."""
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # as if not installed
    async with serve() as url:
        status, page, _ = await _get(http, f"{url}/docs")
    assert status == 503
    assert b"closefunnel[fastapi]" in page
    assert b"//" not in page
