"""
A process's ``max_concurrency`` holds across an outage, in both directions: the shared
leases still out when Redis fails count against the local gate it falls back to, and the
local permits still out when Redis answers again count against the shared gate. (Before,
a burst right after an outage began could put the cap plus the leases in flight.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from closefunnel import _redis_gate
from closefunnel._gate import GatePermit
from closefunnel._redis_gate import RedisGate, gate_keys

from .conftest import switch_to

GROUP = "POST report/funnel"


async def test_one_cap_for_shared_and_local_permits_across_an_outage(
    sync_redis: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.asyncio as aioredis

    monkeypatch.setattr(_redis_gate, "_RECHECK", 0.05)
    leases = gate_keys(prefix, "api_cap", GROUP)[1]
    switch = switch_to(sync_redis)
    async with switch as url:
        conn = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        gate = RedisGate(GROUP, redis=conn, key_id="api_cap", max_concurrency=2, prefix=prefix)
        local = gate._local
        try:
            async with asyncio.timeout(20):
                shared = [await gate.acquire(), await gate.acquire()]
                assert gate.snapshot().in_flight == 2

                # Redis goes; two more callers queue (at the cap: nothing is asked), then
                # one lease comes back, the settle finds Redis gone and both fall back.
                switch.set_cut(True)
                burst = [asyncio.ensure_future(gate.acquire()) for _ in range(2)]
                await asyncio.sleep(0)
                shared[0].release()
                while local.snapshot().in_flight + local.snapshot().waiting < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                assert not gate.snapshot().shared
                # One lease is still out: the local gate lets one of the two go, not both.
                assert (local.snapshot().in_flight, local.snapshot().waiting) == (1, 1)
                assert gate.snapshot().in_flight == 2
                shared[1].release()  # during the outage: its slot goes to the local queue
                fallen: list[GatePermit] = list(await asyncio.gather(*burst))
                assert (local.snapshot().in_flight, gate.snapshot().in_flight) == (2, 2)

                # Redis back while both local permits are out: shared callers wait for them.
                switch.set_cut(False)
                while not gate.snapshot().shared:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                after = [asyncio.ensure_future(gate.acquire()) for _ in range(2)]
                await asyncio.sleep(0)
                fallen[0].release()
                done, _ = await asyncio.wait(after, return_when=asyncio.FIRST_COMPLETED)
                assert done == {after[0]}
                await asyncio.sleep(0.05)  # a dispatcher round more changes nothing
                assert not after[1].done()
                assert gate.snapshot().in_flight == 2
                fallen[1].release()
                back = [after[0].result(), await after[1]]
                assert sync_redis.zcard(leases) == 2
                for permit in back:
                    permit.release()
                while gate.snapshot().in_flight or sync_redis.zcard(leases):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            await gate.aclose()
            await conn.aclose()
    assert int(sync_redis.hget(gate_keys(prefix, "api_cap", GROUP)[0], "seen")) == 4
