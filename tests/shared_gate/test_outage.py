"""
Redis stopped mid-run: every query still ends with a result through the local gate,
with one WARNING per outage; once the server is back on its port the client shares the
gate again (one more WARNING says so). With ``redis_fallback="fail"`` callers get
:class:`closefunnel.GateUnavailableError` and nothing is sent upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator

from .conftest import RedisServer, RedisSwitch, distinct_queries, emulator_config, totals_log

pytestmark = pytest.mark.slow  # Redis servers stopped and started

GROUP = "POST report/funnel"


def _gate_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "closefunnel.gate" and r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def _ok(client: cf.Client, queries: list[cf.FunnelQuery]) -> list[Any]:
    items = [item async for item in client.totals_many(queries)]
    assert [item.error for item in items if item.error is not None] == []
    return items


async def test_redis_stopped_mid_run_falls_back_then_shares_again(
    dedicated_redis: Callable[[], RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio as aioredis

    caplog.set_level(logging.WARNING, logger="closefunnel")
    server = dedicated_redis()
    async with Emulator(emulator_config(latency=0.02)) as emu:
        queries = distinct_queries(emu, 40)
        async with (
            asyncio.timeout(60),
            cf.Client(
                api_key=emu.api_key, base_url=emu.base_url, redis=server.url, max_concurrency=4
            ) as client,
        ):
            await _ok(client, queries[:4])
            assert client.gate_snapshots()[GROUP].shared is True

            # Stop Redis while a batch is under way: every query still ends with a result.
            results = 0
            async for item in client.totals_many(queries[4:24]):
                assert item.error is None, item.error
                results += 1
                if results == 3:
                    await asyncio.to_thread(server.stop)
            assert results == 20
            assert client.gate_snapshots()[GROUP].shared is False
            await _ok(client, queries[24:28])
            assert client.gate_snapshots()[GROUP].shared is False
            assert len(_gate_warnings(caplog, "unreachable")) == 1
            assert _gate_warnings(caplog, "Redis answers again") == []

            # Back on the same port: a later call goes through Redis again.
            await asyncio.to_thread(server.start)
            spare = iter(queries[28:])
            while not client.gate_snapshots()[GROUP].shared:
                await _ok(client, [next(spare)])
                await asyncio.sleep(0.1)
            await _ok(client, [next(spare)])
            snapshot = client.gate_snapshots()[GROUP]
            assert snapshot.shared is True
            assert snapshot.in_flight == 0
        log = totals_log(emu)
    conn = aioredis.Redis.from_url(server.url)
    try:
        states = [k async for k in conn.scan_iter(match="closefunnel:*:state")]
        assert len(states) == 1
        assert int(await conn.hget(states[0], "seq") or 0) >= 1  # the fresh server saw it
    finally:
        await conn.aclose()
    assert len(_gate_warnings(caplog, "unreachable")) == 1
    assert len(_gate_warnings(caplog, "Redis answers again")) == 1
    assert sum(e.status == 200 for e in log) == len(log)


async def test_redis_fallback_fail_raises_and_sends_nothing(
    dedicated_redis: Callable[[], RedisServer],
) -> None:
    server = dedicated_redis()
    server.stop()  # nothing listens on its port now
    async with Emulator(emulator_config()) as emu:
        queries = distinct_queries(emu, 5)
        async with (
            asyncio.timeout(30),
            cf.Client(
                api_key=emu.api_key, base_url=emu.base_url, redis=server.url, redis_fallback="fail"
            ) as client,
        ):
            items = [item async for item in client.totals_many(queries)]
            with pytest.raises(cf.GateUnavailableError):
                await client.funnel_totals(queries[0])
        assert totals_log(emu) == []
    assert len(items) == len(queries)
    assert all(isinstance(item.error, cf.GateUnavailableError) for item in items), items


async def test_permits_in_flight_through_an_outage_are_given_back_when_redis_returns(
    sync_redis: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """
    Redis unreachable (its data intact) while permits are out: their settles reach it
    once it answers again, instead of their leases blocking every process until they
    expire (the attempt timeout plus 5 s: 35 s by default).
    """
    from closefunnel._auth import Credentials
    from closefunnel._redis_gate import gate_keys

    caplog.set_level(logging.WARNING, logger="closefunnel")
    kwargs = sync_redis.connection_pool.connection_kwargs
    switch = RedisSwitch(kwargs["host"], int(kwargs["port"]), int(kwargs.get("db", 0)))
    async with Emulator(emulator_config(latency=0.5)) as emu, switch as url:
        leases = gate_keys(prefix, Credentials.api_key(emu.api_key).key_id, GROUP)[1]
        queries = distinct_queries(emu, 5)
        async with (
            asyncio.timeout(30),
            cf.Client(
                api_key=emu.api_key, base_url=emu.base_url, redis=url, redis_prefix=prefix
            ) as client,
        ):
            batch = asyncio.ensure_future(_ok(client, queries[:4]))
            while sync_redis.zcard(leases) < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            switch.set_cut(True)  # the four answers come back while Redis is unreachable
            await batch
            assert len(_gate_warnings(caplog, "unreachable")) == 1
            assert sync_redis.zcard(leases) == 4  # nobody could tell Redis yet
            switch.set_cut(False)
            while not client.gate_snapshots()[GROUP].shared:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            # Well before the leases (35 s) expire: the settles were sent on return.
            while sync_redis.zcard(leases):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await _ok(client, queries[4:])
    assert sync_redis.zcard(leases) == 0


async def test_one_warning_per_outage_however_many_endpoint_groups(
    dedicated_redis: Callable[[], RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Lists and reports are two gates of one client: Redis going away is one WARNING."""
    caplog.set_level(logging.WARNING, logger="closefunnel")
    server = dedicated_redis()
    async with Emulator(emulator_config()) as emu:
        queries = distinct_queries(emu, 2)
        async with (
            asyncio.timeout(60),
            cf.Client(api_key=emu.api_key, base_url=emu.base_url, redis=server.url) as client,
        ):
            await client.pipelines()
            await _ok(client, queries[:1])
            await asyncio.to_thread(server.stop)
            assert await client.pipelines()
            await _ok(client, queries[1:])
            groups = client.gate_snapshots()
            assert len(groups) == 2
            assert not any(snapshot.shared for snapshot in groups.values())
    assert len(_gate_warnings(caplog, "unreachable")) == 1
