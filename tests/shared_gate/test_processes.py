"""
Real OS processes on one key: three workers sharing the gate through Redis draw no 429s
and lose nothing; a worker killed with SIGKILL while holding permits gives them back
when its leases expire, with nobody's help.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

import closefunnel as cf
from closefunnel._auth import Credentials
from closefunnel._redis_gate import RedisGate, gate_keys
from closefunnel.emulator import Emulator

from .conftest import distinct_queries, emulator_config, totals_log

WORKER = Path(__file__).with_name("_worker.py")
GROUP = "POST report/funnel"


async def _spawn(
    emu: Emulator, queries: list[cf.FunnelQuery], **spec: Any
) -> asyncio.subprocess.Process:
    spec.update(
        api_key=emu.api_key,
        base_url=emu.base_url,
        queries=[[q.pipeline, q.report_range, list(q.users)] for q in queries],
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), json.dumps(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def _kill(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()


@pytest.mark.slow
async def test_three_processes_share_one_budget(redis_url: str, prefix: str) -> None:
    n = 36
    async with Emulator(emulator_config(rps=10, window=1.0, burst=1.0, latency=0.01)) as emu:
        queries = distinct_queries(emu, n)
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i in range(3):
                procs.append(await _spawn(emu, queries[i::3], redis=redis_url, prefix=prefix))
            async with asyncio.timeout(90):
                outputs = await asyncio.gather(*(p.communicate() for p in procs))
        finally:
            _kill(procs)
        log = totals_log(emu)
    reports = []
    for (out, err), proc in zip(outputs, procs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        reports.append(json.loads(out.decode().splitlines()[-1]))
    assert [r["errors"] for r in reports] == [[], [], []]
    assert [r["ok"] for r in reports] == [12, 12, 12]  # nothing lost
    assert sum(e.status == 429 for e in log) == 0, [e.status for e in log]
    assert sum(e.status == 200 for e in log) == n


@pytest.mark.slow
async def test_sigkilled_worker_gives_its_permits_back_when_leases_expire(
    redis_url: str, prefix: str
) -> None:
    import redis.asyncio as aioredis

    conn = aioredis.Redis.from_url(redis_url)
    # Answers take 3 s; the worker's attempt timeout is 1 s, so its leases last 6 s.
    async with Emulator(emulator_config(latency=3.0)) as emu:
        key_id = Credentials.api_key(emu.api_key).key_id
        state, leases = gate_keys(prefix, key_id, GROUP)[:2]
        proc = await _spawn(
            emu, distinct_queries(emu, 8), redis=redis_url, prefix=prefix, timeout=1.0
        )
        gate: RedisGate | None = None
        try:
            async with asyncio.timeout(30):
                # The cold start's four permits.
                while await conn.zcard(leases) < 4:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                held = await conn.zcard(leases)
                assert held == 4
                gate = RedisGate(
                    GROUP,
                    redis=conn,
                    key_id=key_id,
                    max_concurrency=8,
                    lease_ttl=60.0,
                    prefix=prefix,
                )
                # The dead worker's leases block the cold start until they expire...
                first = asyncio.ensure_future(gate.acquire())
                done, _ = await asyncio.wait([first], timeout=0.5)
                assert not done, "granted while the dead worker's leases were still live"
                assert await conn.zcard(leases) == 4
                # ... and then the full budget is back: every permit this process may hold.
                permits = [await first]
                permits += await asyncio.gather(*(gate.acquire() for _ in range(7)))
                assert len(permits) == 8
                snapshot = gate.snapshot()
                assert snapshot.shared
                assert snapshot.in_flight == 8
                assert await conn.zcard(leases) == 8  # only ours
                for permit in permits:
                    permit.release(refund=True)
        finally:
            _kill([proc])
            if gate is not None:
                await gate.aclose()
            leftover = await conn.zcard(leases)
            seen = await conn.hget(state, "seen")
            await conn.aclose()
    assert leftover == 0
    assert seen is not None
    assert int(seen) >= 4
