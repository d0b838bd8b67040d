"""
A worker process for the multi-process tests: ``python _worker.py JSON`` fetches the
reports it is given through a client sharing its gate via Redis, and prints a JSON line
with how many came back and the errors of the others.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import closefunnel as cf


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    queries = [
        cf.FunnelQuery(pipeline=pipeline, report_range=rng, users=tuple(users))
        for pipeline, rng, users in spec["queries"]
    ]
    errors: list[str] = []
    ok = 0
    async with cf.Client(
        api_key=spec["api_key"],
        base_url=spec["base_url"],
        redis=spec["redis"],
        redis_prefix=spec["prefix"],
        timeout=spec.get("timeout", 30.0),
        max_concurrency=spec.get("max_concurrency", 8),
    ) as client:
        print("started", flush=True)
        async for item in client.totals_many(queries):
            if item.error is None:
                ok += 1
            else:
                errors.append(f"{type(item.error).__name__}: {item.error}")
    return {"ok": ok, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
