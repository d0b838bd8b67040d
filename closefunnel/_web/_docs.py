"""
``/docs`` without internet access: Swagger UI's files served by the app itself.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so on a machine without internet
access (or behind a strict proxy) it is a blank page. The files come from the
``swagger-ui-bundle`` package (Swagger UI's dist files, kept by the team behind
connexion; part of the ``fastapi`` extra), never from this repository. ReDoc is turned
off rather than left loading from a CDN: no well-kept package ships its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, Response

__all__ = ["DOCS_ASSETS", "add_offline_docs"]

#: Swagger UI's files the app serves under ``/docs/assets/``, with their content types.
DOCS_ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_INSTALL_HINT: Final = "pip install 'closefunnel[fastapi]'"


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def add_offline_docs(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """
    Serve Swagger UI at *docs_url* with its files from the app (make *app* with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not there too).

    Without ``swagger-ui-bundle`` installed the page says what to install instead of
    loading anything from elsewhere.
    """
    folder = _swagger_dir()
    assets: dict[str, bytes] = {}
    if folder is not None:
        assets = {name: (folder / name).read_bytes() for name in DOCS_ASSETS}
    redirect = f"{docs_url}/oauth2-redirect"

    @app.get(docs_url, include_in_schema=False)
    async def docs(request: Request) -> Response:
        if not assets:
            return HTMLResponse(
                "<!DOCTYPE html><title>API docs</title><p>Swagger UI's files are not "
                f"installed: <code>{_INSTALL_HINT}</code>. The API's description is at "
                f'<a href="{app.openapi_url}">{app.openapi_url}</a>.</p>',
                status_code=503,
            )
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{docs_url}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{docs_url}/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}{docs_url}/assets/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{redirect}",
            # No "valid" badge: Swagger UI would send the whole document to an online
            # validator.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(f"{docs_url}/assets/{{asset}}", include_in_schema=False)
    async def docs_asset(asset: str) -> Response:
        if asset not in assets:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(
            assets[asset],
            media_type=DOCS_ASSETS[asset],
            headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"},
        )
