"""The emulator's command line: options to config, serve until cancelled, python -m."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime

import aiohttp
import pytest
from emulator_helpers import basic

from closefunnel.emulator._cli import add_arguments, config_from_args, main, serve
from closefunnel.emulator._config import EmulatorConfig


def _parse(*argv: str) -> EmulatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_options_become_a_config() -> None:
    """Every option lands in the config."""
    config = _parse(
        "--port", "0", "--dataset", "docs-example", "--seed", "3", "--now", "2025-01-02T00:00Z",
        "--rps", "10", "--burst", "2", "--window", "4", "--header-style", "semicolon",
        "--legacy-429-body", "nested", "--latency", "0.1", "--jitter", "0.05",
        "--fault-rate", "0.2", "--faults", "500,reset", "--users", "5",
        "--opportunities", "100", "--pipelines", "2", "--keys", "3", "--log-limit", "50",
        "--header-timeout", "2.5",
    )  # fmt: skip
    assert config == EmulatorConfig(
        port=0, dataset="docs-example", seed=3, now=datetime(2025, 1, 2, tzinfo=UTC), rps=10,
        burst=2, window=4, header_style="semicolon", legacy_429_body="nested", latency=0.1,
        jitter=0.05, fault_rate=0.2, faults=("500", "reset"), users=5, opportunities=100,
        pipelines=2, keys=3, log_limit=50, header_timeout=2.5,
    )  # fmt: skip


def test_every_option_has_help_and_no_internal_name_leaks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    with pytest.raises(SystemExit):
        main(["--now", "yesterday"])
    err = capsys.readouterr().err
    assert "'yesterday' is not an ISO 8601 datetime" in err
    assert "_aware" not in err


def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid values are usage errors, not tracebacks."""
    for argv in (["--rps", "-1"], ["--faults", "boom"], ["--now", "2025-01-01"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "error" in capsys.readouterr().err


async def test_serve_prints_banner_and_stops_when_cancelled(
    session: aiohttp.ClientSession,
) -> None:
    """serve() prints the base URL and key, answers requests, and stops on cancel."""
    out = io.StringIO()
    task = asyncio.create_task(serve(EmulatorConfig(dataset="docs-example", port=0), out=out))
    for _ in range(100):
        if "API key" in out.getvalue():
            break
        await asyncio.sleep(0.02)
    text = out.getvalue()
    url = re.search(r"(http://127\.0\.0\.1:\d+/api/v1/)", text)
    key = re.search(r"API key: (api_\S+)", text)
    assert url
    assert key
    async with session.get(url.group(1) + "me/", headers=basic(key.group(1))) as resp:
        assert resp.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(url.group(1) + "me/") as resp:
            pass


@pytest.mark.slow
def test_python_m_serves_until_interrupted() -> None:
    """`python -m closefunnel.emulator` serves and exits 0 on Ctrl-C (SIGINT)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "closefunnel.emulator", "--port", "0", "--dataset", "docs-example"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "/api/v1/" in first
        assert proc.stdout.readline().startswith("API key: api_")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
