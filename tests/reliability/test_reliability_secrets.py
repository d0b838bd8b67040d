"""The secret part of a key or token appears in no log, repr, traceback, CLI output or response."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn

import closefunnel as cf
from closefunnel._cli import main
from closefunnel._sansio import build_totals_request
from closefunnel.emulator import BackgroundEmulator, Emulator, EmulatorConfig
from closefunnel.fastapi import create_app

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QueryFactory = Callable[[Emulator, int], list[cf.FunnelQuery]]

WRONG_SECRET = "wrongSecretXq7Zk"


def _forms(secret: str) -> list[str]:
    """A credential as it could leak: itself, its secret part, its Basic-auth encoding."""
    forms = [secret, base64.b64encode(f"{secret}:".encode()).decode()]
    _, dot, tail = secret.partition(".")
    if dot:
        forms.append(tail)
    return forms


class Scan:
    """Everything captured during a test, checked against every secret at the end."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = [form for secret in secrets for form in _forms(secret)]
        self.texts: list[str] = []

    def add(self, *objects: object) -> None:
        """Record repr and str of each object (and the full traceback of an exception)."""
        for obj in objects:
            self.texts += [repr(obj), str(obj)]
            if isinstance(obj, BaseException):
                self.texts.append("".join(traceback.format_exception(obj)))
                self.texts.append(repr(vars(obj)))

    def check(self, records: Sequence[logging.LogRecord] = ()) -> int:
        """Fail if any secret form occurs in anything recorded; return how much was scanned."""
        for record in records:
            self.texts += [record.getMessage(), repr(record.__dict__)]
            if record.exc_info and record.exc_info[1] is not None:
                self.add(record.exc_info[1])
        for text in self.texts:
            for secret in self.secrets:
                assert secret not in text, f"secret leaked into: {text[:300]}"
        return sum(map(len, self.texts))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_library_never_shows_the_secret(
    start_emulator: EmulatorFactory,
    make_queries: QueryFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, through every fault and error path, no public object or traceback shows it."""
    caplog.set_level(logging.DEBUG)
    fast = cf.RetryPolicy(attempts=3, backoff_initial=0, backoff_max=0, max_wait=0.5)
    async with start_emulator(fault_rate=0.5, slow_delay=0.3, rps=30) as emu:
        wrong = emu.api_key.partition(".")[0] + "." + WRONG_SECRET
        scan = Scan(emu.api_key, emu.token, wrong, *emu.api_keys)
        queries = make_queries(emu, 12)
        scan.add(emu, emu.log, emu.dataset, emu.config, fast, *queries)
        clients = [
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, retry=fast, timeout=0.2),
            cf.Client(token=emu.token, base_url=emu.base_url, retry=fast, timeout=0.2),
            cf.Client(api_key=wrong, base_url=emu.base_url, retry=fast, timeout=0.2),
        ]
        for made in clients:
            async with made as client:
                scan.add(client, client.retry, vars(client))
                calls: list[Awaitable[object]] = [
                    client.pipelines(),
                    client.users(),
                    client.funnel_totals(queries[0], format="csv"),
                    client.compare_totals(queries[1], "last-year", "last-month"),
                    client.funnel_totals(
                        cf.FunnelQuery(pipeline="pipe_nope", report_range="today")
                    ),
                    client.compare_totals(queries[2], "nope"),
                ]
                for call in calls:
                    try:
                        scan.add(await call)
                    except cf.CloseFunnelError as exc:
                        scan.add(exc)
                async for item in client.compare_many(queries, "last-quarter"):
                    scan.add(item, item.error, item.result)
                scan.add(client.gate_snapshots(), client.pool_snapshot(), client._credentials)
                request = build_totals_request(
                    queries[0], credentials=client._credentials, base_url=client.base_url
                )
                scan.add(request)
        scan.add(emu.log)
    # Nothing listens on this port: connection refused, wrapped as TransportError.
    async with cf.Client(
        api_key=emu.api_key, base_url=f"http://127.0.0.1:{_free_port()}/api/v1/", retry=fast
    ) as client:
        with pytest.raises(cf.TransportError) as refused:
            await client.pipelines()
        scan.add(refused.value, client)
    assert any("closefunnel.retry" in record.getMessage() for record in caplog.records)
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    assert scan.check(caplog.records) > 10_000


@pytest.mark.slow
def test_cli_never_shows_the_secret(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Any,
) -> None:
    """On every CLI error path (and with -v), neither stdout, stderr nor logs show the key."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("COLUMNS", "120")
    config = EmulatorConfig(opportunities=2_000, seed=5)
    kinds = ("500", "502", "503-no-retry-after", "504", "reset", "truncate", "malformed")
    faulty = EmulatorConfig(opportunities=2_000, seed=5, fault_rate=1.0, faults=kinds)
    limited = EmulatorConfig(opportunities=2_000, seed=5, rps=0.01, window=300.0)
    runs: list[tuple[list[str], int]] = []
    with (
        BackgroundEmulator(config) as emu,
        BackgroundEmulator(faulty) as bad,
        BackgroundEmulator(limited) as slow,
    ):
        key = emu.api_key
        wrong = key.partition(".")[0] + "." + WRONG_SECRET
        scan = Scan(key, wrong, emu.token)
        pipeline = emu.dataset.pipelines[0].id
        key_file = tmp_path / "key"
        key_file.write_text(wrong + "\n")
        dead = f"http://127.0.0.1:{_free_port()}/api/v1/"

        def run(argv: list[str], *, env_key: str | None = key) -> int:
            if env_key is None:
                monkeypatch.delenv("CLOSE_API_KEY", raising=False)
            else:
                monkeypatch.setenv("CLOSE_API_KEY", env_key)
            code = main([*argv, "--tz-offset", "0"] if argv[0] != "demo" else argv)
            out, err = capsys.readouterr()
            scan.texts += [out, err]
            runs.append((argv, code))
            return code

        totals = ["totals", "--pipeline", pipeline, "--base-url"]
        assert run([*totals, emu.base_url, "--compare", "last-year"]) == 0
        assert run([*totals, emu.base_url], env_key=None) == 2  # no key
        assert run([*totals, emu.base_url, "--range", "bogus"]) == 2  # invalid query
        assert run([*totals, emu.base_url], env_key=wrong) == 1  # 401
        assert run(["-v", *totals, emu.base_url], env_key=wrong) == 1
        assert run([*totals, emu.base_url, "--api-key-file", str(key_file)], env_key=None) == 1
        assert run(["totals", "--pipeline", "pipe_nope", "--base-url", emu.base_url]) == 1  # 404
        assert run(["-v", *totals, bad.base_url, "--format", "json"]) == 1  # faults
        bulk = ["bulk", "--pipeline", pipeline, "pipe_nope", "--compare", "last-month"]
        assert run(["-v", *bulk, "--base-url", bad.base_url]) == 1
        assert run([*bulk, "--base-url", emu.base_url, "--format", "jsonl"]) == 1
        assert run(["pipelines", "--base-url", dead]) == 1  # connection refused
        for _ in range(4):  # the 4th report in the window gets a 429 asking for ~300 s
            code = run([*totals, slow.base_url, "--format", "json"])
        assert code == 1
        assert "rate limit" in scan.texts[-1]
    assert [code for _, code in runs].count(1) >= 9
    assert scan.check(caplog.records) > 1_000


@asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="debug", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_fastapi_error_responses_never_show_the_secret(
    start_emulator: EmulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Every error the FastAPI app maps (422, 404, 502, 503) hides the key, as do its logs."""
    caplog.set_level(logging.DEBUG)
    fast = cf.RetryPolicy(attempts=2, backoff_initial=0, backoff_max=0, max_wait=1.0)
    async with (
        start_emulator(rps=0.01, window=300.0) as emu,
        start_emulator(fault_rate=1.0, faults=("500", "malformed", "reset")) as bad,
        aiohttp.ClientSession() as http,
    ):
        wrong = emu.api_key.partition(".")[0] + "." + WRONG_SECRET
        scan = Scan(emu.api_key, wrong)
        pipeline = emu.dataset.pipelines[0].id
        statuses: set[int] = set()
        apps = [(emu.api_key, emu.base_url), (wrong, emu.base_url), (emu.api_key, bad.base_url)]
        for key, base_url in apps:

            def factory(key: str = key, base_url: str = base_url) -> cf.Client:
                return cf.Client(api_key=key, base_url=base_url, retry=fast, timeout=1.0)

            async with _serve(create_app(client_factory=factory)) as url:
                paths = [
                    (f"/funnel/{pipeline}", {"range": "bogus"}),
                    (f"/funnel/{pipeline}", {"compare": "same-days-last-year"}),
                    ("/funnel/pipe_nope", {}),
                    (f"/funnel/{pipeline}", {"compare": "last-month"}),
                    (f"/funnel/{pipeline}", {"range": "last-year", "compare": "last-month"}),
                    ("/pipelines", {}),
                ]
                for path, params in paths:
                    async with http.get(url + path, params=params) as response:
                        statuses.add(response.status)
                        scan.texts += [await response.text(), repr(dict(response.headers))]
    assert {404, 422, 502, 503} <= statuses, statuses
    assert scan.check(caplog.records) > 1_000
