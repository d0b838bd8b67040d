"""
The benchmark harness cannot rot: a tiny run of each benchmark produces its table.

These are not timing assertions (the machine is shared and noisy); they check that each
benchmark runs, stops by itself and reports the figures RESULTS.md is built from.
benchmarks/ is a folder of scripts, not a package: it is put on sys.path for each test.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(name="load")
def _load(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


@pytest.mark.slow
def test_decode(load) -> None:  # type: ignore[no-untyped-def]
    bench = load("bench_decode")
    rows = bench.run((20,), budget=0.05)
    methods = {row["method"] for row in rows}
    assert {"json.loads", "FunnelTotals.from_json", "pydantic v2 model_validate_json"} <= methods
    assert all(row["ms/call"] > 0 for row in rows)
    assert {"FunnelTotals.from_csv", "merge (base + 3), every users read"} <= methods
    assert "x floor" in load("_common").table(rows)


def test_compare(load) -> None:  # type: ignore[no-untyped-def]
    bench = load("bench_compare")
    rows = bench.run(1, 2, latency=0.02, jitter=0.01)
    assert [row["reports"] for row in rows] == [
        "one report",
        "base + 1 compared",
        "base + 2 compared",
    ]
    assert rows[2]["one after another ms"] > 0
    assert bench.floor(1, 0.2, 0.0) == pytest.approx(0.2)


@pytest.mark.slow
def test_ratelimit(load) -> None:  # type: ignore[no-untyped-def]
    bench = load("bench_ratelimit")
    rows = bench.run(
        40,
        30.0,
        scenarios=("closefunnel", "naive-gather", "closeio-sequential"),
        latency=0.005,
        jitter=0.0,
    )
    by_client = {row["client"]: row for row in rows}
    assert by_client["closefunnel"]["lost"] == 0
    assert by_client["closefunnel"]["accepted"] == 40
    assert all("429/1k" in row and "rate %" in row for row in rows)


@pytest.mark.slow
def test_scale(load) -> None:  # type: ignore[no-untyped-def]
    bench = load("bench_scale")
    rows = bench.run(150, 50, concurrency=8)
    clients = [row["client"] for row in rows]
    assert clients[:2] == ["raw aiohttp", "closefunnel"]
    assert rows[1]["reports/s"] > 0


def test_results_record(load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    common = load("_common")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    common.record("x", "First", "| a |\n", command="python benchmarks/x.py")
    common.record("x", "Second", "| b |\n", command="python benchmarks/x.py")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Second" in text
    assert "First" not in text
    assert "cores" in text
    assert "Python" in text


@pytest.mark.slow
async def test_multiprocess(load, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """Two real worker processes per gate kind share one key: the table is built."""
    bench = load("bench_multiprocess")
    rows = [await bench.run_one(mode, 2, n=24, rps=20.0, redis=redis_url) for mode in bench.MODES]
    assert [row["gate"] for row in rows] == ["local", "redis", "share"]
    assert all(row["lost"] == 0 and row["accepted"] == 24 for row in rows)
    cost = await bench.gate_cost(redis_url, permits=200)
    assert [row["gate"] for row in cost] == ["local", "redis"]
    assert all(row["CPU us/request"] > 0 for row in cost)
