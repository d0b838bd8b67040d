"""
The bulk scheduler's own rules (``closefunnel._bulk.stream``), over plain coroutines:
the client's bulk runs are these workers with its calls as the work.
"""

from __future__ import annotations

import asyncio

import pytest

import closefunnel as cf
from closefunnel._bulk import stream


def _query(n: int) -> cf.FunnelQuery:
    return cf.FunnelQuery(pipeline=f"pipe_{n}", report_range="this-month")


async def test_a_call_cancelled_by_someone_else_reaches_the_caller() -> None:
    """A call that ends cancelled though the run was not (it awaited a shared future
    its owner cancelled) has no answer: the run says so instead of dropping the query."""
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(query: cf.FunnelQuery) -> str:
        if query.pipeline == "pipe_2":
            await shared
        await asyncio.sleep(0.01)
        return query.pipeline

    async def drain() -> list[str]:
        return [item.query.pipeline async for item in stream(map(_query, range(6)), run, window=2)]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.005)
    shared.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # before the fix: five items, and the run ended as if complete


async def test_every_drawn_query_gets_one_item_and_the_workers_end() -> None:
    """Failures are items, results are items, one per query, whatever the window."""

    async def run(query: cf.FunnelQuery) -> str:
        await asyncio.sleep(0)
        if query.pipeline.endswith("3"):
            raise cf.NotFoundError("no such pipeline", status=404)
        return query.pipeline

    before = asyncio.all_tasks()
    items = [item async for item in stream(map(_query, range(40)), run, window=3)]
    assert sorted(item.query.pipeline for item in items) == sorted(f"pipe_{n}" for n in range(40))
    assert {item.query.pipeline for item in items if not item.ok} == {
        "pipe_3",
        "pipe_13",
        "pipe_23",
        "pipe_33",
    }
    assert asyncio.all_tasks() == before
