"""
What the shared gate leaves in Redis, and what the client accepts as its Redis options:
keys carry the key id under one hash tag per gate and expire; never the secret. Bad
``redis``/``redis_fallback``/``redis_prefix`` values are a typed error before anything
is sent, and a password in the URL never shows.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import pytest

import closefunnel as cf
from closefunnel._auth import Credentials
from closefunnel.emulator import Emulator

from .conftest import distinct_queries, emulator_config, keys_under


async def test_keys_carry_the_key_id_one_hash_tag_and_a_ttl(
    redis_url: str, sync_redis: Any, prefix: str
) -> None:
    async with Emulator(emulator_config(rps=50, latency=0.3)) as emu:
        secret = emu.api_key
        async with cf.Client(
            api_key=secret, base_url=emu.base_url, redis=redis_url, redis_prefix=prefix
        ) as client:
            queries = distinct_queries(emu, 6)
            batch = asyncio.ensure_future(asyncio.gather(*map(client.funnel_totals, queries)))
            # Mid-run, with leases held (empty sets vanish from Redis once all are back).
            while not any(k.endswith(":leases") for k in keys_under(sync_redis, prefix)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            during = keys_under(sync_redis, prefix)
            await batch
            await client.pipelines()  # a second endpoint group: a second gate
        after = keys_under(sync_redis, prefix)
    key_id = Credentials.api_key(secret).key_id
    basic = base64.b64encode(f"{secret}:".encode()).decode()
    tags: dict[str, set[str]] = {}
    for key in [*during, *after]:
        assert key_id in key
        assert secret not in key
        assert basic not in key
        assert secret.split(".", 1)[1] not in key
        found = re.findall(r"\{([^{}]*)\}", key)
        assert len(found) == 1, key  # exactly one hash tag
        tags.setdefault(found[0], set()).add(key.rsplit(":", 1)[1])
    # One tag per gate, holding all of that gate's keys.
    assert len(tags) == 2, tags
    assert {"state", "leases", "lease_seq", "waiting"} <= max(tags.values(), key=len), tags
    for key in during:
        assert sync_redis.pttl(key) != -1, f"{key} never expires"  # -2: gone since
    for key in after:
        assert sync_redis.pttl(key) > 0, f"{key} never expires"
        dump = sync_redis.hgetall(key)  # the values hold no secret either
        assert secret.encode() not in repr(dump).encode()
        assert basic not in repr(dump)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"redis": 6379}, "redis"),
        ({"redis": b"redis://127.0.0.1:6379/0"}, "redis"),
        ({"redis": object()}, "redis"),
        ({"redis": "http://127.0.0.1:6379/0"}, "redis"),
        ({"redis": "127.0.0.1:6379"}, "redis"),
        ({"redis": "redis://127.0.0.1:notaport/0"}, "redis"),
        ({"redis": "redis://127.0.0.1:6379/notadb"}, "redis"),
        ({"redis": "redis://127.0.0.1:6379/0", "redis_fallback": "retry"}, "redis_fallback"),
        ({"redis": "redis://127.0.0.1:6379/0", "redis_fallback": None}, "redis_fallback"),
        ({"redis": "redis://127.0.0.1:6379/0", "redis_prefix": ""}, "redis_prefix"),
        ({"redis": "redis://127.0.0.1:6379/0", "redis_prefix": "a{b}"}, "redis_prefix"),
        ({"redis": "redis://127.0.0.1:6379/0", "redis_prefix": 7}, "redis_prefix"),
    ],
)
def test_bad_redis_options_are_a_typed_error(options: dict[str, Any], field: str) -> None:
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client(api_key="api_x.secret", **options)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        ("redis://:hunter2-sekrit@127.0.0.1:notaport/0", False),
        ("redis://user:hunter2-sekrit@127.0.0.1:notaport/0", False),
        ("redis://user:hunter2-sekrit@127.0.0.1:6379/0", True),
    ],
)
async def test_a_redis_password_never_shows(url: str, usable: bool) -> None:
    if usable:
        client = cf.Client(api_key="api_x.secret", redis=url)
    else:
        with pytest.raises(cf.InvalidQueryError) as caught:
            cf.Client(api_key="api_x.secret", redis=url)
        assert "hunter2-sekrit" not in str(caught.value)
        assert "hunter2-sekrit" not in repr(caught.value)
        assert "hunter2-sekrit" not in repr(caught.value.__cause__)
        return
    try:
        assert "hunter2-sekrit" not in repr(client)
        assert "hunter2-sekrit" not in str(client)
    finally:
        await client.aclose()
