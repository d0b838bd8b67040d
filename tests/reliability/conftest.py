"""Fixtures for the reliability suite: emulators, queries, and the check that nothing leaked."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

import closefunnel as cf
import closefunnel._client
from closefunnel.emulator import Emulator, EmulatorConfig

#: A fixed clock for the demo dataset, so relative ranges mean the same every run.
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
#: The seed of every demo dataset here: the dataset depends on it, so a faulty emulator
#: and a clean one with the same seed serve the same organization.
SEED = 11

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QueryFactory = Callable[[Emulator, int], list[cf.FunnelQuery]]
QuietCheck = Callable[[cf.Client], Awaitable[None]]


@pytest.fixture(name="start_emulator")
def _start_emulator() -> EmulatorFactory:
    """Start an emulator with config overrides (small seeded demo dataset at NOW by default)."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Emulator]:
        options: dict[str, Any] = {"now": NOW, "seed": SEED, "opportunities": 3_000}
        options.update(overrides)
        async with Emulator(EmulatorConfig(**options)) as emu:
            yield emu
            assert emu.internal_errors == []

    return start


@pytest.fixture(name="make_queries")
def _make_queries() -> QueryFactory:
    """Build *n* distinct report queries over an emulator's pipelines, ranges and users."""

    def make(emu: Emulator, n: int) -> list[cf.FunnelQuery]:
        dataset = emu.dataset
        ranges = [r for r in cf.RELATIVE_RANGES if r != "all-time"]
        scopes: list[tuple[str, ...]] = [()] + [(user.id,) for user in dataset.users]
        combos = itertools.product(scopes, ranges, dataset.pipelines)
        queries = [
            cf.FunnelQuery(pipeline=pipeline.id, report_range=rng, users=users)
            for users, rng, pipeline in itertools.islice(combos, n)
        ]
        assert len(queries) == n, "the dataset is too small for that many distinct queries"
        return queries

    return make


def _client_tasks() -> set[asyncio.Task[Any]]:
    """The tasks running a coroutine of closefunnel._client (the emulator's are excluded)."""
    owned = closefunnel._client.__file__
    tasks = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and code.co_filename == owned and not task.done():
            tasks.add(task)
    return tasks


@pytest.fixture(name="client_tasks")
def _client_tasks_fixture() -> Callable[[], set[asyncio.Task[Any]]]:
    """The set of live tasks whose coroutine belongs to closefunnel._client."""
    return _client_tasks


@pytest.fixture(name="assert_quiet")
def _assert_quiet() -> QuietCheck:
    """Check, without yielding to the loop, that a client holds no permit, connection or task."""

    async def check(client: cf.Client) -> None:
        for group, snapshot in client.gate_snapshots().items():
            assert snapshot.in_flight == 0, (group, snapshot)
            assert snapshot.waiting == 0, (group, snapshot)
        pool = client.pool_snapshot()
        assert pool is not None
        assert pool.in_use == 0, pool
        assert _client_tasks() == set()

    return check
