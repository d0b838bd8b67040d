"""
One web worker for the multi-process shared-cache test: ``create_app(..., redis=...)``
under uvicorn on a given loopback port, like one of ``uvicorn --workers N``'s children.

Usage: ``python shared_worker.py PORT`` with ``CLOSE_API_KEY``, ``CLOSE_BASE_URL``,
``CLOSEFUNNEL_REDIS_URL`` (empty: no Redis, each worker on its own) and
``CLOSEFUNNEL_REDIS_PREFIX`` in the environment.
"""

from __future__ import annotations

import os
import sys

import uvicorn

import closefunnel as cf
from closefunnel.fastapi import create_app


def main() -> None:
    """Serve until terminated."""
    port = int(sys.argv[1])

    def factory() -> cf.Client:
        return cf.Client(
            api_key=os.environ["CLOSE_API_KEY"], base_url=os.environ["CLOSE_BASE_URL"], tz_offset=0
        )

    app = create_app(
        client_factory=factory,
        cache_ttl=30,
        redis=os.environ["CLOSEFUNNEL_REDIS_URL"] or None,
        redis_prefix=os.environ["CLOSEFUNNEL_REDIS_PREFIX"],
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
