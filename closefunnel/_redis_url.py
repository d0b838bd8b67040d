"""
What names a Redis, checked in one place for everything closefunnel keeps there (the
shared rate-limit gate and the shared web cache), so both refuse the same values with the
same :class:`InvalidQueryError` before anything connects:

- a ``redis://``, ``rediss://`` or ``unix://`` URL that redis-py can read, whose path (if
  any) is a database number: redis-py would quietly use database 0 for
  ``redis://host:6379/abc``, and processes meant to be kept apart would share;
- or a ``redis.asyncio.Redis`` the caller owns.

A URL can hold a password, so no message here quotes it, nor chains redis-py's error
(which might).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from closefunnel._errors import InvalidQueryError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["check_prefix", "check_redis", "connect"]

#: The timeouts of a connection made from a URL: a Redis that stops answering counts as
#: failing within about a second, and the caller falls back.
_SOCKET_TIMEOUT = 1.0


def check_redis(value: object, *, field: str = "redis", purpose: str = "the shared gate") -> None:
    """
    Refuse what cannot name a Redis (see the module docstring); *purpose* says what
    needs redis-py when it is not installed.

    Raises:
        InvalidQueryError: *value* names no usable Redis, or redis-py is not installed.
    """
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise InvalidQueryError(
            f"{purpose} needs redis-py: pip install 'closefunnel[redis]'",
            field=field,
            rule="extra",
        ) from None
    if isinstance(value, aioredis.Redis):
        return
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidQueryError(
            f"{field} must be a redis://, rediss:// or unix:// URL or a redis.asyncio.Redis, "
            f"got {type(value).__name__}",
            field=field,
            rule="type",
        )
    database = "" if value.startswith("unix://") else urlsplit(value).path.strip("/")
    if database and not database.isdigit():
        raise InvalidQueryError(
            f"{field}: the URL's path must be a database number (redis://host:6379/0)",
            field=field,
            rule="url",
        )
    try:
        # Parses the whole URL (port, query options) without connecting.
        aioredis.ConnectionPool.from_url(value)
    except ValueError:
        raise InvalidQueryError(
            f"{field}: not a usable Redis URL", field=field, rule="url"
        ) from None


def connect(
    value: object, *, field: str = "redis", purpose: str = "the shared gate"
) -> tuple[redis.asyncio.Redis, bool]:
    """
    The Redis client for *value* (checked as :func:`check_redis` does), and whether the
    caller owns it: made from a URL, so the caller closes it; an instance given is never
    closed for its owner.
    """
    check_redis(value, field=field, purpose=purpose)
    import redis.asyncio as aioredis

    if isinstance(value, aioredis.Redis):
        return value, False
    assert isinstance(value, str)  # check_redis allows nothing else
    try:
        client = aioredis.Redis.from_url(
            value, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT
        )
    except ValueError:
        raise InvalidQueryError(
            f"{field}: not a usable Redis URL", field=field, rule="url"
        ) from None
    return client, True


def check_prefix(prefix: object, *, field: str = "redis_prefix") -> str:
    """*prefix*, if it can namespace keys: non-empty, without braces (those are the one
    hash tag per gate or entry, which keeps each script on one Redis Cluster slot)."""
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise InvalidQueryError(
            f"{field} must be a non-empty string without braces, got {prefix!r}",
            field=field,
            rule="type",
        )
    return prefix
