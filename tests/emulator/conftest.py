"""Fixtures for the emulator tests: running emulators and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from emulator_helpers import NOW

from closefunnel.emulator import Emulator, EmulatorConfig


@pytest.fixture(name="session")
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture(name="docs_emu")
async def _docs_emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(dataset="docs-example", now=NOW)) as emu:
        yield emu
        assert not emu.internal_errors


@pytest.fixture(name="demo_config", scope="session")
def _demo_config() -> EmulatorConfig:
    return EmulatorConfig(now=NOW, seed=7, opportunities=6000, users=8)


@pytest.fixture(name="demo_emu")
async def _demo_emu(demo_config: EmulatorConfig) -> AsyncIterator[Emulator]:
    async with Emulator(demo_config) as emu:
        yield emu
        assert not emu.internal_errors
