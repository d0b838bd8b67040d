"""
Fixtures for CLI tests: an emulator on loopback and ways to run the command line.

``main()`` calls ``asyncio.run``, so in-process runs happen in plain (sync) tests while
the emulator serves from its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import pytest

import closefunnel as cf
from closefunnel._cli import main
from closefunnel.emulator import BackgroundEmulator, Emulator, EmulatorConfig

T = TypeVar("T")

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
NOW_ISO = "2026-11-18T15:30:00+00:00"


@attrs.frozen
class Run:
    """What one ``main()`` call did."""

    code: int
    out: str
    err: str


@pytest.fixture(name="emu", scope="module")
def _emu() -> Iterator[Emulator]:
    with BackgroundEmulator(EmulatorConfig(now=NOW, opportunities=3_000)) as emu:
        yield emu


@pytest.fixture(name="cli")
def _cli(
    emu: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Run]:
    """Run ``main([...])`` against *emu* (key in CLOSE_API_KEY, --base-url and UTC added)."""
    monkeypatch.setenv("CLOSE_API_KEY", emu.api_key)
    monkeypatch.setenv("COLUMNS", "120")

    def run(*argv: str, connect: bool = True) -> Run:
        args = list(argv)
        if connect:
            args += ["--base-url", emu.base_url, "--tz-offset", "0"]
        capsys.readouterr()
        code = main(args)
        captured = capsys.readouterr()
        for text in (captured.out, captured.err):
            assert "Traceback" not in text
            assert emu.api_key not in text
            assert emu.api_key.split(".", 1)[1] not in text
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(name="library")
def _library(emu: Emulator) -> Callable[[Callable[[cf.Client], Awaitable[T]]], T]:
    """Run ``await fn(client)`` with a library client against *emu*: the expected results."""

    def call(fn: Callable[[cf.Client], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            async with cf.Client(api_key=emu.api_key, base_url=emu.base_url, tz_offset=0) as c:
                return await fn(c)

        return asyncio.run(go())

    return call
