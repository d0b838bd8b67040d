"""
What the web app serves to browsers: the dashboard page and its assets, the offline
``/docs`` page, and the CSV download.

Kept apart from :mod:`closefunnel.fastapi` (the JSON API, its errors and its auth) so that
module stays about the API. Everything here is served by the app itself from files inside
the package (and Swagger UI's from the ``swagger-ui-bundle`` package), so the pages work
on a machine with no internet access and no request ever leaves the host.

- ``_dashboard``: ``GET /`` and ``GET /static/{asset}``, with a strict
  Content-Security-Policy; the page is a static shell whose script asks the JSON API.
- ``_docs``: ``/docs`` with Swagger UI's files served by the app.
- ``_csv``: the per-user CSV, the same rows as ``closefunnel totals --format csv``.
"""

from __future__ import annotations

from closefunnel._web._csv import funnel_csv_response
from closefunnel._web._dashboard import ASSETS, PAGE_CSP, add_dashboard, open_paths
from closefunnel._web._docs import DOCS_ASSETS, add_offline_docs

__all__ = [
    "ASSETS",
    "DOCS_ASSETS",
    "PAGE_CSP",
    "add_dashboard",
    "add_offline_docs",
    "funnel_csv_response",
    "open_paths",
]
