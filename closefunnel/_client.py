"""
The asyncio client: the thin I/O shell around the protocol core, the gate and retries.

Every request goes the same way: build it (pure, :mod:`closefunnel._sansio`), share it
with an identical one already in flight (single-flight), then, under the retry policy,
take a permit from the endpoint group's gate, send it, teach the gate from the response
and parse it (pure again). Nothing from aiohttp or tenacity escapes: ``_send`` turns
transport failures into :class:`TransportError` and the retrier re-raises our own errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import aiohttp
import attrs

from closefunnel._auth import Credentials
from closefunnel._compare import FunnelComparison, merge_comparison
from closefunnel._errors import (
    CloseFunnelError,
    InvalidQueryError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
    TransportError,
)
from closefunnel._gate import Gate, GateSnapshot, RateLimitGate
from closefunnel._models import FunnelTotals, Pipeline, User
from closefunnel._query import Compared, FunnelQuery, validate_compared
from closefunnel._ratelimit import parse_ratelimit, wait_after_429
from closefunnel._redis_gate import RedisFallback, RedisGate
from closefunnel._retry import RetryPolicy, call_with_retries
from closefunnel._sansio import (
    DEFAULT_BASE_URL,
    Format,
    HttpRequest,
    build_get_request,
    build_totals_request,
    format_tz_offset,
    normalize_base_url,
    parse_list_response,
    parse_totals_response,
)

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["BulkItem", "Client", "PoolSnapshot", "ProgressCallback"]

logger: Final = logging.getLogger("closefunnel")

R = TypeVar("R")
T = TypeVar("T")

#: Called as ``on_progress(done, total)`` after each item of a bulk run; *total* is
#: None when the queries were not a sized collection.
ProgressCallback = Callable[[int, int | None], None]

_Response = tuple[int, Mapping[str, str], bytes]
_END: Final[Any] = object()  # the end of a bulk run's queries
_PAGE_SIZE: Final = 100  # the most Close returns per page of a list
_MAX_PAGES: Final = 1_000  # a server that always says has_more is broken, not large
#: A shared-gate lease outlives the attempt's timeout by this much before it expires.
_LEASE_MARGIN: Final = 5.0
_REDIS_HINT: Final = "the shared gate needs redis-py: pip install 'closefunnel[redis]'"


def _redis_client(value: object) -> tuple[redis.asyncio.Redis | None, bool]:
    # A URL makes a client this Client owns (and closes); an instance is the caller's.
    if value is None:
        return None, False
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise InvalidQueryError(_REDIS_HINT, field="redis", rule="extra") from None
    if isinstance(value, aioredis.Redis):
        return value, False
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidQueryError(
            "redis must be a redis://, rediss:// or unix:// URL or a redis.asyncio.Redis, "
            f"got {type(value).__name__}",
            field="redis",
            rule="type",
        )
    try:
        client = aioredis.Redis.from_url(value, socket_timeout=1.0, socket_connect_timeout=1.0)
    except ValueError:
        # The message could quote the URL, and the URL can hold a password.
        raise InvalidQueryError(
            "redis: not a usable Redis URL", field="redis", rule="url"
        ) from None
    return client, True


@attrs.frozen
class BulkItem(Generic[R]):
    """
    One finished query of a bulk run: exactly one of *result* and *error* is set.
    """

    query: FunnelQuery
    result: R | None = None
    error: CloseFunnelError | None = None

    @property
    def ok(self) -> bool:
        """Whether the query produced a result."""
        return self.error is None


@attrs.frozen(kw_only=True)
class PoolSnapshot:
    """
    A read-only view of the client's connection pool, for monitoring and leak checks.

    Attributes:
        limit: The most connections open at once (0: no limit).
        in_use: Connections handed out to requests and not yet given back to the pool.
        handed_out: Connections handed out since the session was made.
    """

    limit: int
    in_use: int
    handed_out: int


class _TrackedConnector(aiohttp.TCPConnector):
    # aiohttp keeps checked-out connections in private attributes only. This counts them
    # through public API instead: +1 for each Connection that connect() hands out, -1 when
    # its release callback runs (Connection.add_callback: called once, by release() or
    # close()). A connection dropped without either stays counted, as the leak it is.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_use = 0
        self.handed_out = 0

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        connection = await super().connect(*args, **kwargs)
        self.in_use += 1
        self.handed_out += 1
        connection.add_callback(self._given_back)
        return connection

    def _given_back(self) -> None:
        self.in_use -= 1


class _Flight:
    """One shared HTTP call and the number of callers still waiting on it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiters = 0


class Client:
    """
    An asyncio client for Close's funnel reports; use it as ``async with``.

    Args:
        api_key: A Close API key (sent as Basic auth), or
        token: an OAuth access token (sent as Bearer). Exactly one is required.
        base_url: The API root; point it at :class:`closefunnel.emulator.Emulator`'s
            ``base_url`` in tests.
        tz_offset: Hours from UTC sent as ``X-TZ-Offset``, so relative ranges such as
            ``this-month`` follow your calendar (None: Close's default, UTC).
        max_concurrency: Requests in flight at once per endpoint group.
        timeout: Seconds one attempt may take, connect to last byte.
        retry: What to retry and for how long; see :class:`RetryPolicy`.
        session: An ``aiohttp.ClientSession`` to use; the client never closes one it
            was given.
        redis: Share the rate-limit gate with every process using this Redis (a URL, or
            a ``redis.asyncio.Redis``, which the client never closes): one budget per
            credential and endpoint group for all workers and hosts on the key. Needs
            the ``redis`` extra.
        redis_fallback: When Redis is unreachable, ``"local"`` falls back to this
            process's own gate (one WARNING per outage) and returns to the shared one
            when Redis answers again; ``"fail"`` raises :class:`GateUnavailableError`.
        redis_prefix: The namespace of the shared gate's keys: clients share a gate when
            they use the same Redis, prefix and credential.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        tz_offset: float | None = None,
        max_concurrency: int = 8,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        redis: str | redis.asyncio.Redis | None = None,
        redis_fallback: RedisFallback = "local",
        redis_prefix: str = "closefunnel",
    ) -> None:
        if (api_key is None) == (token is None):
            raise InvalidQueryError(
                "pass exactly one of api_key= or token=", field="api_key", rule="credentials"
            )
        secret = api_key if api_key is not None else token
        if not isinstance(secret, str) or not secret.strip():
            raise InvalidQueryError(
                "the API key or token must be a non-empty string",
                field="api_key" if api_key is not None else "token",
                rule="non-empty",
            )
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise InvalidQueryError(
                f"max_concurrency must be an int, got {max_concurrency!r}",
                field="max_concurrency",
                rule="type",
            )
        if max_concurrency < 1:
            raise InvalidQueryError(
                f"max_concurrency must be >= 1, got {max_concurrency}",
                field="max_concurrency",
                rule="positive",
            )
        # Typed callers cannot pass junk here, but CLI and web callers pass what users typed.
        number = isinstance(timeout, int | float)
        if not number or not timeout > 0:
            raise InvalidQueryError(
                f"timeout must be > 0 seconds, got {timeout!r}", field="timeout", rule="positive"
            )
        if not isinstance(base_url, str):
            raise InvalidQueryError(
                f"base_url must be a string, got {type(base_url).__name__}",
                field="base_url",
                rule="type",
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidQueryError(
                f"retry must be a RetryPolicy, got {type(retry).__name__}",
                field="retry",
                rule="type",
            )
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise InvalidQueryError(
                f"session must be an aiohttp.ClientSession, got {type(session).__name__}",
                field="session",
                rule="type",
            )
        self._credentials = (
            Credentials.api_key(api_key) if api_key is not None else Credentials.token(secret)
        )
        self._base_url = normalize_base_url(base_url)
        self._tz_offset = format_tz_offset(tz_offset)
        self._max_concurrency = max_concurrency
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry if retry is not None else RetryPolicy()
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._redis, self._owns_redis = _redis_client(redis)
        if redis_fallback not in ("local", "fail"):
            raise InvalidQueryError(
                f"redis_fallback must be 'local' or 'fail', got {redis_fallback!r}",
                field="redis_fallback",
                rule="choice",
            )
        self._redis_fallback: RedisFallback = redis_fallback
        prefix: object = redis_prefix  # typed callers cannot pass junk; CLI callers can
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise InvalidQueryError(
                f"redis_prefix must be a non-empty string without braces, got {redis_prefix!r}",
                field="redis_prefix",
                rule="type",
            )
        self._redis_prefix = redis_prefix
        self._gates: dict[str, Gate] = {}
        self._flights: dict[tuple[Any, ...], _Flight] = {}

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel shared in-flight calls and close the session if the client made it."""
        if self._closed:
            return
        self._closed = True
        flights = [flight.task for flight in self._flights.values()]
        for task in flights:
            task.cancel()
        if flights:
            await asyncio.gather(*flights, return_exceptions=True)
        for gate in self._gates.values():
            if isinstance(gate, RedisGate):
                await gate.aclose()
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
        if self._owns_session and self._session is not None:
            await self._session.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        session = getattr(self, "_session", None)
        if getattr(self, "_owns_session", False) and session is not None and not session.closed:
            _warn(
                f"unclosed {self!r}: use 'async with Client(...)' or 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<closefunnel.Client key_id={self._credentials.key_id!r} "
            f"base_url={self._base_url!r} {state}>"
        )

    @property
    def base_url(self) -> str:
        """The API root requests go to."""
        return self._base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of this client."""
        return self._retry

    def gate_snapshots(self) -> dict[str, GateSnapshot]:
        """The state of each endpoint group's gate, by group (e.g. ``"POST report/funnel"``)."""
        return {group: gate.snapshot() for group, gate in self._gates.items()}

    def pool_snapshot(self) -> PoolSnapshot | None:
        """
        The state of the connection pool of the session the client made (None before the
        first request, or when the session was passed in: the client cannot see into it).
        """
        session = self._session
        connector = session.connector if session is not None and self._owns_session else None
        if not isinstance(connector, _TrackedConnector):
            return None
        return PoolSnapshot(
            limit=connector.limit, in_use=connector.in_use, handed_out=connector.handed_out
        )

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this closefunnel Client is closed; make a new one")
        if self._session is None:
            connector = _TrackedConnector(limit=4 * self._max_concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # -- reports -------------------------------------------------------------------

    async def funnel_totals(self, query: FunnelQuery, *, format: Format = "json") -> FunnelTotals:
        """
        Fetch one funnel totals report.

        Args:
            query: The report to fetch.
            format: ``"json"`` (aggregations and per-user rows) or ``"csv"`` (per-user
                rows only; ``aggregations`` is None).

        Raises:
            InvalidQueryError: before anything is sent, for a bad query or format.
            CloseFunnelError: the typed error Close's answer means, after retries.
        """
        request = self._totals_request(query, None, format)
        return await self._fetch_totals(request, format)

    async def compare_totals(
        self, query: FunnelQuery, *compared: Compared, format: Format = "json"
    ) -> FunnelComparison:
        """
        Fetch the base report and one report per compared range concurrently, merged.

        Each compared range is a relative range name (``"last-month"``), a same-days
        name (``"same-days-last-year"``) or a :class:`DateRange`; all are checked
        against Close's pairing rules before anything is sent. If one request fails for
        good the others are cancelled and its error is raised.
        """
        if not compared:
            raise InvalidQueryError(
                "compare_totals needs at least one compared range",
                field="compared",
                rule="required",
            )
        requests = [self._totals_request(query, None, format)]
        # Each range is checked here: None would otherwise build the base request again.
        requests += [
            self._totals_request(query, validate_compared(query, rng), format) for rng in compared
        ]
        reports = await self._all([self._fetch_totals(request, format) for request in requests])
        return merge_comparison(reports[0], zip(compared, reports[1:], strict=True))

    def totals_many(
        self,
        queries: Iterable[FunnelQuery],
        *,
        format: Format = "json",
        on_progress: ProgressCallback | None = None,
    ) -> AsyncIterator[BulkItem[FunnelTotals]]:
        """
        Fetch many reports under the one gate, yielding each as it completes.

        One failure never loses the others: it is the item's ``error``. Queries are
        taken from *queries* as capacity frees up, so a long (even endless) iterable is
        streamed rather than gathered.
        """
        return self._many(
            queries, lambda query: self.funnel_totals(query, format=format), on_progress
        )

    def compare_many(
        self,
        queries: Iterable[FunnelQuery],
        *compared: Compared,
        format: Format = "json",
        on_progress: ProgressCallback | None = None,
    ) -> AsyncIterator[BulkItem[FunnelComparison]]:
        """:meth:`compare_totals` for many queries, yielding each as it completes."""
        return self._many(
            queries,
            lambda query: self.compare_totals(query, *compared, format=format),
            on_progress,
        )

    async def pipelines(self) -> list[Pipeline]:
        """Every pipeline of the organization, with its statuses (``GET pipeline/``)."""
        return await self._list("pipeline/", Pipeline)

    async def users(self) -> list[User]:
        """Every user of the organization (``GET user/``), for showing names."""
        return await self._list("user/", User)

    # -- machinery -----------------------------------------------------------------

    def _totals_request(
        self, query: FunnelQuery, compared: Compared | None, format: Format
    ) -> HttpRequest:
        if not isinstance(query, FunnelQuery):
            raise InvalidQueryError(
                f"expected a FunnelQuery, got {type(query).__name__}", field="query", rule="type"
            )
        if not isinstance(format, str):  # an unhashable one would fail the lookup with a TypeError
            raise InvalidQueryError(
                f"format must be 'json' or 'csv', got {format!r}", field="format", rule="format"
            )
        return build_totals_request(
            query,
            credentials=self._credentials,
            base_url=self._base_url,
            compared=compared,
            format=format,
            tz_offset=self._tz_offset,
        )

    async def _fetch_totals(self, request: HttpRequest, format: Format) -> FunnelTotals:
        def parse(status: int, headers: Mapping[str, str], body: bytes) -> FunnelTotals:
            return parse_totals_response(status, headers, body, format=format, now=time.time())

        return await self._shared(request, parse)

    async def _list(self, path: str, cls: type[T]) -> list[T]:
        # Close pages lists (``_skip``/``_limit``, ``has_more``): follow every page, so a
        # large organization's users are all there, not just the first hundred.
        def parse(status: int, headers: Mapping[str, str], body: bytes) -> tuple[list[T], bool]:
            return parse_list_response(status, headers, body, cls, now=time.time())

        items: list[T] = []
        for _ in range(_MAX_PAGES):
            request = build_get_request(
                path,
                credentials=self._credentials,
                base_url=self._base_url,
                tz_offset=self._tz_offset,
                query={"_skip": len(items), "_limit": _PAGE_SIZE},
            )
            page, more = await self._shared(request, parse)
            items.extend(page)
            if not more or not page:
                return items
        raise ResponseDecodeError(f"GET {path} kept saying has_more after {_MAX_PAGES} pages")

    async def _shared(
        self, request: HttpRequest, parse: Callable[[int, Mapping[str, str], bytes], T]
    ) -> T:
        # Single-flight: identical requests in flight at once share one call. The call
        # is cancelled when the last caller waiting on it is.
        self._ensure_session()
        key = (self._credentials.key_id, request.key)
        flight = self._flights.get(key)
        if flight is None:
            task = asyncio.ensure_future(self._call(request, parse))
            flight = self._flights[key] = _Flight(task)
            task.add_done_callback(lambda _: self._forget(key, flight))
        flight.waiters += 1
        try:
            result: T = await asyncio.shield(flight.task)
            return result
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
                # Forget it now, not when it finishes: a caller arriving in between must
                # start a call of its own rather than join one that is being cancelled.
                self._forget(key, flight)

    def _forget(self, key: tuple[Any, ...], flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.done() and not flight.task.cancelled():
            flight.task.exception()  # retrieved here too, so no waiter-less error is logged

    async def _call(
        self, request: HttpRequest, parse: Callable[[int, Mapping[str, str], bytes], T]
    ) -> T:
        gate = self._gate(request.group)
        policy = self._retry
        what = f"{request.method} {request.path}"
        queued = False  # waiting for the gate (not on the wire) when the deadline hit?

        async def attempt(retry: bool) -> T:
            nonlocal queued
            queued = True
            permit = await gate.acquire(max_wait=policy.max_wait, front=retry)
            queued = False
            try:
                status, headers, body = await self._send(request)
                pause = wait_after_429(headers, body, now=time.time()) if status == 429 else 0.0
                permit.observe(status, parse_ratelimit(headers), pause=pause)
            finally:
                permit.release()
            return parse(status, headers, body)

        try:
            async with asyncio.timeout(policy.deadline):
                return await call_with_retries(attempt, policy, what=what)
        except TimeoutError as exc:
            # Held by the rate limit: a 429 pause, or a budget spent until the window ends.
            snapshot = gate.snapshot()
            held = snapshot.paused_for
            if snapshot.budget is not None and snapshot.budget < 1:
                held = max(held, snapshot.window_ends_in or 0.0)
            if queued and held > 0:
                raise RateLimitedError(
                    f"{what} did not finish within the {policy.deadline:g}s deadline: "
                    "Close's rate limit kept it waiting",
                    retry_after=held,
                ) from exc
            raise RequestTimeoutError(
                f"{what} did not finish within the retry policy's {policy.deadline:g}s deadline"
            ) from exc

    async def _send(self, request: HttpRequest) -> _Response:
        session = self._ensure_session()
        started = time.monotonic()
        try:
            async with session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
                headers = response.headers
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"{request.method} {request.path} took longer than "
                f"{self._timeout.total:g}s (the per-attempt timeout)"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise TransportError(
                f"{request.method} {request.path}: the response body was cut short ({exc})"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"{request.method} {request.path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        logger.debug(
            "closefunnel.response: %s %s -> %d in %.3fs",
            request.method,
            request.path,
            status,
            time.monotonic() - started,
        )
        return status, headers, body

    def _gate(self, group: str) -> Gate:
        gate = self._gates.get(group)
        if gate is None:
            if self._redis is not None:
                gate = RedisGate(
                    group,
                    redis=self._redis,
                    key_id=self._credentials.key_id,
                    max_concurrency=self._max_concurrency,
                    max_hold=self._retry.max_wait,
                    lease_ttl=self._timeout.total + _LEASE_MARGIN,  # type: ignore[operator]
                    fallback=self._redis_fallback,
                    prefix=self._redis_prefix,
                )
            else:
                gate = RateLimitGate(
                    group, max_concurrency=self._max_concurrency, max_hold=self._retry.max_wait
                )
            self._gates[group] = gate
        return gate

    async def _all(self, calls: Sequence[Awaitable[T]]) -> list[T]:
        # Run *calls* concurrently; the first failure cancels the rest and is raised as
        # itself (not wrapped in an ExceptionGroup).
        tasks = [asyncio.ensure_future(call) for call in calls]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [task for task in tasks if task.done() and task.exception() is not None]
            if failed:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise failed[0].exception()  # type: ignore[misc]  # checked not None above
            return [task.result() for task in tasks]
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            if any(not task.done() for task in tasks):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _many(
        self,
        queries: Iterable[FunnelQuery],
        run: Callable[[FunnelQuery], Awaitable[R]],
        on_progress: ProgressCallback | None,
    ) -> AsyncIterator[BulkItem[R]]:
        total = len(queries) if isinstance(queries, Sized) else None
        window = 2 * self._max_concurrency
        source = iter(queries)
        running: dict[asyncio.Task[R], FunnelQuery] = {}
        # Each task reports its own completion here: waiting on the queue costs the same
        # for any window, where asyncio.wait(running) would re-register on every task.
        finished: asyncio.Queue[asyncio.Task[R]] = asyncio.Queue()
        done_count = 0

        def refill() -> None:
            while len(running) < window:
                query = next(source, _END)  # not None: a None item is an error, not the end
                if query is _END:
                    return
                task = asyncio.ensure_future(run(query))
                task.add_done_callback(finished.put_nowait)
                running[task] = query

        try:
            refill()
            while running:
                task = await finished.get()
                query = running.pop(task)
                error = task.exception()
                if error is not None and not isinstance(error, CloseFunnelError):
                    raise error
                item: BulkItem[R] = (
                    BulkItem(query, error=error)
                    if error is not None
                    else BulkItem(query, result=task.result())
                )
                done_count += 1
                if on_progress is not None:
                    on_progress(done_count, total)
                yield item
                refill()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
