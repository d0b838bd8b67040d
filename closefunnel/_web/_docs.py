"""
``/docs`` without internet access: Swagger UI's files served by the app itself.

FastAPI's own page loads Swagger UI from a CDN, so on a machine without internet access
(or behind a strict proxy) it is blank. The files come from the ``fastapi-offline``
package (part of the ``fastapi`` extra), which exists to ship them and follows Swagger
UI's releases; none are committed to this repository. Swagger UI 5 is needed: FastAPI
writes OpenAPI 3.1, which Swagger UI 4 (``swagger-ui-bundle``'s) refuses to render. Only
the files are used, not that package's app class, so the page works with any FastAPI
app (:func:`add_offline_docs`).

ReDoc (``/redoc``) is off: even with its script served locally it loads its logo from
its vendor's CDN, which the browser tests caught.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, Response

__all__ = ["DOCS_ASSETS", "add_offline_docs"]

#: The files the app serves under ``{docs_url}/assets/``, with their content types.
DOCS_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_INSTALL_HINT: Final = "pip install 'closefunnel[fastapi]'"


def _read_assets() -> dict[str, bytes]:
    """The files, or nothing when ``fastapi-offline`` is not installed."""
    try:
        folder = resources.files("fastapi_offline").joinpath("static")
        return {name: folder.joinpath(name).read_bytes() for name in DOCS_ASSETS}
    except (ModuleNotFoundError, FileNotFoundError):
        return {}


def _missing(app: FastAPI) -> Response:
    return HTMLResponse(
        "<!DOCTYPE html><title>API docs</title><p>Swagger UI's files are not installed: "
        f"<code>{_INSTALL_HINT}</code>. The API's description is at "
        f'<a href="{app.openapi_url}">{app.openapi_url}</a>.</p>',
        status_code=503,
    )


def add_offline_docs(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """
    Serve Swagger UI at *docs_url* with its files from the app (make *app* with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not there). Without the
    files installed the page says what to install instead of loading anything from
    elsewhere.
    """
    assets = _read_assets()
    base = f"{docs_url}/assets"
    redirect = f"{docs_url}/oauth2-redirect"

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(docs_url, include_in_schema=False)
    async def docs(request: Request) -> Response:
        if not assets:
            return _missing(app)
        at = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{at}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{at}{base}/swagger-ui-bundle.js",
            swagger_css_url=f"{at}{base}/swagger-ui.css",
            swagger_favicon_url=f"{at}{base}/favicon.png",
            oauth2_redirect_url=f"{at}{redirect}",
            # No "valid" badge: Swagger UI would send the document to an online validator.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(f"{base}/{{asset}}", include_in_schema=False)
    async def docs_asset(asset: str) -> Response:
        if asset not in assets:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(
            assets[asset],
            media_type=DOCS_ASSETS[asset],
            headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
        )
