"""
Many processes on one API key: does the rate-limit gate hold when N workers share a key?

    python benchmarks/bench_multiprocess.py [--n 200] [--rps 20] [--procs 1 2 4 8] [--record]

One emulator (in this process, loopback) throttles one key at R requests/s (burst 1,
1 s window, 15 +- 5 ms latency). N real OS processes (this script with ``--child``)
split the same N distinct reports and fetch them at once, 8 in flight each, with:

- ``local``: each process its own in-process gate (what every worker did before);
- ``redis``: one shared gate through Redis (``Client(redis=...)``);
- ``share``: each process its own gate plus aiolimiter at R/N, a fixed per-process share.

Everything is computed from the emulator's log: rate % (ideal time from the first to the
last accepted request over the achieved one), 429s per 1,000 accepted, lost queries, and
per process the longest gap between two of its results (a starved process shows a long
gap). Then, with the shared gate: a worker holding permits is killed with SIGKILL (how
long until the full rate is back, against the lease time), Redis is stopped mid-run
(queries lost), and the gate's own cost per request, local vs Redis, without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import NOW, TOTALS_PATH, Row, record, table, take_queries

import closefunnel as cf
from closefunnel.emulator import Emulator, EmulatorConfig

CONCURRENCY = 8
MODES = ("local", "redis", "share")
HERE = Path(__file__).resolve()


# -- a child process: one worker -------------------------------------------------------


async def child(args: argparse.Namespace) -> dict[str, Any]:
    if os.environ.get("CLOSEFUNNEL_BENCH_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)6.0f %(message)s")
        logging.getLogger("closefunnel").setLevel(logging.DEBUG)
    queries = take_queries(args.pipelines.split(","), args.users.split(","), args.n)
    mine = queries[args.index :: args.procs]
    options: dict[str, Any] = {"max_concurrency": CONCURRENCY, "timeout": args.timeout}
    if args.mode == "redis":
        options.update(redis=args.redis, redis_prefix=args.prefix)
    delay = args.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    done: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    async with cf.Client(api_key=args.api_key, base_url=args.base_url, **options) as client:
        if args.mode == "share":
            from aiolimiter import AsyncLimiter

            limiter = AsyncLimiter(args.rps / args.procs, 1.0)
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(query: cf.FunnelQuery) -> None:
                async with semaphore, limiter:
                    try:
                        await client.funnel_totals(query)
                    except cf.CloseFunnelError as exc:
                        errors.append(type(exc).__name__)
                done.append(time.monotonic())

            await asyncio.gather(*(one(q) for q in mine))
        else:
            async for item in client.totals_many(mine):
                done.append(time.monotonic())
                if item.error is not None:
                    errors.append(type(item.error).__name__)
    marks = [started, *sorted(done)]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    return {
        "queries": len(mine),
        "ok": len(done) - len(errors),
        "errors": errors,
        "longest_gap": max(gaps, default=0.0),
    }


# -- the parent: one emulator, N children ------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of our own on a free port in a temporary directory (stoppable)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="cf-bench-redis-")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH: install Redis to run this benchmark")
        self.proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


async def spawn(
    emu: Emulator, mode: str, index: int, procs: int, n: int, rps: float, redis: str,
    prefix: str, start_at: float, attempt_timeout: float,
) -> asyncio.subprocess.Process:  # fmt: skip
    data = emu.dataset
    return await asyncio.create_subprocess_exec(
        sys.executable, str(HERE), "--child", "--mode", mode, "--index", str(index),
        "--procs", str(procs), "--n", str(n), "--rps", str(rps), "--base-url", emu.base_url,
        "--api-key", emu.api_key, "--redis", redis, "--prefix", prefix,
        "--start-at", repr(start_at), "--timeout", str(attempt_timeout),
        "--pipelines", ",".join(p.id for p in data.pipelines),
        "--users", ",".join(u.id for u in data.users),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


def emulator_config(rps: float) -> EmulatorConfig:
    return EmulatorConfig(
        now=NOW, seed=1, rps=rps, burst=1.0, window=1.0, latency=0.015, jitter=0.005,
        opportunities=3_000, pipelines=3, users=12,
    )  # fmt: skip


def log_metrics(emu: Emulator, n: int, ok: int, rps: float) -> Row:
    entries = [e for e in emu.log if e.path == TOTALS_PATH]
    accepted = sorted(e.time for e in entries if e.status == 200)
    limited = sum(1 for e in entries if e.status == 429)
    ideal = (math.ceil(len(accepted) / rps) - 1) if accepted else 0.0
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    return {
        "accepted": len(accepted),
        "rate %": 100 * ideal / span if span > 0 else float("nan"),
        "429/1k": 1000 * limited / max(1, len(accepted)),
        "lost": n - ok,
    }


async def run_one(
    mode: str, procs: int, *, n: int, rps: float, redis: str, attempt_timeout: float = 5.0
) -> Row:
    async with Emulator(emulator_config(rps)) as emu:
        prefix = f"bench-{os.getpid()}-{time.time_ns()}"
        start_at = time.time() + 1.5  # every child imports and connects before this
        children = [
            await spawn(emu, mode, i, procs, n, rps, redis, prefix, start_at, attempt_timeout)
            for i in range(procs)
        ]
        outputs = await asyncio.gather(*(c.communicate() for c in children))
        reports = [json.loads(out) for out, _ in outputs]
        ok = sum(r["ok"] for r in reports)
        row: Row = {"gate": mode, "processes": procs}
        row.update(log_metrics(emu, n, ok, rps))
        row["longest gap s"] = max(r["longest_gap"] for r in reports)
        return row


async def run_kill(*, n: int, rps: float, redis: str, lease: float) -> Row:
    """Four workers share the gate; one is SIGKILLed holding permits after 2 s."""
    attempt_timeout = lease - 5.0  # the client's lease is its attempt timeout plus 5 s
    config = emulator_config(rps)
    async with Emulator(config) as emu:
        prefix = f"bench-kill-{os.getpid()}-{time.time_ns()}"
        start_at = time.time() + 1.5
        procs = 4
        children = [
            await spawn(emu, "redis", i, procs, n, rps, redis, prefix, start_at, attempt_timeout)
            for i in range(procs)
        ]
        await asyncio.sleep(start_at - time.time() + 2.0)
        killed_at = time.monotonic()
        children[0].send_signal(signal.SIGKILL)
        outputs = await asyncio.gather(*(c.communicate() for c in children[1:]))
        reports = [json.loads(out) for out, _ in outputs]
        accepted = sorted(e.time for e in emu.log if e.path == TOTALS_PATH and e.status == 200)
        # The first whole second after the kill in which the full rate was accepted again.
        recovered = float("nan")
        for second in range(int(lease) + 10):
            begin = killed_at + second
            count = sum(1 for t in accepted if begin <= t < begin + 1.0)
            if count >= rps:
                recovered = float(second)
                break
        survivors = n - math.ceil(n / procs)  # the killed worker's share is gone with it
        limited = sum(1 for e in emu.log if e.path == TOTALS_PATH and e.status == 429)
        return {
            "scenario": "SIGKILL of 1 of 4 workers",
            "lease s": lease,
            "full rate again after s": recovered,
            "429/1k": 1000 * limited / max(1, len(accepted)),
            "lost (survivors)": survivors - sum(r["ok"] for r in reports),
        }


async def run_redis_stop(*, n: int, rps: float) -> Row:
    """Four workers share the gate; Redis is stopped after 2 s and never comes back."""
    server = RedisServer()
    await server.start()
    try:
        async with Emulator(emulator_config(rps)) as emu:
            start_at = time.time() + 1.5
            children = [
                await spawn(emu, "redis", i, 4, n, rps, server.url, "bench-stop", start_at, 5.0)
                for i in range(4)
            ]
            await asyncio.sleep(start_at - time.time() + 2.0)
            await server.stop()
            outputs = await asyncio.gather(*(c.communicate() for c in children))
            reports = [json.loads(out) for out, _ in outputs]
            row: Row = {"scenario": "Redis stopped after 2 s (fallback: local)"}
            row.update(log_metrics(emu, n, sum(r["ok"] for r in reports), rps))
            return row
    finally:
        await server.stop()
        server.remove()


async def gate_cost(redis: str, *, permits: int = 2_000) -> list[Row]:
    """Microseconds of the gate per request (acquire, observe, release), no HTTP."""
    import redis.asyncio as aioredis

    from closefunnel._gate import RateLimitGate
    from closefunnel._ratelimit import RateLimitInfo
    from closefunnel._redis_gate import RedisGate

    info = RateLimitInfo(limit=1e9, remaining=1e9, reset=1.0)
    client = aioredis.Redis.from_url(redis)
    rows: list[Row] = []
    try:
        gates = {
            "local": RateLimitGate("POST report/funnel", max_concurrency=CONCURRENCY),
            "redis": RedisGate(
                "POST report/funnel",
                redis=client,
                key_id=f"api_cost{time.time_ns()}",
                max_concurrency=CONCURRENCY,
            ),
        }
        for name, gate in gates.items():

            async def one() -> None:
                permit = await gate.acquire()  # noqa: B023  # run before the loop moves on
                permit.observe(200, info)
                permit.release()

            async def worker(count: int) -> None:
                for _ in range(count):
                    await one()

            await asyncio.gather(*(worker(50) for _ in range(CONCURRENCY)))  # warm up
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker(permits // CONCURRENCY) for _ in range(CONCURRENCY)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            trips = getattr(gate, "round_trips", 0)
            rows.append({
                "gate": name,
                "CPU us/request": 1e6 * cpu / permits,
                "wall us/request": 1e6 * wall / permits,
                "round trips/request": trips / (permits + 50 * CONCURRENCY),
            })  # fmt: skip
            if isinstance(gate, RedisGate):
                await gate.aclose()
    finally:
        await client.aclose()
    return rows


async def main_async(args: argparse.Namespace) -> str:
    server: RedisServer | None = None
    redis = args.redis or os.environ.get("REDIS_URL")
    if not redis:
        server = RedisServer()
        await server.start()
        redis = server.url
    try:
        rows = []
        for procs in args.procs:
            for mode in MODES:
                row = await run_one(mode, procs, n=args.n, rps=args.rps, redis=redis)
                print(row, file=sys.stderr)
                rows.append(row)
        text = table(rows)
        kill = await run_kill(n=args.n, rps=args.rps, redis=redis, lease=args.lease)
        stop = await run_redis_stop(n=args.n, rps=args.rps)
        text += "\n" + table([kill]) + "\n" + table([stop])
        text += "\n" + table(await gate_cost(redis))
        return text
    finally:
        if server is not None:
            await server.stop()
            server.remove()


def main() -> None:
    logging.getLogger("closefunnel").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="distinct reports (default 200)")
    parser.add_argument("--rps", type=float, default=20.0, help="allowed rate of the key")
    parser.add_argument("--procs", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--lease", type=float, default=8.0, help="lease time of the kill run")
    parser.add_argument("--redis", default="", help="Redis URL (default: REDIS_URL or own)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    # The child's own arguments.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("mode", "base-url", "api-key", "prefix", "pipelines", "users"):
        parser.add_argument(f"--{name}", default="", help=argparse.SUPPRESS)
    for name in ("index",):
        parser.add_argument(f"--{name}", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.procs = args.procs[0]
        print(json.dumps(asyncio.run(child(args))))
        return
    text = asyncio.run(main_async(args))
    title = (
        f"Many processes on one key (N={args.n}, R={args.rps:g} rps, burst 1, window 1 s, "
        f"latency 15 +- 5 ms, {CONCURRENCY} in flight per process)"
    )
    print(title)
    print(text)
    if args.record:
        record("multiprocess", title, text)


if __name__ == "__main__":
    main()
