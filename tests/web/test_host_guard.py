"""
``closefunnel serve`` on loopback answers only requests addressed to this machine, so a
page elsewhere that rebinds its name to 127.0.0.1 cannot read the app as its own origin.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import pytest

import closefunnel as cf
from closefunnel.cli.serve import guard_host
from closefunnel.emulator import Emulator
from closefunnel.fastapi import create_app


@pytest.mark.parametrize("bind", ["127.0.0.1", "localhost", "0.0.0.0"])
async def test_only_this_machines_names_are_answered_on_loopback(
    bind: str,
    emu: Emulator,
    serve_app: Callable[[Any], AbstractAsyncContextManager[str]],
    http: aiohttp.ClientSession,
) -> None:
    def factory() -> cf.Client:
        return cf.Client(api_key=emu.api_key, base_url=emu.base_url, clock=emu.now)

    app = create_app(client_factory=factory)
    guard_host(app, bind)
    async with serve_app(app) as url:
        port = url.rsplit(":", 1)[1]
        answers = {}
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"rebound.example:{port}"):
            async with http.get(f"{url}/users", headers={"Host": host}) as response:
                answers[host.split(":")[0]] = response.status
    assert answers["127.0.0.1"] == answers["localhost"] == 200
    # Beyond loopback the names are the deployment's own: nothing is refused by name.
    assert answers["rebound.example"] == (200 if bind == "0.0.0.0" else 400)
