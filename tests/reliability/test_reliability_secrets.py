"""The secret part of a key or token appears in no log, repr, traceback, CLI output or response."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from hostile_server import Handler, Hostile, Request, hostile_thread, response

import closefunnel as cf
from closefunnel._sansio import build_totals_request
from closefunnel.cli import main
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


# -- an upstream that echoes the request: redaction at the trust boundary ----------------------

KEY = "api_7Qx3LmEcho.SuperSecretValue123"
TOKEN = "tokSecretBearerXYZ987"
ECHO_QUERY = cf.FunnelQuery(pipeline="pipe_1", report_range="this-month")
ONCE = cf.RetryPolicy(attempts=1, max_wait=1.0)


def _echo(status: int, *, as_json: bool) -> Handler:
    """A debugging proxy's error page: the request's headers, Authorization included."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        raw = request.raw_headers
        if as_json:
            body = json.dumps(
                {
                    "error": f"denied; you sent {raw}",
                    "errors": [raw],
                    "field-errors": {"pipeline": raw},
                    "echo": {"headers": request.headers, "deep": [[{"auth": raw}]]},
                }
            ).encode()
            kind = "application/json"
        else:
            body, kind = f"<html><pre>{raw}</pre></html>".encode(), "text/html"
        writer.write(response(status, body, content_type=kind, headers={"Retry-After": "3600"}))

    return handle


def _secret_views(exc: BaseException) -> list[object]:
    """Everything a caller (or Sentry) may print of an error."""
    return [
        exc,
        exc.__cause__,
        exc.__context__,
        repr(exc.__cause__),
        *(getattr(exc, name, None) for name in ("body", "errors", "field_errors", "messages")),
    ]


@pytest.mark.parametrize("status", [200, 400, 401, 404, 429, 500, 503])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "html"])
@pytest.mark.parametrize("scheme", ["api_key", "token", "environment"])
async def test_an_echoed_authorization_header_is_redacted(
    status: int, as_json: bool, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages, kept bodies, details, the cause and the traceback hold no form of it (a
    key read from CLOSE_API_KEY included)."""
    credential = {"token": TOKEN} if scheme == "token" else {}
    if scheme == "api_key":
        credential = {"api_key": KEY}
    elif scheme == "environment":
        monkeypatch.setenv("CLOSE_API_KEY", KEY)
    scan = Scan(KEY, TOKEN)
    async with Hostile(_echo(status, as_json=as_json)) as server:
        client = cf.Client(base_url=server.base_url, retry=ONCE, **credential)
        async with client:
            with pytest.raises(cf.CloseFunnelError) as caught:
                await client.funnel_totals(ECHO_QUERY)
            with pytest.raises(cf.CloseFunnelError) as listed:
                await client.pipelines()
    echoed = server.requests[0].headers["authorization"]
    assert echoed.endswith(TOKEN if scheme == "token" else scan.secrets[1])  # it was sent
    for error in (caught.value, listed.value):
        scan.add(*_secret_views(error))
        if status != 200:
            assert isinstance(error, cf.APIError)
            assert error.status == status
        if status not in (200, 429):
            assert "***" in str(error) or "***" in repr(error.body)  # echoed, then redacted
    scan.check()


async def test_a_malformed_response_chains_no_aiohttp_error() -> None:
    """aiohttp's parse error holds the request headers: it is described, not chained."""

    async def malformed(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}")

    async def bad_chunks(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n")

    scan = Scan(KEY)
    for handler in (malformed, bad_chunks):
        async with Hostile(handler) as server:
            client = cf.Client(api_key=KEY, base_url=server.base_url, retry=ONCE)
            async with client:
                with pytest.raises(cf.TransportError) as caught:
                    await client.funnel_totals(ECHO_QUERY)
        error = caught.value
        assert error.__cause__ is None
        assert error.__suppress_context__
        printed = "".join(traceback.format_exception(error))
        assert "RequestInfo" not in printed
        assert "site-packages/aiohttp" not in printed
        scan.add(*_secret_views(error))
    scan.check()


def test_the_cli_prints_an_echoed_key_redacted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI renders the redacted error: its stderr shows no form of the key."""
    monkeypatch.setenv("CLOSE_API_KEY", KEY)
    scan = Scan(KEY)
    for status in (400, 401, 404):
        for as_json in (True, False):
            with hostile_thread(_echo(status, as_json=as_json)) as server:
                argv = ["totals", "--pipeline", "pipe_1", "--base-url", server.base_url]
                code = main([*argv, "--tz-offset", "0"])
            out, err = capsys.readouterr()
            assert code == (2 if status == 400 else 1)  # a 400 is bad input
            assert str(status) in err
            scan.texts += [out, err]
    scan.check()


async def test_the_web_api_answers_an_echoed_key_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """The FastAPI error response (and its logs) show no form of the key."""
    caplog.set_level(logging.DEBUG)
    scan = Scan(KEY)
    statuses = set()
    async with aiohttp.ClientSession() as http:
        for status in (400, 401, 404, 500):
            async with Hostile(_echo(status, as_json=True)) as server:

                def factory(base_url: str = server.base_url) -> cf.Client:
                    return cf.Client(api_key=KEY, base_url=base_url, retry=ONCE)

                async with (
                    _serve(create_app(client_factory=factory)) as url,
                    http.get(url + "/funnel/pipe_1") as answer,
                ):
                    statuses.add(answer.status)
                    scan.texts += [await answer.text(), repr(dict(answer.headers))]
    assert len(statuses) >= 2
    assert all(status >= 400 for status in statuses)
    scan.check(caplog.records)
