"""
Fixtures for CLI tests: an emulator on loopback and ways to run the command line.

``main()`` calls ``asyncio.run``, so in-process runs happen in plain (sync) tests while
the emulator serves from its own event loop in a background thread. Output is read from
the streams handed to ``main(stdout=..., stderr=...)``, not from the process's.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import pytest

import closefunnel as cf
from closefunnel.cli import main
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
def _cli(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """Run ``main([...])`` against *emu* (key in CLOSE_API_KEY, --base-url and UTC added)."""
    monkeypatch.setenv("CLOSE_API_KEY", emu.api_key)
    monkeypatch.setenv("COLUMNS", "120")
    # rich takes these over the stream's own isatty(): leave "terminal or pipe" to the test.
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str, connect: bool = True, terminal: bool = False) -> Run:
        args = list(argv)
        if connect:
            args += ["--base-url", emu.base_url, "--tz-offset", "0"]
        secrets = (emu.api_key, emu.api_key.split(".", 1)[1])
        return run_main(args, secrets=secrets, terminal=terminal)

    return run


class TerminalIO(io.StringIO):
    """A stream that says it is a terminal, as a console on a TTY does (for the chart)."""

    def isatty(self) -> bool:
        return True


def run_main(argv: list[str], *, secrets: tuple[str, ...] = (), terminal: bool = False) -> Run:
    """
    ``main(argv)`` with its own two streams; no traceback and no secret in either.

    With *terminal*, stdout says it is a terminal (what people see); otherwise it is a
    pipe (what ``> file`` and ``| grep`` get).
    """
    out = TerminalIO() if terminal else io.StringIO()
    err = io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    for text in (out.getvalue(), err.getvalue()):
        assert "Traceback" not in text
        for secret in secrets:
            assert secret not in text
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(name="cli_plain")
def _cli_plain() -> Callable[..., Run]:
    """Run ``main([...])`` as given (no emulator options added), with its own streams."""

    def run(*argv: str) -> Run:
        return run_main(list(argv))

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
