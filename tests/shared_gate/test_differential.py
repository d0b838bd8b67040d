"""
The script and the Budget are one set of rules: driven with the same seeded events
(grants, answers with and without RateLimit info, 429 pauses, releases with and without
an answer, refunds; answers learned as of when they arrived; settles sent again, as the
client does after a call that timed out, which the Budget never sees twice), they agree on
every field after every step. The script runs in a real Redis on Redis's clock; the Budget is given
the ``now`` the script returned.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest

from closefunnel._budget import Budget
from closefunnel._ratelimit import RateLimitInfo
from closefunnel._redis_gate import gate_keys
from closefunnel._redis_script import POLL, STEP

MAX_HOLD = 0.2  # short enough that some resets and pauses get capped
LEASE_TTL = 1e6  # no lease expires here: expiry has its own test
KEY_TTL = 600.0


def _f(text: bytes | None) -> float | None:
    if text is None or text == b"":
        return None
    return float(text)


def _settle_args(permit: tuple[str, int, int], event: dict[str, Any]) -> list[str]:
    token, seq, seen = permit
    if event["kind"] in ("release", "refund"):
        refund = "1" if event["kind"] == "refund" else "0"
        return [token, str(seq), str(seen), "0", "0", "0", "", "0", "0", "0", "0", refund, "0"]
    info: RateLimitInfo | None = event["info"]
    return [
        token, str(seq), str(seen), "1", str(event["status"]), "0" if info is None else "1",
        "" if info is None or info.limit is None else repr(float(info.limit)),
        "0" if info is None else repr(float(info.remaining)),
        "0" if info is None else repr(float(info.reset)),
        repr(float(event["pause"])), "0.0", "0", repr(event["age"]),
    ]  # fmt: skip


def _event(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.15:
        return {"kind": "release"}
    if roll < 0.25:
        return {"kind": "refund"}
    if roll < 0.4:
        pause = rng.choice([0.0, rng.uniform(0.001, 0.3)])
        info = None
        if rng.random() < 0.5:
            info = RateLimitInfo(limit=5.0, remaining=0.0, reset=rng.uniform(0.001, 0.3))
        return {"kind": "answer", "status": 429, "info": info, "pause": pause, "age": _age(rng)}
    info = None
    if rng.random() < 0.8:
        limit = rng.choice([None, 3.0, 5.0, 8.0])
        remaining = float(rng.randint(0, 8))
        info = RateLimitInfo(limit=limit, remaining=remaining, reset=rng.uniform(0.001, 0.3))
    return {
        "kind": "answer",
        "status": rng.choice([200, 200, 200, 500]),
        "info": info,
        "pause": 0.0,
        "age": _age(rng),
    }


def _age(rng: random.Random) -> float:
    """How long before the script call the answer arrived: it is learned as of then."""
    return rng.choice([0.0, rng.uniform(0.0, 0.05)])


def _apply_budget(
    budget: Budget, permit: tuple[str, int, int], event: dict[str, Any], now: float
) -> None:
    _, seq, seen = permit
    if event["kind"] == "release":
        budget.release(seq, refund=False, settled=True)
    elif event["kind"] == "refund":
        budget.release(seq, refund=True, settled=True)
    else:
        at = now - event["age"]
        budget.observe(seq, seen, event["status"], event["info"], event["pause"], at, jitter=0.0)
        budget.release(seq, refund=False, settled=False)


def _grant_budget(budget: Budget, want: int, now: float) -> tuple[list[tuple[int, int]], float]:
    grants: list[tuple[int, int]] = []
    wait = 0.0
    for _ in range(want):
        if budget.blocked():
            wait = POLL
            break
        ready = budget.ready_at(now)
        if ready > now:
            wait = ready - now
            break
        grants.append(budget.grant())
    return grants, wait


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_script_and_budget_agree_step_by_step(sync_redis: Any, prefix: str, seed: int) -> None:
    rng = random.Random(seed)
    script = sync_redis.register_script(STEP)
    keys = gate_keys(prefix, "api_diff", "POST report/funnel")
    budget = Budget(max_hold=MAX_HOLD)
    outstanding: list[tuple[str, int, int]] = []
    pid = uuid.uuid4().hex[:12]
    steps = 250
    saw = {"429": 0, "grant": 0, "hold": 0, "roll": 0, "again": 0}
    sent: list[list[str]] = []  # every settle sent so far
    for step in range(steps):
        settled = rng.sample(outstanding, k=min(len(outstanding), rng.randint(0, 3)))
        events = [_event(rng) for _ in settled]
        fresh = [_settle_args(permit, event) for permit, event in zip(settled, events, strict=True)]
        # A retry sends settles of a call Redis may have run: applied once, so the Budget
        # (which hears of each answer once) is not told of them again.
        again = rng.sample(sent, k=min(len(sent), rng.choice([0, 0, 1, 2])))
        saw["again"] += len(again)
        sent += fresh
        want = rng.randint(0, 3)
        tokens = [uuid.uuid4().hex for _ in range(want)]
        settles = [*again, *fresh] if rng.random() < 0.5 else [*fresh, *again]
        args: list[str] = [repr(MAX_HOLD), repr(LEASE_TTL), repr(KEY_TTL), str(len(settles))]
        for fields in settles:
            args.extend(fields)
        args += [str(want), *tokens, pid, "1" if want == 0 else "0"]
        reply = script(keys=keys, args=args)

        now = float(reply[0])
        window_before = budget.window.end
        for permit, event in zip(settled, events, strict=True):
            outstanding.remove(permit)
            _apply_budget(budget, permit, event, now)
        grants, wait = _grant_budget(budget, want, now)
        asked_wait = budget.asked_wait(now)
        if budget.window.end is not None and window_before is not None:
            saw["roll"] += budget.window.end > window_before
        saw["429"] += sum(e.get("status") == 429 for e in events)
        saw["grant"] += len(grants)
        saw["hold"] += wait > POLL

        where = f"seed {seed} step {step}"
        count = int(reply[9])
        got = [(int(reply[11 + 3 * i]), int(reply[12 + 3 * i])) for i in range(count)]
        assert got == grants, where
        outstanding += [(tokens[i], s, n) for i, (s, n) in enumerate(got)]
        assert float(reply[2]) == pytest.approx(wait, abs=1e-9), where
        assert float(reply[1]) == pytest.approx(asked_wait, abs=1e-9), where
        assert _f(reply[3]) == pytest.approx(budget.window.budget, abs=1e-9), where
        assert (reply[6] == b"1") is budget.pause.probe, where
        assert int(reply[7]) == budget.in_flight == len(outstanding), where
        assert int(reply[8]) == budget.rate_limited, where

        state = {k.decode(): v.decode() for k, v in sync_redis.hgetall(keys[0]).items()}
        assert int(state["seq"]) == budget.seq, where
        assert int(state["seen"]) == budget.seen, where
        assert (state["cold"] == "1") is budget.cold.cold, where
        assert int(state["cold_sent"]) == budget.cold.sent, where
        assert (state["headers_seen"] == "1") is budget.headers_seen, where
        assert int(state["p_after_seq"]) == budget.pause.after_seq, where
        assert int(state["p_answered"]) == budget.pause.answered, where
        assert int(state["w_count"]) == budget.window.count, where
        assert int(state["w_accepted"]) == budget.window.accepted, where
        assert int(state["w_accepted_before"]) == budget.window.accepted_before, where
        assert float(state["w_length"]) == pytest.approx(budget.window.length, abs=1e-9), where
        assert (state["w_confirmed"] == "1") is budget.window.confirmed, where
        assert _f(state.get("w_limit", "").encode()) == budget.window.limit, where
        # Points in time, relative to the script's own clock.
        for field, mine in (
            ("w_end", budget.window.end),
            ("w_asked_end", budget.window.asked_end),
            ("p_until", budget.pause.until),
            ("p_asked_until", budget.pause.asked_until),
        ):
            theirs = _f(state.get(field, "").encode())
            if mine is None or theirs is None:
                assert (theirs, mine) == (None, None), f"{where}: {field}"
            else:
                assert theirs - now == pytest.approx(mine - now, abs=1e-9), f"{where}: {field}"
        if wait > 0 and rng.random() < 0.5:
            time.sleep(min(wait + 0.003, 0.06))  # let windows end and pauses pass
        elif rng.random() < 0.1:
            time.sleep(rng.uniform(0.0, 0.02))
    # The run exercised what it claims to (a sequence with no 429s or holds proves little).
    assert min(saw["429"], saw["hold"]) > 5, saw
    assert saw["grant"] > 80, saw
    assert saw["again"] > 50, saw
