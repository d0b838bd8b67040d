"""
``closefunnel serve`` with a bearer token, end to end (issue 10 §6).

These need the app's side of the token (``create_app(token=...)`` in
``closefunnel/fastapi.py``); the CLI side is ``closefunnel/cli/serve.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from closefunnel.cli.serve import TOKEN_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # real processes: run with -m slow

SCRIPT = shutil.which("closefunnel") or str(Path(sys.executable).with_name("closefunnel"))
TOKEN = "s3cret-serve-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _status(http: aiohttp.ClientSession, url: str, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=headers) as response:
        return response.status


async def _served(
    token_file: Path | None, env_token: str | None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """serve --emulator with the token sources given; yields the URL and, after exit,
    the process's stdout and stderr."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CLOSE_API_KEY", TOKEN_ENV)}
    if env_token is not None:
        env[TOKEN_ENV] = env_token
    argv = [SCRIPT, "serve", "--emulator", "--port", str(port)]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output: list[bytes] = []
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with asyncio.timeout(20):
                while True:
                    try:
                        await _status(http, f"{base}/health", None)
                        break
                    except aiohttp.ClientConnectionError:
                        assert proc.returncode is None
                        await asyncio.sleep(0.1)
        yield base, output
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        output += [out, err]


served = contextlib.asynccontextmanager(_served)


async def test_the_token_file_wins_and_is_never_printed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    async with (
        served(token_file, "wrong-token-from-env") as (base, output),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        assert await _status(http, f"{base}/pipelines", None) == 401
        assert await _status(http, f"{base}/pipelines", "wrong-token-from-env") == 401
        assert await _status(http, f"{base}/pipelines", TOKEN) == 200
    assert output
    assert b"bearer token required" in output[1]
    assert all(TOKEN.encode() not in chunk for chunk in output)
    assert all(b"Traceback" not in chunk for chunk in output)


async def test_the_token_from_the_environment(tmp_path: Path) -> None:
    async with (
        served(None, f" {TOKEN}\n") as (base, _),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        assert await _status(http, f"{base}/pipelines", None) == 401
        assert await _status(http, f"{base}/pipelines", TOKEN) == 200
