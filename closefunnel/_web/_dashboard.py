"""
The dashboard: ``GET /`` and ``GET /static/{asset}`` on the closefunnel router.

The page is a static shell; its own script (``static/dashboard.js``, no library) asks
the JSON routes next to it (``pipelines``, ``users``, ``funnel/...``) and draws the funnel
as inline SVG. Every URL it uses is relative to the page, so the router works under any
prefix (``/close/`` asks ``/close/pipelines``) and the page never names a host.

Why the page holds no data: it is the same bytes for everyone, so it can be open even
when the app has a bearer token (the browser cannot send a header when it loads a page);
the script asks for the token when the API answers 401, keeps it in ``sessionStorage``
(gone when the tab closes) and sends it as ``Authorization: Bearer``. Every number and
name still comes from the token-gated API.

Names and messages from the server are put on the page as text (``textContent``), never
parsed as HTML, and the Content-Security-Policy allows scripts, styles and connections
to this origin only: an injected ``<script>`` or inline handler would not run, and no
request could leave for another host.
"""

from __future__ import annotations

import hashlib
import html
from importlib import resources
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from closefunnel._vocabulary import RELATIVE_RANGES, SAME_DAYS_RANGES

__all__ = ["ASSETS", "PAGE_CSP", "add_dashboard", "open_paths"]

#: The page's Content-Security-Policy: this origin only, no inline script or style.
PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

#: The files under ``static/`` the app serves, with their content types. A fixed list, so
#: ``/static/{asset}`` can never be made to read anything else from the package.
ASSETS: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (a 304 when unchanged): an upgraded package never
    # serves last version's script with this version's page.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("closefunnel._web").joinpath("static", name).read_bytes()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _answer(request: Request, body: bytes, media_type: str, headers: dict[str, str]) -> Response:
    tag = _etag(body)
    headers = {**_HEADERS, **headers, "ETag": tag}
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def open_paths(prefix: str) -> frozenset[str]:
    """
    The dashboard's paths under *prefix*: open even when the app has a token, since they
    are the same bytes for everyone and carry no data (the page asks for the token).
    """
    paths = {f"{prefix}/", *(f"{prefix}/static/{name}" for name in ASSETS)}
    if prefix:
        paths.add(prefix)  # the redirect to prefix + "/"
    return frozenset(paths)


def add_dashboard(api: APIRouter, *, max_compared: int) -> None:
    """Add ``GET /`` (the page) and ``GET /static/{asset}`` to *api*."""
    # Filled in here so the page's choices are the server's own (our constants, no
    # server text): the range names Close takes and the cap on compared periods.
    marks = {
        "max_compared": str(max_compared),
        "relative_ranges": " ".join(RELATIVE_RANGES),
        "same_days_ranges": " ".join(SAME_DAYS_RANGES),
    }
    text = _read("index.html").decode("utf-8")
    for mark, value in marks.items():
        text = text.replace("{{" + mark + "}}", html.escape(value))
    page = text.encode("utf-8")
    assets = {name: _read(name) for name in ASSETS}

    @api.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        return _answer(
            request, page, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_CSP}
        )

    @api.get("/static/{asset}", include_in_schema=False)
    async def static(request: Request, asset: str) -> Response:
        if asset not in assets:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return _answer(request, assets[asset], ASSETS[asset], {})
