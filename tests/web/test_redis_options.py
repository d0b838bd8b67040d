"""
The shared gate (``Client(redis=...)``) and the shared web cache (``client_lifespan`` and
``create_app`` with ``redis=...``) refuse the same Redis values with the same typed error,
when they are made (one check, :func:`closefunnel._redis_url.check_redis`), before
anything connects; a password in the URL never shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import closefunnel as cf
from closefunnel.fastapi import client_lifespan, create_app

pytest.importorskip("redis", reason="pip install 'closefunnel[redis]'")

BAD = [
    "redis://127.0.0.1:6379/abc",  # redis-py would quietly use database 0
    "redis://127.0.0.1:6379/0/1",
    "rediss://127.0.0.1:6379/db0",
    "redis://127.0.0.1:notaport/0",
    "redis://127.0.0.1:6379/0?db=abc",
    "redis://:hunter2-sekrit@127.0.0.1:notaport/0",
    "http://127.0.0.1:6379/0",
    "127.0.0.1:6379",
    6379,
    b"redis://127.0.0.1:6379/0",
]

MAKERS: dict[str, Callable[[object], Any]] = {
    "gate": lambda url: cf.Client(api_key="api_x.secret", redis=url),
    "lifespan": lambda url: client_lifespan(cache_ttl=30, redis=url),
    "app": lambda url: create_app(cache_ttl=30, redis=url),
}


@pytest.mark.parametrize("url", BAD)
def test_the_gate_and_the_web_cache_refuse_the_same_redis_values(url: object) -> None:
    refused: dict[str, tuple[str, str | None, str | None]] = {}
    for name, make in MAKERS.items():
        with pytest.raises(cf.InvalidQueryError) as caught:
            make(url)
        error = caught.value
        refused[name] = (type(error).__name__, error.field, error.rule)
        for text in (str(error), repr(error), repr(error.__cause__)):
            assert "hunter2-sekrit" not in text
    assert len(set(refused.values())) == 1, refused
    assert refused["gate"][1] == "redis"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/", "rediss://h:1/15", "unix:///s"]
)
async def test_good_redis_urls_are_taken_by_both(url: str) -> None:
    client_lifespan(cache_ttl=30, redis=url)
    create_app(cache_ttl=30, redis=url)
    client = cf.Client(api_key="api_x.secret", redis=url)
    await client.aclose()
