"""
Run every benchmark, print its table and record it in benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick]     (what ``tox -e bench`` runs; ~8-10 minutes)

Each benchmark runs in its own subprocess with ``--record`` (so one crashing or leaking
does not skew the next), in this order: decode, compare, rate limit, scale, and the
emulator's own throughput benchmark (bench_emulator.py, when present).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import record

HERE = Path(__file__).parent

#: (script, arguments); --quick shrinks each to a smoke run.
FULL: list[tuple[str, list[str]]] = [
    ("bench_decode.py", ["--budget", "3"]),
    ("bench_compare.py", ["--reps", "7"]),
    ("bench_ratelimit.py", ["--n", "200"]),
    ("bench_scale.py", ["--n", "10000", "--small", "2000"]),
    ("bench_emulator.py", ["--seconds", "3"]),
    ("bench_multiprocess.py", ["--n", "200"]),
]
QUICK: list[tuple[str, list[str]]] = [
    ("bench_decode.py", ["--sizes", "100", "1000", "--budget", "0.5"]),
    ("bench_compare.py", ["--reps", "2", "--max-k", "2"]),
    ("bench_ratelimit.py", ["--n", "60", "--only", "closefunnel", "naive-gather"]),
    ("bench_scale.py", ["--n", "1000", "--small", "200"]),
    ("bench_emulator.py", ["--seconds", "1"]),
    ("bench_multiprocess.py", ["--n", "40", "--procs", "1", "2"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    failures = 0
    started = time.monotonic()
    for script, extra in QUICK if args.quick else FULL:
        path = HERE / script
        if not path.exists():
            print(f"== {script}: not present, skipped")
            continue
        recorded = script != "bench_emulator.py"  # the emulator's script has no --record
        command = [sys.executable, str(path), *extra]
        if recorded and not args.no_record:
            command.append("--record")
        print(f"== {' '.join(['python', f'benchmarks/{script}', *command[2:]])}", flush=True)
        t0 = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        print(result.stdout, end="")
        if result.returncode != 0:
            failures += 1
            print(result.stderr[-4000:], file=sys.stderr)
        elif not recorded and not args.no_record:
            shown = " ".join(["python", f"benchmarks/{script}", *extra])
            record(
                "emulator",
                "Emulator throughput (bench_emulator.py)",
                "```\n" + result.stdout + "```",
                command=shown,
            )
        print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    print(f"all benchmarks: {time.monotonic() - started:.0f} s, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
