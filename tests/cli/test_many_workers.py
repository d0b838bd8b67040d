"""
The command line on many processes: ``--redis`` shares the gate, ``serve --workers N`` runs
N uvicorn workers on one socket (real processes, a real Redis, the emulator).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from .conftest import Run


def _granted(url: str) -> dict[str, int]:
    """Permits granted so far by each shared gate in this Redis database, by state key."""
    conn = redis.Redis.from_url(url, decode_responses=True)
    try:
        keys = list(conn.scan_iter(match="closefunnel:*:state"))
        return {key: int(conn.hget(key, "seq") or 0) for key in keys}
    finally:
        conn.close()


def _more(before: dict[str, int], after: dict[str, int], group: str) -> int:
    """How many more permits the gates of *group* granted between two looks."""
    return sum(n - before.get(k, 0) for k, n in after.items() if group in k)


def test_totals_shares_the_gate_through_redis(
    cli: Callable[..., Run], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOSEFUNNEL_REDIS_URL", raising=False)
    before = _granted(redis_url)
    run = cli("pipelines", "--format", "json", "--redis", redis_url)
    assert run.code == 0, run.err
    first = json.loads(run.out)[0]["id"]
    run = cli("totals", "--pipeline", first, "--format", "json", "--redis", redis_url)
    assert run.code == 0, run.err
    after = _granted(redis_url)
    assert _more(before, after, "POST_report_funnel") >= 1
    assert all(":{api_" in key for key in after)  # the key id, never the secret


def test_the_environment_names_the_redis(
    cli: Callable[..., Run], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOSEFUNNEL_REDIS_URL", redis_url)
    before = _granted(redis_url)
    run = cli("pipelines", "--format", "json")
    assert run.code == 0, run.err
    assert _more(before, _granted(redis_url), "GET_pipeline") >= 1


def test_a_bad_redis_url_is_a_clear_error(cli: Callable[..., Run]) -> None:
    run = cli("pipelines", "--redis", "http://not-redis/")
    assert run.code == 2
    assert "redis" in run.err
    assert "Traceback" not in run.err


@contextmanager
def _serve(*argv: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """``closefunnel serve --emulator --port 0 ...`` in a real process; yields its URL."""
    environ = {**os.environ, **(env or {})}
    environ.pop("CLOSEFUNNEL_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "closefunnel", "serve", "--emulator", "--port", "0", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "closefunnel API for" in line:
                url = line.split(" on ", 1)[1].split()[0]
        assert url, "".join(lines)
        for _ in range(600):  # the workers import and start: bounded
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield url, lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            lines.extend(proc.stderr.readlines())
            proc.stderr.close()


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
def test_serve_workers_without_redis_warns_and_serves() -> None:
    with _serve("--workers", "2") as (url, lines):
        pipelines = _get(url + "pipelines")
        assert isinstance(pipelines, list)
        assert pipelines
    text = "".join(lines)
    assert "WARNING: 2 workers without --redis" in text
    assert "each its own gate" in text


@pytest.mark.slow
def test_serve_workers_share_one_gate_through_redis(redis_url: str) -> None:
    before = _granted(redis_url)
    with _serve("--workers", "2", "--redis", redis_url) as (url, lines):
        pipelines = _get(url + "pipelines")
        assert isinstance(pipelines, list)
        first = pipelines[0]["id"]
        for _ in range(4):  # more requests than one worker needs to answer
            _get(f"{url}funnel/{first}?range=this-month")
        conn = redis.Redis.from_url(redis_url, decode_responses=True)
        try:  # the answer is in the cache every worker reads
            assert list(conn.scan_iter(match="closefunnel:web:*:value"))
        finally:
            conn.close()
    text = "".join(lines)
    assert "WARNING" not in text
    assert "one shared gate" in text
    assert _more(before, _granted(redis_url), "POST_report_funnel") >= 1
