"""Fixtures for client tests: emulators on loopback and a retry policy that never sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig

#: A fixed clock for the demo dataset, so relative ranges mean the same every run.
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)

DOCS_QUERY = cf.FunnelQuery(
    pipeline="pipe_4vukv2FUlFh9FDiVYAop1U",
    report_range=cf.DateRange(datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 8, tzinfo=UTC)),
    saved_search_id="save_ZVc26G33JTNiDNEFdZhBQAONg9cJHleAAHqBJakf239",
    users=(
        "user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA",
        "user_Ova4RGFG7pztSeJiiMFdN7O2MFl71nD0uGO3bIOo4Wk",
    ),
)

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]


@pytest.fixture(name="fast_retry")
def _fast_retry() -> cf.RetryPolicy:
    """Retries without sleeping between attempts, so fault tests stay fast."""
    return cf.RetryPolicy(attempts=8, backoff_initial=0.0, backoff_max=0.0, deadline=60.0)


@pytest.fixture(name="start_emulator")
def _start_emulator() -> EmulatorFactory:
    """Start an emulator with config overrides (demo dataset at NOW by default)."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Emulator]:
        options: dict[str, Any] = {"now": NOW, "opportunities": 4_000}
        options.update(overrides)
        async with Emulator(EmulatorConfig(**options)) as emu:
            yield emu

    return start


@pytest.fixture(name="docs_emulator")
async def _docs_emulator(start_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    """The docs-example dataset."""
    async with start_emulator(dataset="docs-example") as emu:
        yield emu


@pytest.fixture(name="demo_emulator")
async def _demo_emulator(start_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    """A small seeded demo organization."""
    async with start_emulator() as emu:
        yield emu
