"""
A settle (what one response taught: its status and rate-limit facts, or that the
permit came back unanswered or unsent) is applied at most once. The client sends a
settle again whenever its script call failed or timed out on its side, and Redis may
have run that call: a 429 counted twice would pause twice, reset the probe twice, and
double the answered and accepted counts that later guesses are made from.

The script runs in a real Redis; the retry is made the way the client makes it, and
also end to end, through a proxy that passes the call to Redis and drops its reply.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from closefunnel import _redis_gate
from closefunnel._ratelimit import RateLimitInfo
from closefunnel._redis_gate import RedisGate, gate_keys
from closefunnel._redis_script import STEP

from .conftest import switch_to

GROUP = "POST report/funnel"

#: The 9 fields after (token, seq, seen) and before the refund flag and the age, per kind.
_FACTS: dict[str, list[str]] = {
    "429 with info": ["1", "429", "1", "5.0", "0.0", "0.3", "0.3", "0.0"],
    "429 without info": ["1", "429", "0", "", "0", "0", "0.3", "0.0"],
    "200 with info": ["1", "200", "1", "50.0", "40.0", "0.5", "0", "0"],
    "500 without info": ["1", "500", "0", "", "0", "0", "0", "0"],
    "unanswered": ["0", "0", "0", "", "0", "0", "0", "0"],
    "refund": ["0", "0", "0", "", "0", "0", "0", "0"],
}


class _Step:
    """Calls of the shared gate's script, with the arguments the client would send."""

    def __init__(self, conn: Any, prefix: str, name: str) -> None:
        self.conn = conn
        self.script = conn.register_script(STEP)
        self.keys = gate_keys(prefix, f"api_{name}", GROUP)

    def __call__(self, settles: list[list[str]], want: int, *, lease_ttl: float = 60.0) -> Any:
        args = [repr(1e9), repr(lease_ttl), "600.0", str(len(settles))]
        for fields in settles:
            args += fields
        args += [str(want), *(uuid.uuid4().hex for _ in range(want)), "proc", str(int(not want))]
        return self.script(keys=self.keys, args=args)

    def grant(self, want: int, *, lease_ttl: float = 60.0) -> list[tuple[str, str, str]]:
        reply = self(settles=[], want=want, lease_ttl=lease_ttl)
        grants = [tuple(v.decode() for v in reply[10 + 3 * i : 13 + 3 * i]) for i in range(want)]
        assert len(grants) == int(reply[9]) == want
        return grants  # type: ignore[return-value]

    def state(self) -> dict[str, Any]:
        state = {k.decode(): v.decode() for k, v in self.conn.hgetall(self.keys[0]).items()}
        return {
            "state": state,
            "leases": self.conn.zcard(self.keys[1]),
            "expired": self.conn.zcard(self.keys[4]),
        }


def _settle(grant: tuple[str, str, str], kind: str) -> list[str]:
    return [*grant, *_FACTS[kind], "1" if kind == "refund" else "0", "0"]


@pytest.mark.parametrize("kind", list(_FACTS))
def test_the_same_settle_sent_twice_changes_the_state_once(
    sync_redis: Any, prefix: str, kind: str
) -> None:
    step = _Step(sync_redis, prefix, kind.replace(" ", "_"))
    first, _ = step.grant(2)  # one stays out, so the state is not back to where it began
    before = step.state()
    step([_settle(first, kind)], 0)
    once = step.state()
    assert once != before  # the settle did something ...
    step([_settle(first, kind)], 0)  # ... and the retry of a call Redis ran does nothing
    assert step.state() == once
    state = once["state"]
    assert int(state["rate_limited"]) == (1 if kind.startswith("429") else 0)
    assert int(state["seen"]) == 1
    assert once["leases"] == 1


def test_a_late_answer_to_an_expired_lease_is_learned_once(sync_redis: Any, prefix: str) -> None:
    """An answer that reaches Redis after its lease expired (an outage longer than the
    lease) still teaches the gate, once; a settle after that changes nothing."""
    step = _Step(sync_redis, prefix, "late")
    (grant,) = step.grant(1, lease_ttl=0.0)
    step([], 0)  # expires the lease: counted as a request that failed
    expired = step.state()
    assert (expired["leases"], expired["expired"]) == (0, 1)
    assert int(expired["state"]["seen"]) == 1
    step([_settle(grant, "429 with info")], 0)
    learned = step.state()
    assert int(learned["state"]["rate_limited"]) == 1
    assert int(learned["state"]["seen"]) == 1  # its expiry counted it settled already
    assert learned["expired"] == 0
    step([_settle(grant, "429 with info")], 0)
    assert step.state() == learned


def test_expired_tokens_are_forgotten_with_the_state(sync_redis: Any, prefix: str) -> None:
    """The tokens kept for late answers are pruned: a dead worker's never piles up."""
    step = _Step(sync_redis, prefix, "forget")
    step.grant(3, lease_ttl=0.0)
    script = sync_redis.register_script(STEP)
    # A key TTL of zero: whatever expires now is forgotten at the same call.
    script(keys=step.keys, args=[repr(1e9), "60.0", "0.0", "0", "0", "proc", "1"])
    assert sync_redis.zcard(step.keys[1]) == 0
    assert sync_redis.zcard(step.keys[4]) == 0


async def test_a_settle_resent_after_its_call_timed_out_is_learned_once(
    sync_redis: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: Redis runs the call that carries a 429's settle, the reply is lost, the
    call times out, the gate falls back and sends the settle again (every recheck, while
    the replies are lost, and once more when they arrive): the 429 is counted once."""
    import redis.asyncio as aioredis

    monkeypatch.setattr(_redis_gate, "_OP_TIMEOUT", 0.2)
    monkeypatch.setattr(_redis_gate, "_RECHECK", 0.05)
    keys = gate_keys(prefix, "api_resent", GROUP)
    switch = switch_to(sync_redis)
    async with switch as url:
        conn = aioredis.Redis.from_url(url)
        gate = RedisGate(GROUP, redis=conn, key_id="api_resent", max_concurrency=2, prefix=prefix)
        try:
            async with asyncio.timeout(20):
                permit = await gate.acquire()
                info = RateLimitInfo(limit=5.0, remaining=0.0, reset=0.05)
                permit.observe(429, info, pause=0.05)
                switch.drop_replies = True
                permit.release()
                while gate.snapshot().shared:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                while sync_redis.zcard(keys[1]):  # noqa: ASYNC110 (Redis ran the settle)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.15)  # rechecks, each sending the settle again
                switch.drop_replies = False
                while not gate.snapshot().shared:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            await gate.aclose()
            await conn.aclose()
    state = {k.decode(): v.decode() for k, v in sync_redis.hgetall(keys[0]).items()}
    assert int(state["rate_limited"]) == 1
    assert (int(state["seq"]), int(state["seen"])) == (1, 1)
    assert int(state["p_answered"]) == 0
