"""
The emulator's aiohttp.web application: auth, rate limiting, faults, routes.

One catch-all handler runs every request through the same steps in Close's order
(authenticate, throttle, then the endpoint), so every authenticated response carries the
rate-limit header and every arrival is logged once. Handler bugs never leak as silent
500s: they are answered 500 *and* recorded in ``EmulatorState.internal_errors`` so tests
can fail on them; only an injected fault produces a 5xx otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import orjson
from aiohttp import web

from closefunnel._models import FunnelTotals, UserFunnelMetrics, encode_totals_csv
from closefunnel._sansio import endpoint_group
from closefunnel.emulator._config import EmulatorConfig
from closefunnel.emulator._data import Dataset, build_dataset
from closefunnel.emulator._faults import FaultPlan
from closefunnel.emulator._funnel import FunnelIndex, ResolvedReport, resolve
from closefunnel.emulator._limiter import Decision, RateLimiter
from closefunnel.emulator._validate import ValidationFailure, parse_report_body, parse_tz_offset

__all__ = ["STATE_KEY", "EmulatorState", "LogEntry", "make_app"]

_LOG: Final = logging.getLogger("closefunnel.emulator")
_API_ROOT: Final = "/api/v1/"
_TOTALS: Final = "report/funnel/opportunity/totals"
_UNAUTHORIZED: Final = (
    "The server could not verify that you are authorized to access the URL requested.  You "
    "either supplied the wrong credentials (e.g. a bad password), or your browser doesn't "
    "understand how to supply the credentials required."
)
_CACHE_SIZE: Final = 4096
#: The key id logged and rate-limited for requests made with the OAuth token.
OAUTH_KEY_ID: Final = "oauth"


@attrs.frozen(kw_only=True)
class LogEntry:
    """
    One request as the emulator saw it.

    Attributes:
        time: ``time.monotonic()`` at arrival (the clock of asyncio's ``loop.time()``).
        key_id: The ``api_<id>`` part of the key (never the secret), ``"oauth"`` for the
            Bearer token, None when unauthenticated.
        method: HTTP method.
        path: URL path.
        status: Status sent; 0 while in flight and for ``reset`` faults (nothing sent).
        fault: The injected fault kind, or None.
    """

    time: float
    key_id: str | None
    method: str
    path: str
    status: int
    fault: str | None


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = attrs.field(factory=dict)


def _json(status: int, data: object) -> _Reply:
    return _Reply(status, orjson.dumps(data))


@attrs.define
class EmulatorState:
    """Everything a running emulator remembers (one per app, under :data:`STATE_KEY`)."""

    config: EmulatorConfig
    dataset: Dataset
    index: FunnelIndex
    limiter: RateLimiter | None
    faults: FaultPlan
    log: list[LogEntry] = attrs.field(factory=list)
    internal_errors: list[BaseException] = attrs.field(factory=list)
    clock: Callable[[], float] = time.monotonic
    _key_ids: dict[str, str] = attrs.field(factory=dict, repr=False)
    _auth_cache: dict[str, str] = attrs.field(factory=dict, repr=False)
    _cache: OrderedDict[tuple[ResolvedReport, bool], bytes] = attrs.field(
        factory=OrderedDict, repr=False
    )
    _latency_rng: random.Random = attrs.field(factory=random.Random, repr=False)

    @classmethod
    def create(cls, config: EmulatorConfig, dataset: Dataset | None = None) -> EmulatorState:
        """Build the dataset (unless given), its index, limiter and fault plan."""
        dataset = dataset or build_dataset(config)
        limiter = (
            None
            if config.rps is None
            else RateLimiter(
                rps=config.rps,
                burst=config.burst,
                window=config.window,
                org_factor=config.org_factor,
            )
        )
        state = cls(
            config=config,
            dataset=dataset,
            index=FunnelIndex(dataset),
            limiter=limiter,
            faults=FaultPlan(rate=config.fault_rate, kinds=config.faults, seed=config.seed),
        )
        state._key_ids = {key: key.partition(".")[0] for key in dataset.api_keys}
        state._latency_rng = random.Random(f"closefunnel-emulator-latency-{config.seed}")
        return state

    def now(self) -> datetime:
        """The emulator's wall clock (``config.now`` when fixed)."""
        return self.config.now or datetime.now(UTC)

    def delay(self) -> float:
        """This response's latency: ``latency`` +- uniform ``jitter``, never negative."""
        latency, jitter = self.config.latency, self.config.jitter
        if jitter:
            latency += self._latency_rng.uniform(-jitter, jitter)
        return max(0.0, latency)

    def authenticate(self, header: str | None) -> str | None:
        """The key id *header* (``Authorization``) authenticates as, or None."""
        if not header:
            return None
        cached = self._auth_cache.get(header)
        if cached is not None:
            return cached
        scheme, _, credentials = header.strip().partition(" ")
        key_id: str | None = None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            user, colon, password = decoded.partition(":")
            # Close: the API key is the username and the password is always empty.
            if colon and not password:
                key_id = self._key_ids.get(user)
        elif scheme.lower() == "bearer" and credentials.strip() == self.dataset.token:
            key_id = OAUTH_KEY_ID
        if key_id is not None and len(self._auth_cache) < 1024:
            self._auth_cache[header] = key_id
        return key_id

    def cached_report(self, spec: ResolvedReport, csv: bool) -> bytes:
        """The encoded report for *spec*, from the LRU cache when possible."""
        key = (spec, csv)
        body = self._cache.get(key)
        if body is not None:
            self._cache.move_to_end(key)
            return body
        report = self.index.report(spec)
        if csv:
            rows = report["data"]
            assert isinstance(rows, list)
            totals = FunnelTotals(
                aggregations=None, data=tuple(UserFunnelMetrics(**row) for row in rows)
            )
            body = encode_totals_csv(totals).encode()
        else:
            body = orjson.dumps(report)
        self._cache[key] = body
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return body


#: Where an app keeps its :class:`EmulatorState`.
STATE_KEY: Final = web.AppKey("closefunnel_emulator_state", EmulatorState)


# --- endpoints -----------------------------------------------------------------------------


async def _totals(request: web.Request, state: EmulatorState) -> _Reply:
    limit = state.config.max_body
    if request.content_length is not None and request.content_length > limit:
        return _json(413, {"error": f"Request body larger than {limit} bytes."})
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _json(413, {"error": f"Request body larger than {limit} bytes."})
    try:
        tz_hours = parse_tz_offset(request.headers.get("X-TZ-Offset"))
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValidationFailure(["The request body is not valid JSON."], {}) from None
        query = parse_report_body(data)
    except ValidationFailure as failure:
        return _json(400, failure.body)
    dataset = state.dataset
    if dataset.pipeline(query.pipeline) is None:
        return _json(404, {"error": "Empty query: Pipeline matching query does not exist."})
    if query.saved_search_id is not None and dataset.saved_search(query.saved_search_id) is None:
        return _json(404, {"error": "Empty query: SavedSearch matching query does not exist."})
    try:
        spec = resolve(
            query, now=state.now(), tz_hours=tz_hours, users=dataset.expand_users(query.users)
        )
    except (ValueError, OverflowError) as exc:  # a shifted range fell off the calendar
        return _json(400, {"errors": [], "field-errors": {"compared_datetime_range": str(exc)}})
    csv = "text/csv" in request.headers.get("Accept", "")
    body = state.cached_report(spec, csv)
    if csv:
        return _Reply(200, body, "text/csv")
    return _Reply(200, body)


#: Close pages list endpoints with ``_skip`` and ``_limit`` (100 at most per page).
_MAX_PAGE: Final = 100


def _listing(request: web.Request, items: list[dict[str, object]]) -> _Reply:
    try:
        skip = int(request.query.get("_skip", "0"))
        limit = int(request.query.get("_limit", str(_MAX_PAGE)))
    except ValueError:
        return _json(400, {"errors": ["_skip and _limit must be whole numbers"]})
    if skip < 0 or not 0 < limit <= _MAX_PAGE:
        return _json(400, {"errors": [f"_skip must be >= 0 and _limit 1 to {_MAX_PAGE}"]})
    page = items[skip : skip + limit]
    return _json(200, {"data": page, "has_more": skip + limit < len(items)})


async def _pipelines(request: web.Request, state: EmulatorState) -> _Reply:
    return _listing(request, [p.to_json() for p in state.dataset.pipelines])


async def _users(request: web.Request, state: EmulatorState) -> _Reply:
    return _listing(request, [u.to_json() for u in state.dataset.users])


async def _me(request: web.Request, state: EmulatorState) -> _Reply:
    dataset = state.dataset
    me: dict[str, Any] = dataset.users[0].to_json()
    me["organizations"] = [{"id": dataset.organization.id, "name": dataset.organization.name}]
    return _json(200, me)


_Handler = Callable[[web.Request, EmulatorState], Any]
_ROUTES: Final[dict[str, dict[str, _Handler]]] = {
    _TOTALS: {"POST": _totals},
    "pipeline": {"GET": _pipelines},
    "user": {"GET": _users},
    "me": {"GET": _me},
}


async def _route(request: web.Request, state: EmulatorState, rel: str | None) -> _Reply:
    methods = _ROUTES.get(rel.strip("/")) if rel is not None else None
    if methods is None:
        return _json(404, {"error": f"Not found: {request.path[:200]}"})
    handler = methods.get(request.method)
    if handler is None:
        return _json(405, {"error": f"Method {request.method} not allowed."})
    reply: _Reply = await handler(request, state)
    return reply


# --- rate-limit headers and faults ---------------------------------------------------------


def _rate_headers(style: str, decision: Decision) -> dict[str, str]:
    reset = f"{decision.reset:.3f}"
    if style == "comma":
        limit, remaining = decision.limit, decision.remaining
        return {"RateLimit": f"limit={limit}, remaining={remaining}, reset={reset}"}
    if style == "semicolon":
        limit, remaining = decision.limit, decision.remaining
        return {"RateLimit": f"limit={limit}; remaining={remaining}; reset={reset}"}
    if style == "legacy":
        return {
            "X-Rate-Limit-Limit": str(decision.limit),
            "X-Rate-Limit-Remaining": str(decision.remaining),
            "X-Rate-Limit-Reset": reset,
        }
    return {}


def _rate_limited(config: EmulatorConfig, decision: Decision, headers: dict[str, str]) -> _Reply:
    headers = {**headers, "Retry-After": str(math.ceil(decision.reset))}
    if config.legacy_429_body is None:
        return _Reply(429, b"", "application/json", headers)
    details: dict[str, object] = {
        "message": "API call count exceeded for this period",
        "rate_reset": decision.reset,
        "rate_limit": decision.limit,
        "rate_window": decision.window,
        "rate_limit_type": decision.scope,
    }
    if config.legacy_429_body == "top":
        details["rate_reset"] = f"{decision.reset:.6f}"  # a string, as seen in the wild
        return _Reply(429, orjson.dumps(details), headers=headers)
    return _Reply(429, orjson.dumps({"error": details}), headers=headers)


_FAULT_STATUS: Final = {
    "500": (500, "Internal Server Error"),
    "502": (502, "Bad Gateway"),
    "503": (503, "Service Unavailable"),
    "503-no-retry-after": (503, "Service Unavailable"),
    "504": (504, "Gateway Timeout"),
}
_MALFORMED: Final = b'{"aggregations": {"count": 1,, "data": [<html>upstream error'


async def _write(
    request: web.Request, state: EmulatorState, reply: _Reply, fault: str | None
) -> web.StreamResponse:
    if fault == "slow":
        await asyncio.sleep(state.config.slow_delay)
    if fault in ("truncate", "stall") and len(reply.body) >= 2:
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = reply.content_type
        response.content_length = len(reply.body)
        await response.prepare(request)
        half = len(reply.body) // 2
        await response.write(reply.body[:half])
        if fault == "truncate":
            if request.transport is not None:
                request.transport.close()
            return response
        await asyncio.sleep(state.config.slow_delay)
        await response.write(reply.body[half:])
        await response.write_eof()
        return response
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    arrived = state.clock()
    key_id = state.authenticate(request.headers.get("Authorization"))
    entry = LogEntry(
        time=arrived,
        key_id=key_id,
        method=request.method,
        path=request.path,
        status=0,
        fault=None,
    )
    log = state.log
    slot = len(log)
    log.append(entry)
    status, fault = 0, None
    try:
        delay = state.delay()
        path = request.path
        rel = path[len(_API_ROOT) :] if path.startswith(_API_ROOT) else None
        headers: dict[str, str] = {}
        if key_id is None:
            reply = _json(401, {"error": _UNAUTHORIZED})
        else:
            decision = None
            if state.limiter is not None:
                group = endpoint_group(request.method, rel if rel is not None else path)
                decision = state.limiter.check(key_id, group, arrived)
                headers = _rate_headers(state.config.header_style, decision)
            if decision is not None and not decision.allowed:
                reply = _rate_limited(state.config, decision, headers)
            else:
                fault = state.faults.draw(path)
                if fault in _FAULT_STATUS:
                    code, text = _FAULT_STATUS[fault]
                    extra = {"Retry-After": "1"} if fault == "503" else {}
                    reply = _Reply(code, orjson.dumps({"error": text}), headers=headers | extra)
                elif fault == "reset":
                    if delay:
                        await asyncio.sleep(delay)
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=204)
                elif fault == "malformed":
                    reply = _Reply(200, _MALFORMED, headers=headers)
                else:
                    try:
                        reply = await _route(request, state, rel)
                    except Exception as exc:
                        # A bug, not a fault: answer, keep serving, and make it visible.
                        state.internal_errors.append(exc)
                        _LOG.exception("closefunnel.emulator.internal_error")
                        reply = _json(500, {"error": "Internal emulator error."})
                    reply = attrs.evolve(reply, headers=reply.headers | headers)
        if delay:
            await asyncio.sleep(delay)
        status = reply.status
        return await _write(request, state, reply, fault)
    finally:
        log[slot] = attrs.evolve(entry, status=status, fault=fault)


def make_app(*, config: EmulatorConfig, state: EmulatorState | None = None) -> web.Application:
    """
    A fresh emulator application for *config* (state built from it unless given).

    Serve it with any aiohttp runner, or use :class:`~closefunnel.emulator.Emulator`,
    which also binds a free loopback port and exposes keys and the log.
    """
    # Bodies are size-checked by the handler (413 with a JSON error); the extra room
    # only lets aiohttp hand oversized bodies over so that the check can see them.
    app = web.Application(client_max_size=config.max_body + 1)
    app[STATE_KEY] = state or EmulatorState.create(config)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app
