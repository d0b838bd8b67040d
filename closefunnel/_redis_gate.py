"""
The shared gate: one rate-limit budget per credential and endpoint group for every
process and host that uses the same Redis, so N workers on one key pace themselves as
one client instead of each believing it owns the key.

The state lives in Redis and changes only inside :data:`closefunnel._redis_script.STEP`,
one atomic script on Redis's clock. Each process keeps what needs its own event loop: a
FIFO queue of its callers, its cap on requests in flight, and one dispatcher task that
calls the script, settling the permits given back since the last call and asking for as
many permits as it has callers waiting (one round trip for both). Callers never wait on
Redis to give a permit back.

Redis unreachable or failing: with ``fallback="local"`` (the default) the process falls
back to its own in-process gate, with one WARNING per outage, and returns to the shared
state once Redis answers again; the server's headers and 429s still protect the key in
between. With ``fallback="fail"`` callers get :class:`GateUnavailableError` instead. A
reply that is not what the script returns (a damaged or foreign value in the gate's keys,
or something other than Redis answering) counts as Redis failing, never as a crash of the
dispatcher. The process's cap on requests in flight counts both kinds of permit: the
shared leases still out when an outage begins count against the local gate, and the local
permits still out when Redis is back count against the shared one.

What lives only here and in the script, not in the pure
:class:`~closefunnel._budget.Budget`: leases and their expiry, fairness between
processes, and settling at most once (see :mod:`closefunnel._redis_script`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import attrs

from closefunnel._budget import jitter_cap
from closefunnel._errors import GateUnavailableError
from closefunnel._gate import GatePermit, GateSnapshot, RateLimitGate, too_long_error
from closefunnel._options import RedisFallback
from closefunnel._ratelimit import RateLimitInfo
from closefunnel._redis_script import POLL, STEP

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisGate", "RedisHealth", "SharedPermit"]

logger: Final = logging.getLogger("closefunnel.gate")

#: The most a script call may take before Redis counts as failing.
_OP_TIMEOUT: Final = 2.0
#: How often a process that fell back checks whether Redis answers again.
_RECHECK: Final = 1.0
#: How long learned state outlives the last request (seconds).
_KEY_TTL: Final = 3600.0
_SAFE: Final = re.compile(r"[^A-Za-z0-9_.:-]")


class _FellBack(Exception):
    """Internal: Redis failed while the caller queued; go to the local gate."""


class RedisHealth:
    """
    Whether one Redis answers, as the gates of one client see it: an outage is one
    WARNING (and its end one more), however many endpoint groups notice it.
    """

    def __init__(self) -> None:
        self.down = 0  # gates that found Redis unreachable and have not seen it back

    def lost(self, message: str) -> None:
        """A gate found Redis unreachable."""
        if self.down == 0:
            logger.warning(message)
        self.down += 1

    def back(self, message: str) -> None:
        """A gate that had lost Redis reached it again."""
        self.down = max(0, self.down - 1)
        if self.down == 0:
            logger.warning(message)


class SharedPermit:
    """A permit granted by the shared gate: a lease in Redis until it is given back."""

    __slots__ = ("_facts", "_gate", "_observed_at", "_released", "seen", "seq", "token")

    def __init__(self, gate: RedisGate, token: str, seq: int, seen: int) -> None:
        self._gate = gate
        self._facts: tuple[int, RateLimitInfo | None, float, float] | None = None
        self._observed_at = 0.0
        self._released = False
        self.token = token
        self.seq = seq
        self.seen = seen

    def observe(self, status: int, info: RateLimitInfo | None, *, pause: float = 0.0) -> None:
        """Remember what came back; it reaches Redis with :meth:`release`."""
        if self._facts is None:
            jitter = self._gate._rng.uniform(0.0, jitter_cap(pause)) if status == 429 else 0.0
            self._facts = (status, info, pause, jitter)
            self._observed_at = self._gate.clock()

    def release(self, *, refund: bool = False) -> None:
        """Give the lease back (queued for the dispatcher's next script call)."""
        if not self._released:
            self._released = True
            self._gate._settle(self, refund)

    def settle_args(self, refund: bool) -> list[str]:
        """This permit's fields of the script's settle list."""
        if self._facts is None:
            unanswered = _refund_args(self.token)
            unanswered[1:3] = [str(self.seq), str(self.seen)]
            unanswered[11] = "1" if refund else "0"
            return unanswered
        status, info, pause, jitter = self._facts
        limit = "" if info is None or info.limit is None else repr(float(info.limit))
        return [
            self.token,
            str(self.seq),
            str(self.seen),
            "1",
            str(status),
            "0" if info is None else "1",
            limit,
            "0" if info is None else repr(float(info.remaining)),
            "0" if info is None else repr(float(info.reset)),
            repr(float(pause)),
            repr(jitter),
            "1" if refund else "0",
            repr(self._observed_at),  # made an age when sent: Redis learns as of then
        ]


class _LocalPermit:
    """A permit of the local gate, taken while Redis failed; see :class:`RedisGate`."""

    __slots__ = ("_gate", "_permit", "_released")

    def __init__(self, gate: RedisGate, permit: GatePermit) -> None:
        self._gate = gate
        self._permit = permit
        self._released = False

    def observe(self, status: int, info: RateLimitInfo | None, *, pause: float = 0.0) -> None:
        """Teach the local gate from one response."""
        self._permit.observe(status, info, pause=pause)

    def release(self, *, refund: bool = False) -> None:
        """Give the permit back to the local gate, and its slot under the cap."""
        if not self._released:
            self._released = True
            self._permit.release(refund=refund)
            self._gate._local_released()


def gate_keys(prefix: str, key_id: str, group: str) -> list[str]:
    """The Redis keys of one gate: one hash tag, so the script works on Redis Cluster."""
    tag = _SAFE.sub("_", f"{key_id}:{group}")
    parts = ("state", "leases", "lease_seq", "waiting", "expired")
    return [f"{prefix}:{{{tag}}}:{part}" for part in parts]


@attrs.frozen
class _Reply:
    """One script reply, checked (see :func:`_parse`); points in time on Redis's clock."""

    now: float
    asked_wait: float
    wait: float
    budget: float | None
    window_end: float | None
    pause_until: float | None
    probing: bool
    in_flight: int
    rate_limited: int
    grants: tuple[tuple[str, int, int], ...]  # (token, seq, seen)


class _BadReply(ValueError):
    """Internal: the reply is not what the script returns."""


def _parse(reply: object, tokens: Sequence[str]) -> _Reply:
    """
    The script's reply, checked before any of it is used: every number finite, every
    count a count, every grant one of the *tokens* this call sent (once). Anything else
    (a damaged or foreign value in the gate's keys, or something other than Redis
    answering) raises :class:`_BadReply`, which the dispatcher treats as Redis failing
    rather than dying of it with callers queued.
    """
    if not isinstance(reply, list) or len(reply) < 10:
        raise _BadReply("not a list of at least 10 fields")
    fields = [_text(value) for value in reply]
    count = _count(fields[9])
    if count > len(tokens) or len(fields) != 10 + 3 * count:
        raise _BadReply(f"{count} grants for {len(tokens)} asked, in {len(fields)} fields")
    asked = set(tokens)
    grants: list[tuple[str, int, int]] = []
    for index in range(10, len(fields), 3):
        token, seq, seen = fields[index : index + 3]
        if token not in asked:
            raise _BadReply("a grant of a token this call did not send")
        asked.discard(token)
        grants.append((token, _count(seq), _count(seen)))
    if fields[6] not in ("0", "1"):
        raise _BadReply("the probe flag is neither 0 nor 1")
    return _Reply(
        now=_finite(fields[0]),
        asked_wait=_duration(fields[1]),
        wait=_duration(fields[2]),
        budget=_optional(fields[3]),
        window_end=_optional(fields[4]),
        pause_until=_optional(fields[5]),
        probing=fields[6] == "1",
        in_flight=_count(fields[7]),
        rate_limited=_count(fields[8]),
        grants=tuple(grants),
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise _BadReply("a field that is not ASCII") from None
    if isinstance(value, str):
        return value
    raise _BadReply(f"a field of type {type(value).__name__}")


def _count(text: str) -> int:
    if not (0 < len(text) <= 18 and text.isascii() and text.isdigit()):
        raise _BadReply("a count that is not a non-negative integer")
    return int(text)


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadReply("a number that is not a number") from None
    if not math.isfinite(value):
        raise _BadReply("a number that is not finite")
    return value


def _optional(text: str) -> float | None:
    return None if text == "" else _finite(text)


def _duration(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise _BadReply("a negative wait")
    return value


class RedisGate:
    """
    Admission control for one credential and endpoint group, shared through Redis.

    Args:
        group: The endpoint group.
        redis: The client to talk to Redis with.
        key_id: The credential's shown id (never the secret): part of every key.
        max_concurrency: The most requests this process has in flight at once.
        max_hold: The longest any hold lasts before one probe goes out.
        lease_ttl: Seconds a permit is held for at most: a worker killed while holding
            it gives it back after this.
        fallback: What to do when Redis fails: ``"local"`` or ``"fail"``.
        prefix: The namespace of every key.
        health: Shared by the gates of one client, so an outage is one WARNING.
        seed: Seed for the pause jitter (None = random).
    """

    def __init__(
        self,
        group: str,
        *,
        redis: redis.asyncio.Redis,
        key_id: str,
        max_concurrency: int,
        max_hold: float = math.inf,
        lease_ttl: float = 60.0,
        fallback: RedisFallback = "local",
        prefix: str = "closefunnel",
        health: RedisHealth | None = None,
        seed: int | None = None,
    ) -> None:
        self.group = group
        self._health = health if health is not None else RedisHealth()
        self._redis = redis
        self._script = redis.register_script(STEP)
        self._keys = gate_keys(prefix, key_id, group)
        self._cap = max_concurrency
        self._max_hold = max_hold if math.isfinite(max_hold) else 1e9
        self._lease_ttl = lease_ttl
        self._fallback: RedisFallback = fallback
        self._rng = random.Random(seed)
        self._pid = secrets.token_hex(6)  # this gate's id among the processes sharing it
        # One cap for both kinds of permit: the shared leases still out during an outage
        # count against the local gate, and its permits still out when Redis is back
        # against the shared one (self._local_out).
        self._local = RateLimitGate(
            group,
            max_concurrency=max_concurrency,
            max_hold=max_hold,
            held_elsewhere=self._leases_out,
        )
        self._local_out = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: collections.deque[tuple[asyncio.Future[SharedPermit], float]] = (
            collections.deque()
        )
        self._pending: list[list[str]] = []
        self._held: set[str] = set()  # tokens of this process's live leases
        self._sent = 0
        self._wake = asyncio.Event()
        self._holding = False  # the dispatcher sleeps until a known time: new callers wait
        self._task: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._down = False
        self._closed = False
        # The last script reply, for snapshots and for telling impatient callers at once.
        self._asked_until = 0.0
        self._seen_at = 0.0
        self._reply: tuple[float | None, float | None, float | None, bool, int] = (
            None, None, None, False, 0
        )  # fmt: skip
        self.round_trips = 0

    # -- acquiring -----------------------------------------------------------------

    async def acquire(self, *, max_wait: float = math.inf, front: bool = False) -> GatePermit:
        """Wait for a permit; see :meth:`closefunnel._gate.RateLimitGate.acquire`."""
        loop = self._bind()
        if self._closed:
            raise RuntimeError("this shared rate-limit gate is closed")
        if self._down:
            return await self._local_acquire(max_wait, front)
        held_for = self._asked_until - loop.time()
        if held_for > max_wait:
            raise too_long_error(self.group, held_for, max_wait)
        future: asyncio.Future[SharedPermit] = loop.create_future()
        entry = (future, max_wait)
        if front:
            self._waiters.appendleft(entry)
        else:
            self._waiters.append(entry)
        self._start()
        if not self._holding:
            self._wake.set()
        try:
            return await future
        except _FellBack:
            return await self._local_acquire(max_wait, front)
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release(refund=True)  # granted, never sent
            else:
                future.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            raise

    def try_acquire(self) -> GatePermit | None:
        """Always None: every shared permit comes from Redis, which cannot answer at once."""
        return None

    async def _local_acquire(self, max_wait: float, front: bool) -> GatePermit:
        if self._fallback == "fail":
            raise GateUnavailableError(
                f"{self.group}: Redis, which holds the shared rate-limit gate, is unreachable "
                "(redis_fallback='fail')"
            )
        permit = await self._local.acquire(max_wait=max_wait, front=front)
        self._local_out += 1
        return _LocalPermit(self, permit)

    def _leases_out(self) -> int:
        return len(self._held)

    def _local_released(self) -> None:
        self._local_out -= 1
        if self._down or self._closed or not self._waiters:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._start()  # a slot under the cap is free for the shared dispatcher
            if not self._holding:
                self._wake.set()

    def snapshot(self) -> GateSnapshot:
        """The gate's state as the last script call saw it, and this process's queue."""
        if self._down:
            local = self._local.snapshot()  # plus the shared permits still out
            return attrs.evolve(local, in_flight=local.in_flight + len(self._held))
        now = self._loop.time() if self._loop is not None else 0.0
        budget, window_end, pause_until, probing, rate_limited = self._reply
        age = now - self._seen_at
        return GateSnapshot(
            group=self.group,
            in_flight=len(self._held) + self._local.snapshot().in_flight,
            waiting=sum(1 for future, _ in self._waiters if not future.done()),
            max_concurrency=self._cap,
            paused_for=0.0 if pause_until is None else max(0.0, pause_until - age),
            budget=budget,
            window_ends_in=None if window_end is None else window_end - age,
            probing=probing,
            sent=self._sent,
            rate_limited=rate_limited,
            shared=True,
        )

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a closefunnel client is bound to the event loop it first ran on")
        return loop

    def clock(self) -> float:
        """This process's monotonic clock (durations only)."""
        return self._loop.time() if self._loop is not None else 0.0

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._dispatch())

    def _settle(self, permit: SharedPermit, refund: bool) -> None:
        if permit.token not in self._held:
            return
        self._held.discard(permit.token)
        # Kept through an outage too (at most the permits out when it began): sent when
        # Redis answers again, so their leases do not hold every process until expiry.
        self._pending.append(permit.settle_args(refund))
        if self._down:
            self._local.wake()  # a slot under the cap is free for the local gate
            return
        if self._loop is not None and not self._loop.is_closed() and not self._closed:
            self._start()
            self._wake.set()

    # -- the dispatcher ------------------------------------------------------------

    def _live_waiters(self) -> int:
        while self._waiters and self._waiters[0][0].done():
            self._waiters.popleft()
        return sum(1 for future, _ in self._waiters if not future.done())

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            want = min(self._live_waiters(), self._cap - len(self._held) - self._local_out)
            if not self._pending and want <= 0:
                if not self._waiters and not self._held:
                    return  # idle: the next acquire or release starts a new task
                self._wake.clear()
                await self._wake.wait()
                continue
            settles, self._pending = self._pending, []
            try:
                reply = await self._call(settles, max(0, want))
            except _RedisFailure as failure:
                self._outage(failure.cause)
                return
            wait = self._take(reply, loop)
            if wait > 0 and self._live_waiters() > 0 and not self._pending:
                self._holding = wait > POLL
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                self._holding = False

    async def _call(self, settles: list[list[str]], want: int) -> _Reply:
        args: list[str] = [repr(self._max_hold), repr(self._lease_ttl), repr(_KEY_TTL)]
        args.append(str(len(settles)))
        now = self.clock()
        for fields in settles:
            # An answer is learned as of when it arrived, not when Redis hears of it: the
            # window it describes ends its reset after that. (A duration on this
            # process's clock; Redis's clock stays the only one for points in time.)
            args.extend(fields[:12])
            args.append(repr(max(0.0, now - float(fields[12]))) if fields[12] else "0")
        tokens = [secrets.token_hex(8) for _ in range(want)]
        args.append(str(want))
        args.extend(tokens)
        # A process at its cap takes nothing now: it does not count among those waiting.
        args += [self._pid, "1" if want == 0 else "0"]
        self.round_trips += 1
        try:
            async with asyncio.timeout(_OP_TIMEOUT):
                raw = await self._script(keys=self._keys, args=args)
            return _parse(raw, tokens)
        except BaseException as exc:
            # Cancelled mid-call (the client is closing), failed, or answered with
            # something that is not the script's reply: the settles may not have run and
            # the tokens may have been granted. They are sent again, by aclose() or once
            # Redis answers again, the tokens as refunds. The script applies a settle at
            # most once, so one that did run changes nothing the second time.
            self._pending[:0] = settles
            self._pending.extend(_refund_args(token) for token in tokens)
            if isinstance(exc, Exception):  # redis-py raises many kinds: all "failing"
                raise _RedisFailure(exc) from None
            raise

    def _take(self, reply: _Reply, loop: asyncio.AbstractEventLoop) -> float:
        now = loop.time()
        self._reply = (
            reply.budget,
            None if reply.window_end is None else reply.window_end - reply.now,
            None if reply.pause_until is None else reply.pause_until - reply.now,
            reply.probing,
            reply.rate_limited,
        )
        self._seen_at = now
        self._asked_until = now + reply.asked_wait
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "closefunnel.gate: %s shared step: %d granted, wait %.3fs, budget %s, "
                "%d in flight, %d waiting here",
                self.group, len(reply.grants), reply.wait, reply.budget, reply.in_flight,
                self._live_waiters(),
            )  # fmt: skip
        for token, seq, seen in reply.grants:
            permit = SharedPermit(self, token, seq, seen)
            self._held.add(permit.token)
            self._sent += 1
            if not self._hand(permit):
                permit.release(refund=True)  # every caller left: never sent
        if reply.asked_wait > 0:
            for future, max_wait in list(self._waiters):
                if not future.done() and reply.asked_wait > max_wait:
                    future.set_exception(too_long_error(self.group, reply.asked_wait, max_wait))
        return reply.wait

    def _hand(self, permit: SharedPermit) -> bool:
        while self._waiters:
            future, _ = self._waiters.popleft()
            if not future.done():
                future.set_result(permit)
                return True
        return False

    # -- outages -------------------------------------------------------------------

    def _outage(self, cause: BaseException) -> None:
        if not self._down:
            self._down = True
            what = "falling back to this process's own gate" if self._fallback == "local" else (
                "failing calls (redis_fallback='fail')"
            )  # fmt: skip
            why = "an unexpected script reply" if isinstance(cause, _BadReply) else (
                type(cause).__name__
            )  # fmt: skip
            self._health.lost(
                f"closefunnel: Redis is unreachable or failing for the shared rate-limit gate "
                f"({why}); {what} until it answers again"
            )
        # The settles not sent and the permits still out stay: they reach Redis when it
        # answers again (or their leases expire there, if it never does).
        while self._waiters:
            future, _ = self._waiters.popleft()
            if not future.done():
                future.set_exception(_FellBack())
        if self._recheck is None or self._recheck.done():
            self._recheck = asyncio.ensure_future(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while self._down and not self._closed:
            await asyncio.sleep(_RECHECK)
            settles, self._pending = self._pending, []
            try:
                await self._call(settles, 0)
            except _RedisFailure:
                continue
            self._down = False
            if self._pending:  # given back while the recheck was on its way
                self._start()
                self._wake.set()
            self._health.back(
                "closefunnel: Redis answers again; the rate-limit gate is shared again"
            )

    async def aclose(self) -> None:
        """Give back the leases still queued for Redis, then stop the dispatcher."""
        self._closed = True
        for task in (self._task, self._recheck):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._pending and not self._down:
            settles, self._pending = self._pending, []
            with contextlib.suppress(_RedisFailure, asyncio.CancelledError):
                await self._call(settles, 0)


class _RedisFailure(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _refund_args(token: str) -> list[str]:
    return [token, "0", "0", "0", "0", "0", "", "0", "0", "0", "0", "1", ""]
