"""
Bounded memory against hostile responses: the client's peak RSS growth per scenario.

    python benchmarks/bench_bounded.py [--mib 800] [--max-response-mib 32]

A hostile server runs in a child process (so its buffers are not counted) and answers
every request with one scenario: an 800 MB 200 with a true ``Content-Length``, the same
800 MB 200 without one (connection-delimited), an endless chunked 200, and an endless
chunked 500. This process runs one client call per scenario, each in a fresh child of
its own, which reports its own peak RSS (``getrusage``) before and after the call, the
error it got, and how many bytes the server managed to write before the client hung up.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SERVER = r"""
import asyncio, sys
MIB = int(sys.argv[1])
CHUNK = b" " * 65536

async def serve(reader, writer):
    sent = 0
    try:
        await reader.readuntil(b"\r\n\r\n")
        scenario = SCENARIO[0]
        if scenario == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MIB * 2**20))
        elif scenario == "close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        else:
            status = b"500" if scenario == "chunked-500" else b"200"
            writer.write(b"HTTP/1.1 " + status + b" X\r\nTransfer-Encoding: chunked\r\n\r\n")
        framed = CHUNK if scenario in ("length", "close") else b"10000\r\n" + CHUNK + b"\r\n"
        limit = MIB * 2**20 if scenario in ("length", "close") else None
        while limit is None or sent < limit:
            writer.write(framed)
            sent += len(CHUNK)
            await writer.drain()
        await asyncio.sleep(3600)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        print(sent, flush=True)
        writer.close()

SCENARIO = [sys.argv[2]]

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

CLIENT = r"""
import asyncio, json, resource, sys, time
import closefunnel as cf

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

async def main():
    url, cap = sys.argv[1], int(sys.argv[2])
    before = peak_mib()
    started = time.monotonic()
    query = cf.FunnelQuery(pipeline="pipe_1", report_range="this-month")
    policy = cf.RetryPolicy(attempts=1)
    async with cf.Client(
        api_key="api_x.y", base_url=url, retry=policy, max_response_bytes=cap, timeout=120
    ) as client:
        try:
            await client.funnel_totals(query)
            error = "none"
        except cf.CloseFunnelError as exc:
            error = f"{type(exc).__name__}: {str(exc)[:90]}"
    print(json.dumps({
        "growth_mib": peak_mib() - before,
        "seconds": time.monotonic() - started,
        "error": error,
    }))

asyncio.run(main())
"""


def run(scenario: str, mib: int, cap: int) -> dict[str, object]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(mib), scenario], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/api/v1/", str(cap)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        result: dict[str, object] = json.loads(done.stdout)
        sent_line = server.stdout.readline().strip()
        result["server_sent_mib"] = int(sent_line) / 2**20 if sent_line else None
        return result
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--mib", type=int, default=800, help="size of the finite bodies")
    parser.add_argument("--max-response-mib", type=int, default=32)
    args = parser.parse_args()
    cap = args.max_response_mib * 2**20
    started = time.time()
    print(f"max_response_bytes = {args.max_response_mib} MiB; finite bodies {args.mib} MiB")
    print("| response | client peak RSS growth MiB | seconds | server wrote MiB | error |")
    print("|---|---|---|---|---|")
    for scenario in ("length", "close", "chunked-200", "chunked-500"):
        result = run(scenario, args.mib, cap)
        sent = result["server_sent_mib"]
        print(
            f"| {scenario} | {result['growth_mib']:.1f} | {result['seconds']:.2f} | "
            f"{'-' if sent is None else f'{sent:.0f}'} | {result['error']} |"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(driver peak RSS {peak:.0f} MiB, {time.time() - started:.1f}s)")


if __name__ == "__main__":
    main()
