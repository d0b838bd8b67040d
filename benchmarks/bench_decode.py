"""
Decode and merge cost: what do typed reports cost over parsing the JSON?

    python benchmarks/bench_decode.py [--sizes 100 1000 10000 50000] [--record]

Report JSON bytes with 100, 1,000, 10,000 and 50,000 users (generated here, realistic
values, some nulls) are decoded by:

- ``json.loads``: the floor a raw-dict user pays (the target is from_json <= 1.0x this);
- ``orjson.loads``: what the classic path parses with;
- ``FunnelTotals.from_json``: msgspec straight into the frozen attrs rows (what the client
  does for every response);
- ``classic path``: orjson plus the converter's structuring, what from_json was before the
  msgspec path (it still explains every failure), as the before/after baseline in the
  same run;
- a pydantic v2 model of the same shape (strict, frozen), ``model_validate_json``;

plus the merge of a base and three compared reports of that size (``merge_comparison``,
whose per-user deltas are computed on first access, and the same merge with every
period's ``users`` read, which builds them all), and the CSV decode against its floor:
``csv.reader`` plus a ``float()`` of each numeric cell (the target is from_csv <= 2x).
Each case runs in interleaved rounds (so machine noise hits all alike); the table shows
medians per call and the ratio to ``json.loads`` (to the CSV floor for CSV rows).
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import random
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson
import pydantic
from _common import Row, median, record, table

import closefunnel as cf
from closefunnel._convert import decode
from closefunnel._models import _unique_users


def report_bytes(users: int, *, seed: int = 0) -> bytes:
    """A funnel totals report with *users* rows, as Close would send it."""
    rng = random.Random(seed)

    def metrics() -> dict[str, object]:
        won = rng.randint(0, 40)
        complete = won + rng.randint(0, 40)
        value_won = won * rng.randint(1_000, 500_000)
        value_complete = value_won + (complete - won) * rng.randint(1_000, 500_000)
        return {
            "average_time_to_win": rng.randint(3_600, 9_000_000) if won else None,
            "average_value_annualized_per_won_opportunity": value_won // won if won else 0,
            "count": complete + rng.randint(0, 80),
            "count_total_complete": complete,
            "count_total_won": won,
            "count_win_rate": round(won / complete, 4) if complete else 0,
            "sales_velocity": round(rng.uniform(0, 250_000), 2) if won else 0,
            "value_total_complete": value_complete,
            "value_total_won": value_won,
            "value_win_rate": round(value_won / value_complete, 4) if value_complete else 0,
        }

    data = [{**metrics(), "user_id": f"user_{rng.getrandbits(128):032x}"} for _ in range(users)]
    return orjson.dumps({"aggregations": metrics(), "data": data})


class _Metrics(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True, frozen=True)

    average_time_to_win: float | None
    average_value_annualized_per_won_opportunity: int
    count: int
    count_total_complete: int
    count_total_won: int
    count_win_rate: float
    sales_velocity: float
    value_total_complete: int
    value_total_won: int
    value_win_rate: float


class _UserMetrics(_Metrics):
    user_id: str


class PydanticTotals(pydantic.BaseModel):
    """The same shape as FunnelTotals, for pydantic v2."""

    model_config = pydantic.ConfigDict(strict=True, frozen=True)

    aggregations: _Metrics | None
    data: tuple[_UserMetrics, ...]


def _rounds(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        case()  # warm up (code paths, caches)
    for _ in range(rounds):
        for name, case in cases.items():
            gc.collect()
            started = time.perf_counter()
            case()
            samples[name].append(time.perf_counter() - started)
    return {name: median(values) for name, values in samples.items()}


def _csv_floor(text: str) -> object:
    """``csv.reader`` over *text* plus a float parse of each metric cell: the CSV floor."""
    rows = csv.reader(io.StringIO(text, newline=""))
    next(rows)
    return [[float(cell) if cell else None for cell in row[1:]] for row in rows]


def _classic(body: bytes) -> cf.FunnelTotals:
    """from_json as it was before the msgspec path: orjson, then the converter."""
    return _unique_users(decode(orjson.loads(body), cf.FunnelTotals))


def run(
    sizes: Sequence[int] = (100, 1_000, 10_000, 50_000),
    *,
    budget: float = 4.0,
    materialize_up_to: int = 10_000,
) -> list[Row]:
    """One row per (size, method): median ms per call and the ratio to its floor."""
    rows: list[Row] = []
    for users in sizes:
        body = report_bytes(users)
        base = cf.FunnelTotals.from_json(body)
        assert base == _classic(body)
        # Same users on every side for a realistic join: reuse the base's ids.
        periods = []
        for seed in (1, 2, 3):
            other = cf.FunnelTotals.from_json(report_bytes(users, seed=seed))
            data = tuple(
                attrs.evolve(row, user_id=b.user_id)
                for row, b in zip(other.data, base.data, strict=True)
            )
            periods.append((f"period-{seed}", attrs.evolve(other, data=data)))
        text = base.to_csv()
        assert cf.FunnelTotals.from_csv(text).data == base.data
        assert PydanticTotals.model_validate_json(body).data[-1].user_id == base.data[-1].user_id

        def merge_and_read(x: cf.FunnelTotals = base, y: list[Any] = periods) -> object:
            return [len(period.users) for period in cf.merge_comparison(x, y).comparisons]

        cases: dict[str, tuple[str, Callable[[], object]]] = {
            "json.loads": ("json", lambda b=body: json.loads(b)),
            "orjson.loads": ("json", lambda b=body: orjson.loads(b)),
            "FunnelTotals.from_json": ("json", lambda b=body: cf.FunnelTotals.from_json(b)),
            "classic path (before: orjson + cattrs)": ("json", lambda b=body: _classic(b)),
            "pydantic v2 model_validate_json": (
                "json",
                lambda b=body: PydanticTotals.model_validate_json(b),
            ),
            "merge_comparison (base + 3)": (
                "json",
                lambda x=base, y=periods: cf.merge_comparison(x, y),
            ),
            "csv.reader + float per cell": ("csv", lambda t=text: _csv_floor(t)),
            "FunnelTotals.from_csv": ("csv", lambda t=text: cf.FunnelTotals.from_csv(t)),
        }
        if users <= materialize_up_to:
            cases["merge (base + 3), every users read"] = ("json", merge_and_read)
        # Enough rounds for a stable median, bounded by a time budget per size.
        started = time.perf_counter()
        for _, case in cases.values():
            case()
        per_round = max(time.perf_counter() - started, 1e-6)
        rounds = max(5, min(200, int(budget / per_round)))
        medians = _rounds({name: case for name, (_, case) in cases.items()}, rounds)
        floors = {"json": medians["json.loads"], "csv": medians["csv.reader + float per cell"]}
        for name, seconds in medians.items():
            kind = cases[name][0]
            rows.append(
                {
                    "users": users,
                    "KiB": len(body if kind == "json" else text.encode()) // 1024,
                    "method": name,
                    "ms/call": 1000 * seconds,
                    "x floor": seconds / floors[kind],
                    "floor": "json.loads" if kind == "json" else "csv + float",
                    "rounds": rounds,
                }
            )
    return rows


def memory(users: int) -> list[Row]:
    """Peak and kept memory (tracemalloc) of one decode of a *users* report, per method."""
    body = report_bytes(users)
    rows: list[Row] = []
    methods: dict[str, Callable[[bytes], object]] = {
        "json.loads": json.loads,
        "FunnelTotals.from_json": cf.FunnelTotals.from_json,
        "classic path (before: orjson + cattrs)": _classic,
    }
    for name, method in methods.items():
        method(body)  # warm up (generated code, caches)
        gc.collect()
        tracemalloc.start()
        result = method(body)
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result
        rows.append(
            {"users": users, "method": name, "peak MiB": peak / 2**20, "kept MiB": kept / 2**20}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 50_000])
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per size (about)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.sizes, budget=args.budget)
    title = "Decode and merge cost (median per call, interleaved rounds)"
    text = (
        table(rows) + "\nMemory of one decode (tracemalloc):\n\n" + table(memory(max(args.sizes)))
    )
    print(title)
    print(text)
    if args.record:
        record("decode", title, text)


if __name__ == "__main__":
    main()
