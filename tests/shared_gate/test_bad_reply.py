"""
A script reply that is not what the script returns must not kill the shared gate's
dispatcher (its callers would wait for ever): it counts as Redis failing, so callers
fall back to the local gate (or get :class:`closefunnel.GateUnavailableError` with
``redis_fallback="fail"``), and the gate is shared again once the replies are sound.

The reply is made bad in a real Redis, by the real script: a value in the gate's state
hash that the script passes through unchecked (another program, or another version,
wrote to the keys).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import closefunnel as cf
from closefunnel import _redis_gate
from closefunnel._auth import Credentials
from closefunnel._redis_gate import _BadReply, _parse, gate_keys
from closefunnel.emulator import Emulator

from .conftest import distinct_queries, emulator_config, totals_log

GROUP = "POST report/funnel"


@pytest.mark.parametrize(
    ("field", "junk"),
    [
        ("rate_limited", "0.5"),  # the reply's count of 429s is no count
        ("seq", "1e300"),  # each grant's seq comes back as "1e+300"
        ("p_until", "inf"),  # the wait it reports is not finite
    ],
)
async def test_a_malformed_reply_falls_back_then_shares_again(
    redis_url: str,
    sync_redis: Any,
    prefix: str,
    field: str,
    junk: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_redis_gate, "_RECHECK", 0.05)
    caplog.set_level(logging.WARNING, logger="closefunnel")
    async with Emulator(emulator_config()) as emu:
        state = gate_keys(prefix, Credentials.api_key(emu.api_key).key_id, GROUP)[0]
        sync_redis.hset(state, field, junk)
        queries = distinct_queries(emu, 12)
        async with (
            asyncio.timeout(20),  # without the fix the caller waits for ever
            cf.Client(
                api_key=emu.api_key, base_url=emu.base_url, redis=redis_url, redis_prefix=prefix
            ) as client,
        ):
            first = await client.funnel_totals(queries[0])
            assert isinstance(first, cf.FunnelTotals)
            assert client.gate_snapshots()[GROUP].shared is False
            warnings = [r.getMessage() for r in caplog.records if r.name == "closefunnel.gate"]
            assert len(warnings) == 1
            assert "unexpected script reply" in warnings[0]
            assert len(totals_log(emu)) == 1  # sent once, through the local gate

            sync_redis.hdel(state, field)  # sound replies again
            spare = iter(queries[1:])
            while not client.gate_snapshots()[GROUP].shared:
                await client.funnel_totals(next(spare))
                await asyncio.sleep(0.05)
            await client.funnel_totals(next(spare))
            snapshot = client.gate_snapshots()[GROUP]
            assert (snapshot.shared, snapshot.in_flight) == (True, 0)
    assert all(entry.status == 200 for entry in totals_log(emu))


async def test_a_malformed_reply_with_fallback_fail_raises(
    redis_url: str, sync_redis: Any, prefix: str
) -> None:
    async with Emulator(emulator_config()) as emu:
        state = gate_keys(prefix, Credentials.api_key(emu.api_key).key_id, GROUP)[0]
        sync_redis.hset(state, "rate_limited", "0.5")
        (query,) = distinct_queries(emu, 1)
        async with (
            asyncio.timeout(20),
            cf.Client(
                api_key=emu.api_key,
                base_url=emu.base_url,
                redis=redis_url,
                redis_prefix=prefix,
                redis_fallback="fail",
            ) as client,
        ):
            with pytest.raises(cf.GateUnavailableError):
                await client.funnel_totals(query)
        assert totals_log(emu) == []


_GOOD = [b"1.5", b"0", b"0", b"", b"", b"0", b"0", b"1", b"0", b"1", b"tok", b"1", b"0"]


def _with(index: int, value: object) -> list[object]:
    reply: list[object] = list(_GOOD)
    reply[index] = value
    return reply


@pytest.mark.parametrize(
    "reply",
    [
        b"OK",
        _GOOD[:9],
        _with(0, b"nan"),
        _with(1, b"-1"),
        _with(2, b"inf"),
        _with(3, b"x"),
        _with(6, b"2"),
        _with(7, b"-1"),
        _with(8, b"1.0"),
        _with(9, b"2"),  # more grants than fields
        _with(10, b"not-asked"),  # a token this call never sent
        _with(11, 7),  # not a string at all
        _with(12, b"\xff"),
        [*_GOOD[:9], b"0", b"tok", b"1", b"0"],  # fields past the grants said
    ],
)
def test_parse_refuses_what_the_script_never_returns(reply: object) -> None:
    assert _parse(list(_GOOD), ["tok"]).grants == (("tok", 1, 0),)
    with pytest.raises(_BadReply):
        _parse(reply, ["tok"])
