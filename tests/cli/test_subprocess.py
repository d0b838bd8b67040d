"""
The installed command in real subprocesses: ``python -m closefunnel`` and the ``closefunnel``
script, against an emulator served by the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

import closefunnel as cf
from closefunnel._convert import CONVERTER
from closefunnel.emulator import Emulator, EmulatorConfig

#: Real OS processes, each starting an interpreter: seconds apiece, so `slow` (CI runs them).
pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

NOW = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)
NOW_ISO = NOW.isoformat()
SCRIPT = shutil.which("closefunnel") or str(Path(sys.executable).with_name("closefunnel"))


@pytest.fixture(name="loop_emu")
async def _loop_emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(now=NOW, opportunities=3_000)) as emu:
        yield emu


async def run(*argv: str, key: str | None = None, limit: float = 30) -> tuple[int, str, str]:
    """Run a command with CLOSE_API_KEY=*key*; the loop keeps serving while it runs."""
    env = {k: v for k, v in os.environ.items() if k != "CLOSE_API_KEY"}
    env["COLUMNS"] = "120"
    if key is not None:
        env["CLOSE_API_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    text_out, text_err = out.decode(), err.decode()
    assert "Traceback" not in text_out + text_err
    if key is not None:
        assert key not in text_out + text_err
    return proc.returncode, text_out, text_err


async def test_python_m_totals_json_matches_library(loop_emu: Emulator) -> None:
    pipeline = loop_emu.dataset.pipelines[0].id
    code, out, err = await run(
        sys.executable, "-m", "closefunnel", "totals", "--pipeline", pipeline,
        "--range", "this-quarter", "--compare", "last-quarter", "--format", "json",
        "--base-url", loop_emu.base_url, "--tz-offset", "0", key=loop_emu.api_key,
    )  # fmt: skip
    assert code == 0, err
    query = cf.FunnelQuery(pipeline=pipeline, report_range="this-quarter")
    async with cf.Client(api_key=loop_emu.api_key, base_url=loop_emu.base_url, tz_offset=0) as c:
        expected = await c.compare_totals(query, "last-quarter")
    assert json.loads(out) == CONVERTER.unstructure(expected)


async def test_script_bulk_jsonl_and_failure_exit_codes(loop_emu: Emulator) -> None:
    common = ("--base-url", loop_emu.base_url, "--tz-offset", "0")
    code, out, err = await run(
        SCRIPT, "bulk", "--all-pipelines", "--format", "jsonl", *common, key=loop_emu.api_key
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["pipeline"] for r in records) == sorted(
        p.id for p in loop_emu.dataset.pipelines
    )
    assert "\x1b[" not in err  # no progress bar or colours when stderr is not a terminal

    code, out, err = await run(
        SCRIPT, "bulk", "--pipeline", "pipe_nope", *common, key=loop_emu.api_key
    )
    assert code == 1
    assert "pipe_nope" in err

    code, out, err = await run(SCRIPT, "totals", "--pipeline", "p", "--range", "soon", *common)
    assert code == 2
    assert "soon" in err


async def test_network_failure_exit_1_without_the_key() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = "api_0123456789abcdefghijkl.s3cretS3cretS3cret"
    for command in (["pipelines"], ["totals", "--pipeline", "p", "--format", "json"]):
        code, out, err = await run(
            SCRIPT, *command, "--base-url", f"http://127.0.0.1:{port}/api/v1/", key=key
        )
        assert code == 1
        assert out == ""
        assert err.startswith("closefunnel: could not reach")
        assert err.count("\n") == 1
        assert "s3cret" not in err


async def test_python_m_demo_prints_the_tables() -> None:
    code, out, err = await run(sys.executable, "-m", "closefunnel", "demo", "--now", NOW_ISO)
    assert code == 0, err
    assert "Sales" in out
    assert "Velocity / day" in out


async def test_demo_needs_no_fastapi_and_serve_explains_the_extra() -> None:
    block = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "import closefunnel.cli as cli\n"
        "assert 'fastapi' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    code, out, err = await run(sys.executable, "-c", block, "demo", "--now", NOW_ISO)
    assert code == 0, err
    assert "Sales" in out
    code, out, err = await run(sys.executable, "-c", block, "serve", "--emulator")
    assert code == 2
    assert "pip install 'closefunnel[fastapi]'" in err
    assert err.count("\n") == 1


async def test_serve_emulator_subprocess() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        SCRIPT, "serve", "--emulator", "--now", NOW_ISO, "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            body = None
            async with asyncio.timeout(20):
                while body is None:
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/pipelines") as response:
                            assert response.status == 200
                            body = await response.json()
                    except aiohttp.ClientConnectionError:
                        assert proc.returncode is None
                        await asyncio.sleep(0.1)
            pipeline = body[0]["id"]
            url = f"http://127.0.0.1:{port}/funnel/{pipeline}?compare=last-month"
            async with http.get(url) as response:
                assert response.status == 200
                assert len((await response.json())["comparisons"]) == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err
    assert b"Traceback" not in out + err
