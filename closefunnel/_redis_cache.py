"""
The web cache and its single-flight shared through Redis, so N worker processes answering
the same dashboard request cause one upstream call, not N.

Each entry is two keys under one hash tag (so the scripts work on Redis Cluster): the
serialized value, stored with Redis's TTL set to the cache's, and a lock. A request for
an entry goes:

1. in-process first: callers of the same entry in one process share one flight
   (:class:`closefunnel._singleflight.SingleFlight`), so Redis is asked once per process;
2. one atomic script then either returns the stored value, or takes the lock
   (``SET NX PX``) for this process, or says another process holds it;
3. the lock's holder (the *winner*) fetches upstream, renewing the lock while it works,
   then stores the value and deletes its lock in one script; the others poll with short
   sleeps and take the stored value;
4. a winner that dies leaves its lock to expire (``lock_ttl``), and the next poll of a
   waiter takes it over and fetches itself; a winner whose fetch fails deletes its lock
   and stores nothing (errors are never cached), so the next waiter fetches itself: a
   passing failure costs one more request, not one per worker, and every caller ends
   with a value or its own process's typed error. A waiter never waits longer than
   ``max_wait`` in all; then it fetches itself without the lock.

Redis unreachable or failing: requests are answered through the in-process cache
instead (the :class:`~closefunnel._cache.TTLCache` given as ``local``), with one WARNING
per outage; Redis is tried again every few seconds, and a value fetched while Redis
failed is still returned (nothing is lost). A cancelled caller never leaves its lock
held past ``lock_ttl`` and never leaves a task behind.

Keys carry the client's key id and a hash of the request, never the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from closefunnel._cache import TTLCache
from closefunnel._redis_url import check_prefix
from closefunnel._singleflight import SingleFlight

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["SharedCache"]

logger: Final = logging.getLogger("closefunnel.web")

V = TypeVar("V")

#: The most one Redis command may take before Redis counts as failing.
_OP_TIMEOUT: Final = 2.0
#: How long after a failure Redis is left alone before it is tried again.
_RECHECK: Final = 2.0
#: The first and the longest sleep between a waiter's polls (seconds).
_POLL_FIRST: Final = 0.01
_POLL_MAX: Final = 0.1
#: The version of the stored form: a new one never reads values written by an old one.
_FORMAT: Final = "v1"
_SAFE: Final = re.compile(r"[^A-Za-z0-9_.:-]")

# KEYS: value, lock. ARGV: token, lock ms.
# -> {1, value} stored; {2} this caller holds the lock now; {0} another caller holds it.
_CLAIM: Final = """
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}
"""
# KEYS: value, lock. ARGV: token, value, ttl ms. Stored even when the lock is no longer
# this caller's (it expired and another took over): the value is as fresh as any.
_STORE: Final = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
# KEYS: lock. ARGV: token, lock ms (renew) or nothing (release).
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _RedisDown(Exception):
    """Internal: Redis failed; *value* is what was fetched before it did, if anything."""

    def __init__(self, cause: BaseException, value: object = None, *, fetched: bool = False):
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.value = value
        self.fetched = fetched


class SharedCache:
    """
    A TTL cache with single-flight, shared by every process using the same Redis; see
    the module docstring.

    Args:
        redis: The client to talk to Redis with (closed by :meth:`aclose` when *owns_redis*).
        ttl: Seconds a value is served (Redis's TTL of the stored value).
        local: The in-process cache used while Redis fails.
        prefix: The namespace of every key.
        lock_ttl: Seconds a lock outlives its holder: a dead winner's waiters take over
            after this. A live winner renews its lock every third of it.
        max_wait: The longest a waiter waits for another process in all (seconds).

    ``fetches`` counts this process's upstream fetches, ``hits`` the answers it took
    from Redis, ``round_trips`` its Redis commands: for logs and tests.
    """

    def __init__(
        self,
        *,
        redis: redis.asyncio.Redis,
        ttl: float,
        local: TTLCache[Any, Any],
        prefix: str = "closefunnel",
        lock_ttl: float = 10.0,
        max_wait: float = 60.0,
        owns_redis: bool = False,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        if not lock_ttl > 0 or not max_wait > 0:
            raise ValueError("lock_ttl and max_wait must be > 0 seconds")
        self.ttl = ttl
        self.lock_ttl = lock_ttl
        self.max_wait = max_wait
        self._redis = redis
        self._owns_redis = owns_redis
        self._prefix = check_prefix(prefix)
        self._local = local
        self._claim = redis.register_script(_CLAIM)
        self._store = redis.register_script(_STORE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._flights: SingleFlight[str, Any] = SingleFlight()
        self._down = False
        self._retry_at = 0.0
        self.fetches = 0
        self.hits = 0
        self.round_trips = 0

    def keys(self, scope: str, material: bytes) -> tuple[str, str]:
        """The value and lock keys of an entry: *scope* (a key id) in the clear, the
        request only as a hash."""
        digest = hashlib.sha256(material).hexdigest()[:40]
        tag = _SAFE.sub("_", f"{scope}:{digest}")
        base = f"{self._prefix}:web:{_FORMAT}:{{{tag}}}"
        return f"{base}:value", f"{base}:lock"

    async def get(
        self,
        scope: str,
        material: bytes,
        fetch: Callable[[], Awaitable[V]],
        *,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
    ) -> V:
        """
        The value for the request *material* in *scope*: from Redis while fresh, else from
        ``await fetch()`` by exactly one of the processes asking at once.

        *encode* and *decode* turn the value into the bytes stored and back.
        """
        value_key, lock_key = self.keys(scope, material)
        if not self._available():
            result: V = await self._local.get(value_key, fetch)
            return result

        async def shared() -> V:
            try:
                return await self._through_redis(value_key, lock_key, fetch, encode, decode)
            except _RedisDown as down:
                self._outage(down.cause)
                if down.fetched:
                    fetched = cast(V, down.value)
                    self._local.put(value_key, fetched)
                    return fetched
                value: V = await self._local.get(value_key, fetch)
                return value

        result = await self._flights.run(value_key, shared)
        return result

    async def aclose(self) -> None:
        """Close the Redis client if this cache made it (flights end with their callers)."""
        if self._owns_redis:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    # -- the shared flight ---------------------------------------------------------

    async def _through_redis(
        self,
        value_key: str,
        lock_key: str,
        fetch: Callable[[], Awaitable[V]],
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
    ) -> V:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        lock = (lock_key, secrets.token_hex(16))
        lock_ms = str(max(1, round(self.lock_ttl * 1000)))
        sleep = _POLL_FIRST
        while True:
            reply = await self._op(self._claim(keys=[value_key, lock_key], args=[lock[1], lock_ms]))
            self._recovered()
            state = int(reply[0])
            if state == 1:
                try:
                    value = decode(reply[1])
                except Exception:
                    # Not ours to read (damaged, or written by other code): fetch and
                    # overwrite it.
                    logger.warning("closefunnel: unreadable shared web cache entry; fetching")
                    return await self._fetch_and_store(value_key, lock, False, fetch, encode)
                self.hits += 1
                return value
            if state == 2:
                return await self._fetch_and_store(value_key, lock, True, fetch, encode)
            if loop.time() >= deadline:
                return await self._fetch_and_store(value_key, lock, False, fetch, encode)
            await asyncio.sleep(sleep)
            sleep = min(_POLL_MAX, sleep * 2)

    async def _fetch_and_store(
        self,
        value_key: str,
        lock: tuple[str, str],
        held: bool,
        fetch: Callable[[], Awaitable[V]],
        encode: Callable[[V], bytes],
    ) -> V:
        lock_key, token = lock
        renewing = asyncio.ensure_future(self._keep(lock_key, token)) if held else None
        try:
            self.fetches += 1
            value = await fetch()
        except BaseException:
            # Failed or cancelled: nothing is stored, and the lock goes at once so the
            # next waiter fetches itself (should this fail too, the lock expires).
            await _stop(renewing)
            if held:
                with contextlib.suppress(_RedisDown):
                    await self._op(self._release(keys=[lock_key], args=[token]))
            raise
        await _stop(renewing)
        ttl_ms = str(max(1, round(self.ttl * 1000)))
        try:
            data = encode(value)
            # A lock not held (or taken over since) is left alone: the token must match.
            await self._op(self._store(keys=[value_key, lock_key], args=[token, data, ttl_ms]))
        except _RedisDown as down:
            raise _RedisDown(down.cause, value, fetched=True) from None
        return value

    async def _keep(self, lock_key: str, token: str) -> None:
        """Renew this process's lock while its fetch runs, so a slow winner keeps it."""
        lock_ms = str(max(1, round(self.lock_ttl * 1000)))
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            try:
                await self._op(self._renew(keys=[lock_key], args=[token, lock_ms]))
            except _RedisDown:
                return  # the lock will expire; the fetch goes on

    async def _op(self, command: Awaitable[Any]) -> Any:
        self.round_trips += 1
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                return await command
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # redis-py raises many kinds; every one means "failing"
            raise _RedisDown(exc) from None

    # -- outages -------------------------------------------------------------------

    def _available(self) -> bool:
        if not self._down:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            return False
        self._retry_at = loop.time() + _RECHECK  # one probe at a time
        return True

    def _outage(self, cause: BaseException) -> None:
        self._retry_at = asyncio.get_running_loop().time() + _RECHECK
        if not self._down:
            self._down = True
            logger.warning(
                "closefunnel: Redis is unreachable for the shared web cache (%s); serving "
                "from this process's own cache until it answers again",
                type(cause).__name__,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            logger.info("closefunnel: Redis answers again; the web cache is shared again")


async def _stop(task: asyncio.Future[None] | None) -> None:
    """Cancel *task* and wait for it to end; a cancellation of the caller still raises."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task})
