"""
Decode and merge cost: what do typed reports cost over parsing the JSON?

    python benchmarks/bench_decode.py [--sizes 100 1000 10000] [--record]

Report JSON bytes with 100, 1,000 and 10,000 users (generated here, realistic values,
some nulls) are decoded by:

- ``json.loads``: the floor a raw-dict user pays (the target is from_json <= 1.5x this);
- ``orjson.loads``: what closefunnel parses with;
- ``FunnelTotals.from_json``: orjson plus structuring into frozen attrs classes with strict
  type checks (what the client does for every response);
- a pydantic v2 model of the same shape (strict, frozen), ``model_validate_json``;

plus ``merge_comparison`` of a base and one compared report of that size (the outer join
by user and a Delta per metric). Each case runs in interleaved rounds (so machine noise
hits all alike); the table shows medians per call and the ratio to ``json.loads``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable, Sequence

import orjson
import pydantic
from _common import Row, median, record, table

import closefunnel as cf


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


def run(sizes: Sequence[int] = (100, 1_000, 10_000), *, budget: float = 4.0) -> list[Row]:
    """One row per (size, method): median ms per call and the ratio to json.loads."""
    rows: list[Row] = []
    for users in sizes:
        body = report_bytes(users)
        base = cf.FunnelTotals.from_json(body)
        compared = cf.FunnelTotals.from_json(report_bytes(users, seed=1))
        # Same users on both sides for a realistic join: reuse the base's ids.
        compared = cf.FunnelTotals(
            aggregations=compared.aggregations,
            data=tuple(
                cf.UserFunnelMetrics(
                    **{n: getattr(row, n) for n in cf.METRIC_NAMES}, user_id=b.user_id
                )
                for row, b in zip(compared.data, base.data, strict=True)
            ),
        )
        assert PydanticTotals.model_validate_json(body).data[-1].user_id == base.data[-1].user_id
        cases: dict[str, Callable[[], object]] = {
            "json.loads": lambda b=body: json.loads(b),
            "orjson.loads": lambda b=body: orjson.loads(b),
            "FunnelTotals.from_json": lambda b=body: cf.FunnelTotals.from_json(b),
            "pydantic v2 model_validate_json": lambda b=body: PydanticTotals.model_validate_json(b),
            "merge_comparison (base + 1)": lambda x=base, y=compared: cf.merge_comparison(
                x, [("last-month", y)]
            ),
        }
        # Enough rounds for a stable median, bounded by a time budget per size.
        started = time.perf_counter()
        for case in cases.values():
            case()
        per_round = max(time.perf_counter() - started, 1e-6)
        rounds = max(5, min(200, int(budget / per_round)))
        medians = _rounds(cases, rounds)
        floor = medians["json.loads"]
        for name, seconds in medians.items():
            rows.append(
                {
                    "users": users,
                    "KiB": len(body) // 1024,
                    "method": name,
                    "ms/call": 1000 * seconds,
                    "x json.loads": seconds / floor,
                    "rounds": rounds,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per size (about)")
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.sizes, budget=args.budget)
    title = "Decode and merge cost (median per call, interleaved rounds)"
    text = table(rows)
    print(title)
    print(text)
    if args.record:
        record("decode", title, text)


if __name__ == "__main__":
    main()
