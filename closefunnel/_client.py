"""
The asyncio client: the thin I/O shell around the protocol core, the gate and retries.

Every request goes the same way: build it (pure, :mod:`closefunnel._sansio`), share it
with an identical one already in flight (:mod:`closefunnel._singleflight`), then, under
the retry policy, take a permit from the endpoint group's gate, send it (reading the body
with a cap), interpret the response once (pure again: value or typed error, rate-limit
facts, 429 pause), teach the gate and give the permit back. Nothing from aiohttp or
tenacity escapes: ``_send`` turns transport failures into :class:`TransportError` (raised
``from None``: aiohttp's errors hold the request headers), the retrier re-raises our own
errors, and every error is scrubbed of the secret (:mod:`closefunnel._redact`) on its way
out. Options are checked by :class:`closefunnel._options.ClientOptions`; many calls at
once are :mod:`closefunnel._bulk`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp

from closefunnel._bulk import BulkItem, ProgressCallback, all_or_first_error, stream
from closefunnel._compare import FunnelComparison, merge_comparison
from closefunnel._environment import client_defaults
from closefunnel._errors import (
    ClientClosedError,
    CloseFunnelError,
    InvalidQueryError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
)
from closefunnel._gate import Gate, GatePermit, GateSnapshot, RateLimitGate
from closefunnel._models import FunnelTotals, Pipeline, User
from closefunnel._options import DEFAULT_MAX_RESPONSE_BYTES, ClientOptions, RedisFallback
from closefunnel._periods import PeriodResolver
from closefunnel._query import Compared, DateRange, FunnelQuery, validate_compared
from closefunnel._redact import redact_error
from closefunnel._redis_gate import RedisGate, RedisHealth
from closefunnel._retry import RetryPolicy, call_with_retries, is_retryable
from closefunnel._sansio import (
    Format,
    HttpRequest,
    build_get_request,
    build_totals_request,
    interpret,
    list_decoder,
    totals_decoder,
)
from closefunnel._singleflight import SingleFlight
from closefunnel._transport import PoolSnapshot, TrackedConnector, send

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["BulkItem", "Client", "PoolSnapshot", "ProgressCallback"]

logger: Final = logging.getLogger("closefunnel")

T = TypeVar("T")

_PAGE_SIZE: Final = 100  # the most Close returns per page of a list
_MAX_PAGES: Final = 1_000  # a server that always says has_more is broken, not large
#: A shared-gate lease outlives the attempt's timeout by this much before it expires.
_LEASE_MARGIN: Final = 5.0


class Client:
    """
    An asyncio client for Close's funnel reports; use it as ``async with``.

    Args:
        api_key: A Close API key (sent as Basic auth), or
        token: an OAuth access token (sent as Bearer). At most one; with neither, the
            key is read from ``CLOSE_API_KEY`` (as the command line does).
        base_url: The API root; point it at :class:`closefunnel.emulator.Emulator`'s
            ``base_url`` in tests. Not given: ``CLOSE_BASE_URL``, else Close's.
        tz_offset: Hours from UTC sent as ``X-TZ-Offset``, so relative ranges such as
            ``this-month`` follow your calendar (None: Close's default, UTC).
        max_concurrency: Requests in flight at once per endpoint group.
        timeout: Seconds one attempt may take, connect to last byte.
        retry: What to retry and for how long; see :class:`RetryPolicy`.
        session: An ``aiohttp.ClientSession`` to use; the client never closes one it
            was given.
        max_response_bytes: The longest response body read (default 32 MiB; a
            10,000-user report is about 3 MiB). Past it the client stops reading,
            closes the connection and raises :class:`ResponseTooLargeError` (never
            retried). Error bodies are read and kept up to 64 KiB, the cut said.
        allow_insecure_http: Allow a plain ``http://`` *base_url* to a host other than
            this machine (refused by default: the key would travel in clear text).
        clock: Returns the current time (an aware datetime); relative ranges
            (``this-month``) and same-days shifts are resolved on it into the absolute
            ranges results carry (``FunnelTotals.range``, ``FunnelComparison.base_range``).
            Default: the system clock. Tests point it at the emulator's ``now``.
        redis: Share the rate-limit gate with every process using this Redis (a URL, or
            a ``redis.asyncio.Redis``, which the client never closes): one budget per
            credential and endpoint group for all workers and hosts on the key. Needs
            the ``redis`` extra.
        redis_fallback: When Redis is unreachable, ``"local"`` falls back to this
            process's own gate (one WARNING per outage) and returns to the shared one
            when Redis answers again; ``"fail"`` raises :class:`GateUnavailableError`.
        redis_prefix: The namespace of the shared gate's keys: clients share a gate when
            they use the same Redis, prefix and credential.

    Raises:
        InvalidQueryError: an option is invalid, naming the field and the rule.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        base_url: str | None = None,
        tz_offset: float | None = None,
        max_concurrency: int = 8,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
        redis: str | redis.asyncio.Redis | None = None,
        redis_fallback: RedisFallback = "local",
        redis_prefix: str = "closefunnel",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        api_key, base_url = client_defaults(api_key=api_key, token=token, base_url=base_url)
        options = ClientOptions(
            api_key=api_key,
            token=token,
            base_url=base_url,
            tz_offset=tz_offset,
            max_concurrency=max_concurrency,
            timeout=timeout,
            retry=retry,
            session=session,
            max_response_bytes=max_response_bytes,
            allow_insecure_http=allow_insecure_http,
            redis=redis,
            redis_fallback=redis_fallback,
            redis_prefix=redis_prefix,
            clock=clock,
        )
        self._options = options
        self._credentials = options.credentials()
        self._base_url = options.normalized_base_url()
        self._tz_offset = options.tz_header()
        self._max_concurrency = options.max_concurrency
        self._max_response_bytes = options.max_response_bytes
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._retry = options.retry if options.retry is not None else RetryPolicy()
        # One attempt cannot outlast the deadline: a first attempt sent at once needs no
        # deadline timer of its own (see _call_with_retries).
        self._attempt_within_deadline = options.timeout < self._retry.deadline
        self._session = options.session
        self._owns_session = options.session is None
        self._closed = False
        self._redis, self._owns_redis = options.redis_client()
        self._redis_health = RedisHealth()
        self._gates: dict[str, Gate] = {}
        self._flights: SingleFlight[tuple[Any, ...], Any] = SingleFlight()
        self._periods = PeriodResolver(clock=options.clock, tz_offset=options.tz_offset)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """
        Close the client: calls still in flight end with :class:`ClientClosedError`,
        and the session is closed if the client made it.
        """
        if self._closed:
            return
        self._closed = True
        if self._flights:
            # One turn of the loop first: a call started just now begins its work, so
            # the cancellation below reaches its own handler (which says the client
            # closed) rather than a task that never ran. No call can start after this.
            await asyncio.sleep(0)
        await self._flights.cancel_all()
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
        if not isinstance(connector, TrackedConnector):
            return None
        return PoolSnapshot(
            limit=connector.limit, in_use=connector.in_use, handed_out=connector.handed_out
        )

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("this closefunnel Client is closed; make a new one")
        if self._session is None:
            connector = TrackedConnector(limit=4 * self._max_concurrency, limit_per_host=0)
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
        return await self._fetch_totals(request, format, self._periods.period(query, None))

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
        checked = [validate_compared(query, rng) for rng in compared]
        requests += [self._totals_request(query, rng, format) for rng in checked]
        # Resolved once, when the requests go out, so every period is of the same moment.
        periods = [self._periods.period(query, None)]
        periods += [self._periods.period(query, rng) for rng in checked]
        reports = await all_or_first_error(
            [
                self._fetch_totals(request, format, period)
                for request, period in zip(requests, periods, strict=True)
            ]
        )
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
        return stream(
            queries,
            lambda query: self._totals_led(query, format),
            window=self._max_concurrency,
            on_progress=on_progress,
        )

    def compare_many(
        self,
        queries: Iterable[FunnelQuery],
        *compared: Compared,
        format: Format = "json",
        on_progress: ProgressCallback | None = None,
    ) -> AsyncIterator[BulkItem[FunnelComparison]]:
        """:meth:`compare_totals` for many queries, yielding each as it completes."""
        return stream(
            queries,
            lambda query: self.compare_totals(query, *compared, format=format),
            window=self._max_concurrency,
            on_progress=on_progress,
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

    def _fetch_totals(
        self, request: HttpRequest, format: Format, period: DateRange
    ) -> asyncio.Future[FunnelTotals]:
        # The range goes on in the shared call: callers sharing one request share one
        # report, as Close resolved it once for them all.
        return self._join(request, totals_decoder(format, range=period))

    def _totals_led(self, query: FunnelQuery, format: Format) -> Awaitable[FunnelTotals]:
        """
        :meth:`funnel_totals` for a bulk run's worker: the call runs in the worker's own
        task (see :meth:`SingleFlight.lead`), so a query costs no task of its own. Not a
        coroutine itself: one frame fewer for every resumption of the worker.
        """
        request = self._totals_request(query, None, format)
        decode = totals_decoder(format, range=self._periods.period(query, None))
        self._ensure_session()
        work: Awaitable[FunnelTotals] = self._flights.lead(
            self._flight_key(request), lambda: self._call(request, decode)
        )
        return work

    async def _list(self, path: str, cls: type[T]) -> list[T]:
        # Close pages lists (``_skip``/``_limit``, ``has_more``): follow every page, so a
        # large organization's users are all there, not just the first hundred.
        decode = list_decoder(cls)
        items: list[T] = []
        for _ in range(_MAX_PAGES):
            request = build_get_request(
                path,
                credentials=self._credentials,
                base_url=self._base_url,
                tz_offset=self._tz_offset,
                query={"_skip": len(items), "_limit": _PAGE_SIZE},
            )
            page, more = await self._shared(request, decode)
            items.extend(page)
            if not more or not page:
                return items
        raise ResponseDecodeError(f"GET {path} kept saying has_more after {_MAX_PAGES} pages")

    def _join(self, request: HttpRequest, decode: Callable[[bytes], T]) -> asyncio.Future[T]:
        """The shared call of *request* as a future; cancelling it leaves the call."""
        self._ensure_session()
        return self._flights.join(self._flight_key(request), lambda: self._call(request, decode))

    def _flight_key(self, request: HttpRequest) -> tuple[Any, ...]:
        """What identical requests share a call by: the credential and the request."""
        return (self._credentials.key_id, request.key)

    async def _shared(self, request: HttpRequest, decode: Callable[[bytes], T]) -> T:
        # Single-flight: identical requests in flight at once share one call, which is
        # cancelled when the last caller waiting on it is.
        self._ensure_session()
        key = self._flight_key(request)
        try:
            result: T = await self._flights.run(key, lambda: self._call(request, decode))
        except asyncio.CancelledError:
            # Cancelled, but not by our caller's own cancellation: aclose() cancelled
            # the shared call under it. Say so, rather than look like the caller's own.
            if not self._closed or _cancelling():
                raise
            raise _closed_error(request) from None
        return result

    async def _call(self, request: HttpRequest, decode: Callable[[bytes], T]) -> T:
        try:
            gate = self._gate(request.group)
            started = time.monotonic()
            failure: Exception | None = None
            permit = gate.try_acquire() if self._attempt_within_deadline else None
            if permit is not None:
                # Sent at once, and one attempt ends within the per-attempt timeout,
                # which is shorter than the deadline: no deadline timer to arm for it.
                # A retry goes on under the deadline that began at *started*.
                try:
                    return await self._exchange(permit, request, decode)
                except Exception as exc:
                    if not is_retryable(exc, self._retry):
                        raise
                    failure = exc
            return await self._call_with_retries(gate, request, decode, started, failure)
        except CloseFunnelError as exc:
            # Everything a response carries may repeat the request, Authorization
            # included: no form of the secret leaves in an error.
            redact_error(exc, self._credentials.redact)
            raise
        except asyncio.CancelledError:
            if not self._closed:
                raise  # the last caller left: nobody is waiting for an answer
            # aclose() cancelled the call: every caller, and every bulk item, learns why.
            raise _closed_error(request) from None

    async def _call_with_retries(
        self,
        gate: Gate,
        request: HttpRequest,
        decode: Callable[[bytes], T],
        started: float,
        failure: Exception | None,
    ) -> T:
        policy = self._retry
        what = f"{request.method} {request.path}"
        queued = False  # waiting for the gate (not on the wire) when the deadline hit?

        async def attempt(retry: bool) -> T:
            nonlocal queued
            queued = True
            permit = await gate.acquire(max_wait=policy.max_wait, front=retry)
            queued = False
            return await self._exchange(permit, request, decode)

        try:
            async with asyncio.timeout(policy.deadline - (time.monotonic() - started)):
                return await call_with_retries(
                    attempt, policy, what=what, started=started, failure=failure
                )
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

    async def _exchange(
        self, permit: GatePermit, request: HttpRequest, decode: Callable[[bytes], T]
    ) -> T:
        """One attempt with a permit in hand: send, interpret once, teach the gate."""
        try:
            status, headers, body = await send(
                self._ensure_session(),
                request,
                attempt_timeout=self._timeout,
                max_response_bytes=self._max_response_bytes,
            )
            outcome = interpret(status, headers, body, now=time.time(), decode=decode)
            permit.observe(status, outcome.ratelimit, pause=outcome.pause)
        finally:
            permit.release()
        return outcome.unwrap()

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
                    fallback=self._options.redis_fallback,
                    prefix=self._options.redis_prefix,
                    health=self._redis_health,
                )
            else:
                gate = RateLimitGate(
                    group, max_concurrency=self._max_concurrency, max_hold=self._retry.max_wait
                )
            self._gates[group] = gate
        return gate


def _closed_error(request: HttpRequest) -> ClientClosedError:
    return ClientClosedError(
        f"{request.method} {request.path} did not finish: the closefunnel Client was closed "
        "while it was in flight"
    )


def _cancelling() -> bool:
    """Whether the current task is being cancelled (by its own caller)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
