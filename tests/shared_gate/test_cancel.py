"""
A cancelled caller never leaks a lease, even when it is cancelled while the
dispatcher's script call is in flight, and ``aclose()`` with calls in flight gives back
every lease. Redis is reached through a slow loopback proxy, so script calls take long
enough for the seeded random cancellations to land inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

import closefunnel as cf
from closefunnel._auth import Credentials
from closefunnel._redis_gate import gate_keys
from closefunnel.emulator import Emulator

from .conftest import distinct_queries, emulator_config

GROUP = "POST report/funnel"
DELAY = 0.004  # each way, per chunk


@contextlib.asynccontextmanager
async def slow_proxy(host: str, port: int) -> AsyncIterator[int]:
    """A TCP proxy on loopback that holds every chunk *DELAY* seconds before passing it on."""
    tasks: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(DELAY)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        for task in (
            asyncio.ensure_future(pump(reader, up_writer)),
            asyncio.ensure_future(pump(up_reader, writer)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.parametrize("seed", [5, 6])
async def test_cancelled_callers_and_aclose_leave_no_lease(
    redis_url: str, sync_redis: Any, prefix: str, seed: int
) -> None:
    rng = random.Random(seed)
    host, port = (
        sync_redis.connection_pool.connection_kwargs["host"],
        int(sync_redis.connection_pool.connection_kwargs["port"]),
    )
    db = int(sync_redis.connection_pool.connection_kwargs.get("db", 0))
    async with (
        Emulator(emulator_config(latency=0.02, jitter=0.01)) as emu,
        slow_proxy(host, port) as proxy_port,
    ):
        keys = gate_keys(prefix, Credentials.api_key(emu.api_key).key_id, GROUP)
        queries = distinct_queries(emu, 90)
        client = cf.Client(
            api_key=emu.api_key,
            base_url=emu.base_url,
            # The session's database, as the fixture chose it (not always 0).
            redis=f"redis://127.0.0.1:{proxy_port}/{db}",
            redis_prefix=prefix,
            max_concurrency=4,
        )
        try:
            async with asyncio.timeout(60):
                # Callers cancelled at seeded random moments: queued, mid script call,
                # granted but not yet resumed, or with the request on the wire.
                tasks = [asyncio.ensure_future(client.funnel_totals(q)) for q in queries[:60]]
                for task in tasks:
                    if rng.random() < 0.7:
                        asyncio.get_running_loop().call_later(rng.uniform(0, 0.3), task.cancel)
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                cancelled = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
                finished = sum(isinstance(o, cf.FunnelTotals) for o in outcomes)
                assert [o for o in outcomes if isinstance(o, Exception)] == []
                assert cancelled > 10, (cancelled, finished)
                assert finished > 5, (cancelled, finished)
                # Settles reach Redis with the dispatcher's next call: wait for it, not
                # for the lease to expire (that would take the attempt timeout + 5 s).
                while sync_redis.zcard(keys[1]) or client.gate_snapshots()[GROUP].in_flight:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                snapshot = client.gate_snapshots()[GROUP]
                assert (snapshot.in_flight, snapshot.waiting, snapshot.shared) == (0, 0, True)

                # aclose() while calls are queued, mid script call and on the wire.
                tasks = [asyncio.ensure_future(client.funnel_totals(q)) for q in queries[60:]]
                await asyncio.sleep(rng.uniform(0.02, 0.15))
                await client.aclose()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await client.aclose()
    assert sync_redis.zcard(keys[1]) == 0
    assert sync_redis.hlen(keys[2]) == 0
    snapshot = client.gate_snapshots()[GROUP]
    assert (snapshot.in_flight, snapshot.waiting) == (0, 0)
    assert int(sync_redis.hget(keys[0], "seq")) == int(sync_redis.hget(keys[0], "seen"))


async def test_caller_cancelled_after_its_grant_before_it_resumes_refunds(
    redis_url: str, sync_redis: Any, prefix: str
) -> None:
    """The narrowest window: the dispatcher handed the permit over, the caller has not run."""
    import redis.asyncio as aioredis

    from closefunnel._redis_gate import RedisGate

    conn = aioredis.Redis.from_url(redis_url)
    gate = RedisGate(GROUP, redis=conn, key_id="api_cancel", max_concurrency=4, prefix=prefix)
    keys = gate_keys(prefix, "api_cancel", GROUP)
    hits = 0
    try:
        async with asyncio.timeout(30):
            for _ in range(40):
                task = asyncio.ensure_future(gate.acquire())
                await asyncio.sleep(0)
                future = gate._waiters[-1][0]
                while not future.done():  # noqa: ASYNC110
                    await asyncio.sleep(0)
                if not task.done():
                    hits += task.cancel()  # granted, and the caller never resumed
                with contextlib.suppress(asyncio.CancelledError):
                    permit = await task
                    permit.release()
            while gate.snapshot().in_flight or sync_redis.zcard(keys[1]):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await gate.aclose()
        await conn.aclose()
    assert hits > 0, "the window was never hit"
    assert sync_redis.zcard(keys[1]) == 0
    assert int(sync_redis.hget(keys[0], "seq")) == int(sync_redis.hget(keys[0], "seen"))


async def test_acquire_on_a_closed_gate_raises_instead_of_hanging(
    redis_url: str, prefix: str
) -> None:
    import redis.asyncio as aioredis

    from closefunnel._redis_gate import RedisGate

    conn = aioredis.Redis.from_url(redis_url)
    gate = RedisGate(GROUP, redis=conn, key_id="api_closed", max_concurrency=2, prefix=prefix)
    try:
        (await gate.acquire()).release()
        await gate.aclose()
        async with asyncio.timeout(5):
            with pytest.raises(RuntimeError, match="closed"):
                await gate.acquire()
    finally:
        await conn.aclose()
