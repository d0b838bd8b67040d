"""Smaller trust-boundary guarantees: logging, closing in flight, clear keys, repeated users."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from hostile_server import Hostile, Request, response

import closefunnel as cf

SAMPLE = (Path(__file__).parents[1] / "samples" / "funnel_totals_response.json").read_bytes()
SAMPLE_CSV = (Path(__file__).parents[1] / "samples" / "funnel_totals_response.csv").read_bytes()


def _query(pipeline: str) -> cf.FunnelQuery:
    return cf.FunnelQuery(pipeline=pipeline, report_range="this-month")


@pytest.mark.slow
def test_retry_warnings_stay_off_stderr_when_logging_is_not_configured() -> None:
    """A program that never configures logging gets no closefunnel warnings on stderr."""
    script = textwrap.dedent(
        """
        import asyncio
        import closefunnel as cf
        from closefunnel.emulator import Emulator, EmulatorConfig

        async def main():
            config = EmulatorConfig(fault_rate=1.0, faults=("500",), opportunities=50)
            async with Emulator(config) as emu:
                policy = cf.RetryPolicy(attempts=3, backoff_initial=0, backoff_max=0)
                async with cf.Client(
                    api_key=emu.api_key, base_url=emu.base_url, retry=policy
                ) as client:
                    try:
                        await client.pipelines()
                    except cf.ServerError:
                        print("retried and gave up")
                import logging
                logging.basicConfig()  # configured: now the records show
                async with cf.Client(
                    api_key=emu.api_key, base_url=emu.base_url, retry=policy
                ) as client:
                    try:
                        await client.pipelines()
                    except cf.ServerError:
                        pass

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "retried and gave up\n"
    unconfigured, _, configured = done.stderr.partition("WARNING:closefunnel:")
    assert unconfigured == ""  # the first client's two retries printed nothing
    assert "closefunnel.retry" in configured  # an application that configures logging sees them


async def _never_answer(_: Request, __: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


async def test_aclose_ends_calls_in_flight_with_client_closed_error() -> None:
    """Callers not cancelled themselves get ClientClosedError; a cancelled one, CancelledError."""
    async with Hostile(_never_answer) as server:
        client = cf.Client(api_key="api_x.y", base_url=server.base_url)
        async with client:
            first = asyncio.ensure_future(client.funnel_totals(_query("pipe_1")))
            shared = asyncio.ensure_future(client.funnel_totals(_query("pipe_1")))
            listing = asyncio.ensure_future(client.pipelines())
            mine = asyncio.ensure_future(client.funnel_totals(_query("pipe_2")))
            await server.wait_requests(3)
            mine.cancel()
            with pytest.raises(asyncio.CancelledError):
                await mine
            await client.aclose()
        for task in (first, shared, listing):
            with pytest.raises(cf.ClientClosedError, match="closed while it was in flight"):
                await task
        with pytest.raises(cf.ClientClosedError, match="is closed"):
            await client.funnel_totals(_query("pipe_3"))
    assert issubclass(cf.ClientClosedError, cf.CloseFunnelError)
    assert issubclass(cf.ClientClosedError, RuntimeError)


@pytest.mark.parametrize("started", [True, False], ids=["on-the-wire", "just-started"])
async def test_aclose_ends_a_bulk_run_with_client_closed_items(started: bool) -> None:
    """
    A bulk run in flight when the client closes yields ClientClosedError items and ends:
    whether its requests were on the wire or their work had not begun yet.
    """
    async with Hostile(_never_answer) as server:
        client = cf.Client(api_key="api_x.y", base_url=server.base_url)
        queries = [_query(f"pipe_{n}") for n in range(3)]

        async def drain() -> list[cf.BulkItem[cf.FunnelTotals]]:
            return [item async for item in client.totals_many(queries)]

        async with client:
            run = asyncio.ensure_future(drain())
            if started:
                await server.wait_requests(3)
            else:
                await asyncio.sleep(0)  # the run has started its calls, not their work
            await client.aclose()
        items = await run
    assert [type(item.error) for item in items] == [cf.ClientClosedError] * 3


async def test_a_caller_cancelled_while_the_client_closes_still_gets_cancelled_error() -> None:
    """Both at once: the caller's own cancellation wins over the close."""
    async with Hostile(_never_answer) as server:
        client = cf.Client(api_key="api_x.y", base_url=server.base_url)
        async with client:
            task = asyncio.ensure_future(client.pipelines())
            await server.wait_requests(1)
            task.cancel()
            await client.aclose()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    "url",
    [
        "http://api.close.com/api/v1/",
        "http://10.0.0.5:8080/api/v1/",
        "http://[2001:db8::1]/api/v1/",
        "http://127.0.0.1.example.com/api/v1/",
        "http://localhostx/api/v1/",
    ],
)
def test_plain_http_beyond_this_machine_is_refused(url: str) -> None:
    """The key would travel in clear text: refused unless the caller opts in."""
    with pytest.raises(cf.InvalidQueryError, match="clear text") as caught:
        cf.Client(api_key="api_x.y", base_url=url)
    assert (caught.value.field, caught.value.rule) == ("base_url", "https")
    assert cf.Client(api_key="api_x.y", base_url=url, allow_insecure_http=True).base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/api/v1/",
        "http://127.8.9.10/api/v1/",
        "http://[::1]:9/api/v1/",
        "http://localhost:9/api/v1/",
        "http://LOCALHOST/api/v1/",
        "https://api.example.com/api/v1/",
    ],
)
def test_loopback_http_and_any_https_are_allowed(url: str) -> None:
    """The emulator's own URLs and every https:// URL need no opt-in."""
    assert cf.Client(api_key="api_x.y", base_url=url).base_url == url


def test_allow_insecure_http_must_be_a_bool() -> None:
    """A string such as "no" would be truthy: refused."""
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client(api_key="api_x.y", allow_insecure_http="no")  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == ("allow_insecure_http", "type")


def _duplicated_json() -> bytes:
    data = orjson.loads(SAMPLE)
    data["data"].append(data["data"][0])
    return orjson.dumps(data)


def _duplicated_csv() -> bytes:
    lines = SAMPLE_CSV.splitlines(keepends=True)
    return b"".join([*lines, lines[1]])


async def test_a_report_that_lists_a_user_twice_is_a_decode_error() -> None:
    """JSON and CSV: a repeated user_id is an error, not a row silently replaced in the merge."""

    async def duplicated(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.headers.get("accept") == "text/csv":
            writer.write(response(200, _duplicated_csv(), content_type="text/csv"))
        else:
            writer.write(response(200, _duplicated_json()))

    once = cf.RetryPolicy(attempts=1)
    async with (
        Hostile(duplicated) as server,
        cf.Client(api_key="api_x.y", base_url=server.base_url, retry=once) as client,
    ):
        for format in ("json", "csv"):
            with pytest.raises(cf.ResponseDecodeError, match="more than once") as caught:
                await client.funnel_totals(_query("pipe_1"), format=format)  # type: ignore[arg-type]
            assert caught.value.messages
            with pytest.raises(cf.ResponseDecodeError, match="more than once"):
                await client.compare_totals(_query("pipe_1"), "last-month", format=format)  # type: ignore[arg-type]
    with pytest.raises(cf.ResponseDecodeError, match="more than once"):
        cf.FunnelTotals.from_json(_duplicated_json())
    with pytest.raises(cf.ResponseDecodeError, match="more than once"):
        cf.FunnelTotals.from_csv(_duplicated_csv())
