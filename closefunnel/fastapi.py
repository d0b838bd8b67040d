"""
FastAPI integration: one client per app, a dependency for routes, a ready router.

Install with ``pip install 'closefunnel[fastapi]'``. ::

    from fastapi import Depends, FastAPI
    import closefunnel as cf
    from closefunnel.fastapi import client_lifespan, get_client, router

    app = FastAPI(lifespan=client_lifespan(cache_ttl=30))   # key from CLOSE_API_KEY
    app.include_router(router, prefix="/close")

    @app.get("/my-report")
    async def my_report(client: cf.Client = Depends(get_client)) -> dict[str, int]: ...

One :class:`closefunnel.Client` is shared by every request of the app, because its
rate-limit gate only works when it sees every request made with the key; opening a client
per request would make each one rediscover Close's limits by hitting them. The optional TTL
cache (off unless ``cache_ttl`` is given) serves identical dashboard requests from memory
and makes concurrent identical ones share one fetch.

Under several worker processes (``uvicorn --workers N``, gunicorn, several hosts) give
``redis=`` too: the cache and its single-flight then live in Redis, so N workers
answering the same dashboard request make one upstream call between them
(:mod:`closefunnel._redis_cache` has the protocol). Redis unreachable: each worker
serves from its own in-process cache, with one WARNING per outage.

The web API spends the app's Close key on behalf of whoever calls it, so every request
is bounded before anything is sent: at most :data:`MAX_COMPARED` compared ranges and
:data:`MAX_USERS` users (configurable), no unknown parameters, and, with ``token=``, only
callers holding the bearer token (``GET /health`` excepted, for load balancers).

Browsers get a dashboard at ``GET /`` of the router (mounted under its prefix like the
JSON routes; :mod:`closefunnel._web` has the page, its assets and why the page is open
when the data is token-gated), ``GET /users`` for names, the per-user CSV at
``GET /funnel/{pipeline_id}/users.csv``, and, in :func:`create_app`, ``/docs`` with
Swagger UI's files served by the app (:func:`add_offline_docs`), so nothing loads from
another host.

Errors map to HTTP, all with the :class:`ErrorBody` shape: an invalid request (FastAPI's
parameter checks, ours, a cap, or Close's 400) is 422, a missing or wrong token 401, an
unknown pipeline or saved search 404, Close's rate limit beyond the retry policy's
``max_wait`` 503 with ``Retry-After``, any other upstream failure 502.
"""

from __future__ import annotations

try:
    # The real packages: absolute imports, so ``fastapi`` here is not this module.
    import pydantic
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "closefunnel.fastapi needs FastAPI: pip install 'closefunnel[fastapi]'"
    ) from exc

import hmac
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import attrs

from closefunnel._cache import TTLCache
from closefunnel._client import Client
from closefunnel._compare import FunnelComparison
from closefunnel._convert import CONVERTER, decode_json
from closefunnel._errors import (
    CloseFunnelError,
    InvalidQueryError,
    NotFoundError,
    RateLimitedError,
)
from closefunnel._models import FunnelTotals, Pipeline, User
from closefunnel._query import FunnelQuery, parse_compared, parse_range, validate_compared
from closefunnel._redis_cache import SharedCache
from closefunnel._redis_url import check_prefix, check_redis, connect
from closefunnel._vocabulary import RELATIVE_RANGES, SAME_DAYS_RANGES
from closefunnel._web import add_dashboard, add_offline_docs, funnel_csv_response, open_paths

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "MAX_COMPARED",
    "MAX_USERS",
    "ClientFactory",
    "ErrorBody",
    "FunnelService",
    "add_exception_handlers",
    "add_offline_docs",
    "bearer_dependency",
    "client_lifespan",
    "create_app",
    "error_response",
    "get_client",
    "get_service",
    "make_router",
    "router",
    "validation_error_response",
]

#: Makes the app's client at startup (it is opened and closed by the lifespan).
ClientFactory = Callable[[], Client]

_STATE_ATTR: Final = "closefunnel"


# -- the shared client and cache -----------------------------------------------------------


@attrs.define
class FunnelService:
    """
    The app's client, with the optional TTL cache in front of it.

    Routes go through :meth:`pipelines` and :meth:`funnel` so that cached and uncached
    apps behave the same apart from how often Close is asked. With *shared* (Redis), the
    cache and single-flight are those of every worker using that Redis, and *cache* is
    what a worker serves from while Redis fails.
    """

    client: Client
    cache: TTLCache[Hashable, Any] | None = None
    shared: SharedCache | None = None

    async def _cached(self, key: tuple[Any, ...], fetch: Callable[[], Any], cls: Any) -> Any:
        if self.shared is not None:
            # Everything that changes the answer, as text; the shared key holds only a
            # hash of it and the key id, never the secret.
            client = self.client
            material = repr((client.base_url, client._options.tz_header(), key)).encode()
            return await self.shared.get(
                client._credentials.key_id,
                material,
                fetch,
                encode=CONVERTER.dumps,
                decode=lambda data: decode_json(data, cls),
            )
        if self.cache is None:
            return await fetch()
        return await self.cache.get(key, fetch)

    async def pipelines(self) -> list[Pipeline]:
        """Every pipeline of the organization."""
        result: list[Pipeline] = await self._cached(
            ("pipelines",), self.client.pipelines, list[Pipeline]
        )
        return result

    async def users(self) -> list[User]:
        """Every user of the organization, for showing names next to ids."""
        result: list[User] = await self._cached(("users",), self.client.users, list[User])
        return result

    async def funnel(
        self, query: FunnelQuery, compared: tuple[Any, ...] = ()
    ) -> FunnelTotals | FunnelComparison:
        """The report, or the comparison when *compared* ranges are given."""

        async def fetch() -> FunnelTotals | FunnelComparison:
            if compared:
                return await self.client.compare_totals(query, *compared)
            return await self.client.funnel_totals(query)

        result: FunnelTotals | FunnelComparison = await self._cached(
            ("funnel", query, compared), fetch, FunnelComparison if compared else FunnelTotals
        )
        return result


def _default_factory(
    redis: str | redis.asyncio.Redis | None = None, redis_prefix: str = "closefunnel"
) -> Client:
    # Client() reads CLOSE_API_KEY and CLOSE_BASE_URL itself, and says so when the key is
    # missing: one reader for the library, the CLI and the app.
    return Client(redis=redis, redis_prefix=redis_prefix)


def client_lifespan(
    client_factory: ClientFactory | None = None,
    *,
    cache_ttl: float | None = None,
    cache_size: int = 1024,
    redis: str | redis.asyncio.Redis | None = None,
    redis_prefix: str = "closefunnel",
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """
    A FastAPI ``lifespan`` that opens one :class:`Client` at startup and closes it at shutdown.

    Args:
        client_factory: Makes the client (default: ``Client()``, which reads
            ``CLOSE_API_KEY`` and ``CLOSE_BASE_URL``, sharing its rate-limit gate through
            *redis* when given).
        cache_ttl: Seconds to serve identical router requests from memory; None (the
            default) turns the cache off, so library users get fresh data unless they
            ask otherwise.
        cache_size: Most cached responses kept (in-process).
        redis: A ``redis://`` URL or a ``redis.asyncio.Redis`` (never closed here): with
            *cache_ttl*, the cache and the single-flight of identical requests are kept
            in Redis and shared by every worker using it, so N workers asked the same
            thing at once make one upstream call. None (the default): in-process only.
        redis_prefix: The namespace of the shared cache's keys (and of the default
            client's gate).

    Compose it with your own lifespan by entering it inside yours:
    ``async with client_lifespan(...)(app): yield``.
    """
    if redis is not None:
        check_redis(redis, purpose="the shared web cache")
    check_prefix(redis_prefix)
    if client_factory is not None:
        factory = client_factory
    else:

        def factory() -> Client:
            return _default_factory(redis, redis_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache: TTLCache[Hashable, Any] | None = None
        if cache_ttl is not None and cache_ttl > 0:
            cache = TTLCache(ttl=cache_ttl, max_entries=cache_size)
        async with factory() as client:
            shared: SharedCache | None = None
            if cache is not None and cache_ttl is not None and redis is not None:
                connection, owned = connect(redis, purpose="the shared web cache")
                shared = SharedCache(
                    redis=connection,
                    ttl=cache_ttl,
                    local=cache,
                    prefix=redis_prefix,
                    owns_redis=owned,
                )
            setattr(app.state, _STATE_ATTR, FunnelService(client, cache, shared))
            try:
                yield
            finally:
                delattr(app.state, _STATE_ATTR)
                if shared is not None:
                    await shared.aclose()

    return lifespan


def get_service(request: Request) -> FunnelService:
    """Dependency: the app's :class:`FunnelService` (client plus optional cache)."""
    service: FunnelService | None = getattr(request.app.state, _STATE_ATTR, None)
    if service is None:
        raise RuntimeError(
            "no closefunnel client: create the app with FastAPI(lifespan=client_lifespan(...))"
        )
    return service


def get_client(request: Request) -> Client:
    """Dependency: the app's shared :class:`closefunnel.Client`."""
    return get_service(request).client


# -- errors --------------------------------------------------------------------------------


class ErrorBody(pydantic.BaseModel):
    """
    What every error response carries, 401, 404, 422, 502 and 503 alike.

    A 422 has this shape whatever refused the request: FastAPI's own parameter checks,
    closefunnel's query rules or a per-request cap.
    """

    detail: str = pydantic.Field(description="What went wrong, in one or a few sentences")
    error: str = pydantic.Field(
        description="The error's kind: a closefunnel exception class name such as "
        "InvalidQueryError, NotFoundError or RateLimitedError, or Unauthorized"
    )
    field: str | None = pydantic.Field(
        default=None, description="The parameter at fault, when one is"
    )


#: Longest ``detail`` of a 422 built from FastAPI's parameter checks.
_MAX_DETAIL: Final = 1_000


def error_response(exc: CloseFunnelError) -> JSONResponse:
    """The HTTP answer for a closefunnel error (see the module docstring for the mapping)."""
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidQueryError):  # ours, or Close's 400 (BadRequestError)
        status = 422
    elif isinstance(exc, NotFoundError):
        status = 404
    elif isinstance(exc, RateLimitedError):
        status = 503
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    else:
        status = 502
    body = ErrorBody(detail=str(exc), error=type(exc).__name__, field=getattr(exc, "field", None))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """
    FastAPI's parameter errors in the :class:`ErrorBody` shape (``InvalidQueryError``).

    Only the parameter names and pydantic's messages are kept, never the input values,
    and the text is bounded.
    """
    parts: list[str] = []
    field: str | None = None
    problems = exc.errors()
    for problem in problems[:5]:
        where = [str(part)[:40] for part in problem.get("loc", ()) if part not in _LOC_KINDS]
        name = ".".join(where) or "request"
        field = field or name
        parts.append(f"{name}: {str(problem.get('msg', 'invalid'))[:200]}")
    if len(problems) > 5:
        parts.append(f"and {len(problems) - 5} more")
    body = ErrorBody(
        detail="; ".join(parts)[:_MAX_DETAIL] or "invalid request",
        error=InvalidQueryError.__name__,
        field=field,
    )
    return JSONResponse(body.model_dump(), status_code=422)


_LOC_KINDS: Final = frozenset({"query", "path", "header", "cookie", "body"})


def add_exception_handlers(app: FastAPI) -> None:
    """
    Map :class:`CloseFunnelError` raised by your own routes to HTTP the same way, and
    give FastAPI's own 422s the same :class:`ErrorBody` shape.
    """

    async def handle(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, CloseFunnelError)
        return error_response(exc)

    async def handle_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc)

    async def handle_unauthorized(_: Request, exc: Exception) -> Response:
        return _unauthorized()

    app.add_exception_handler(CloseFunnelError, handle)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(_Unauthorized, handle_unauthorized)


# -- the callers' bearer token ---------------------------------------------------------------

_UNAUTHORIZED: Final = ErrorBody(
    detail="this API needs 'Authorization: Bearer <token>'", error="Unauthorized"
).model_dump()


def _check_token(token: object) -> None:
    if not isinstance(token, str) or not token:
        raise InvalidQueryError("token must be a non-empty string", field="token")
    if any(ch.isspace() or not ch.isprintable() for ch in token) or not token.isascii():
        raise InvalidQueryError(
            "token must be printable ASCII without spaces (it travels in a header)",
            field="token",
        )


def _authorized(header: str | None, token: bytes) -> bool:
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so the token cannot be guessed byte by byte from response times.
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token)


def _unauthorized() -> JSONResponse:
    return JSONResponse(_UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def bearer_dependency(token: str) -> Callable[[Request], None]:
    """A route dependency that refuses requests without ``Authorization: Bearer <token>``."""
    _check_token(token)
    expected = token.encode()

    def check(request: Request) -> None:
        if not _authorized(request.headers.get("Authorization"), expected):
            raise _Unauthorized

    return check


class _Unauthorized(HTTPException):
    """
    Raised by :func:`bearer_dependency`: 401 in :class:`ErrorBody` shape with
    :func:`add_exception_handlers`, FastAPI's ``{"detail": ...}`` without.
    """

    def __init__(self) -> None:
        super().__init__(401, _UNAUTHORIZED["detail"], headers={"WWW-Authenticate": "Bearer"})


class _BearerGate:
    """
    ASGI middleware: every HTTP request but *open_paths* needs the bearer token.

    A middleware rather than a route dependency, so the OpenAPI document and the docs
    pages are covered too.
    """

    def __init__(self, app: ASGIApp, *, token: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self._token = token.encode()
        self._open = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self._open:
            header = None
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            if not _authorized(header, self._token):
                await _unauthorized()(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- response shapes, for the OpenAPI schema -----------------------------------------------


class FunnelMetricsModel(pydantic.BaseModel):
    """The ten metrics: money in cents (annualized), durations in seconds, rates 0-1."""

    average_time_to_win: int | float | None
    average_value_annualized_per_won_opportunity: int
    count: int
    count_total_complete: int
    count_total_won: int
    count_win_rate: int | float
    sales_velocity: int | float
    value_total_complete: int
    value_total_won: int
    value_win_rate: int | float


class UserFunnelMetricsModel(FunnelMetricsModel):
    """One user's metrics."""

    user_id: str


class DateRangeModel(pydantic.BaseModel):
    """A half-open ``[start, end)`` range in ISO 8601."""

    start: str
    end: str


class FunnelTotalsModel(pydantic.BaseModel):
    """One report, as Close sends it."""

    aggregations: FunnelMetricsModel | None
    data: list[UserFunnelMetricsModel]
    range: DateRangeModel | None = pydantic.Field(
        default=None,
        description="The absolute [start, end) range the report covered, resolved as Close "
        "resolves relative and same-days ranges (not part of Close's own answer)",
    )


class DeltaModel(pydantic.BaseModel):
    """``delta = base - compared``; ``change = delta / compared`` (a fraction), or null."""

    base: int | float | None
    compared: int | float | None
    delta: int | float | None
    change: float | None


class MetricDeltasModel(pydantic.BaseModel):
    """One delta per metric."""

    average_time_to_win: DeltaModel
    average_value_annualized_per_won_opportunity: DeltaModel
    count: DeltaModel
    count_total_complete: DeltaModel
    count_total_won: DeltaModel
    count_win_rate: DeltaModel
    sales_velocity: DeltaModel
    value_total_complete: DeltaModel
    value_total_won: DeltaModel
    value_win_rate: DeltaModel


class UserDeltasModel(MetricDeltasModel):
    """One user's deltas (a side where the user is absent is null)."""

    user_id: str


class ComparedPeriodModel(pydantic.BaseModel):
    """One compared range: its report and the deltas against the base."""

    compared: str | DateRangeModel
    compared_range: DateRangeModel | None = pydantic.Field(
        default=None,
        description="The absolute [start, end) range the compared report covered "
        "(``compared`` resolved as Close resolves it; the same as ``totals.range``)",
    )
    totals: FunnelTotalsModel
    aggregations: MetricDeltasModel | None
    users: list[UserDeltasModel]


class FunnelComparisonModel(pydantic.BaseModel):
    """The base report and each compared period, in the order asked."""

    base: FunnelTotalsModel
    base_range: DateRangeModel | None = pydantic.Field(
        default=None,
        description="The absolute [start, end) range of the base report (the same as "
        "``base.range``)",
    )
    comparisons: list[ComparedPeriodModel]


class PipelineStatusModel(pydantic.BaseModel):
    """An opportunity status."""

    id: str
    label: str
    type: str


class PipelineModel(pydantic.BaseModel):
    """A pipeline and its statuses."""

    id: str
    name: str
    statuses: list[PipelineStatusModel]


class UserModel(pydantic.BaseModel):
    """
    A user of the organization, for showing names next to ``user_id``s (no email
    address: the dashboard needs names, and the page is often served without a token).
    """

    id: str
    name: str = pydantic.Field(
        description="What to show: first and last name, else the email, else the id"
    )
    first_name: str
    last_name: str


class UserList(pydantic.RootModel[list[UserModel]]):
    """Every user of the organization."""


class FunnelResponse(pydantic.RootModel[FunnelComparisonModel | FunnelTotalsModel]):
    """The comparison when ``compare`` is given, else the base report's totals."""


class PipelineList(pydantic.RootModel[list[PipelineModel]]):
    """Every pipeline of the organization."""


# -- the router ----------------------------------------------------------------------------

#: Most compared ranges one ``/funnel`` request may ask for. Each is one more report
#: fetched from Close with the app's key, so without a cap one request could spend the
#: key's whole rate budget (300 ``compare=`` values were 301 upstream requests).
MAX_COMPARED: Final = 4
#: Most ``users`` ids one ``/funnel`` request may list (Close's own page lists 2).
MAX_USERS: Final = 100

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    401: {
        "model": ErrorBody,
        "description": "Missing or wrong bearer token (only when the app has a token)",
    },
    404: {"model": ErrorBody, "description": "Unknown pipeline or saved search"},
    422: {
        "model": ErrorBody,
        "description": "Invalid request: a bad or unknown parameter, or past a cap "
        "(``field`` names the parameter)",
    },
    502: {"model": ErrorBody, "description": "Close failed or could not be reached"},
    503: {
        "model": ErrorBody,
        "description": "Close's rate limit; retry after the Retry-After header's seconds",
    },
}


def _json(value: object) -> Response:
    return Response(CONVERTER.dumps(value), media_type="application/json")


def _unknown_parameters(request: Request, known: frozenset[str]) -> None:
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidQueryError(
            f"unknown query parameter(s) {names}{more}; this route takes: {allowed}",
            field=unknown[0][:40],
            rule="unknown-parameter",
        )


def _check_count(field: str, count: int, cap: int) -> None:
    if count > cap:
        raise InvalidQueryError(
            f"{field}: at most {cap} values per request, got {count}"
            " (each one costs requests made with the app's Close key)",
            field=field,
            rule="too-many",
        )


class HealthModel(pydantic.BaseModel):
    """The app is up (Close is not asked)."""

    status: Literal["ok"]


_RELATIVE: Final = "|".join(RELATIVE_RANGES)
_SAME_DAYS: Final = "|".join(SAME_DAYS_RANGES)
#: The forms a range may take, for the OpenAPI document (the route checks more: that
#: START and END are ISO 8601 datetimes with zones, in order, and the pairing rules).
_RANGE_PATTERN: Final = f"^(?:{_RELATIVE}|[0-9].*[.][.][0-9].*)$"
_COMPARED_PATTERN: Final = f"^(?:{_RELATIVE}|{_SAME_DAYS}|[0-9].*[.][.][0-9].*)$"

_FUNNEL_PARAMETERS: Final = frozenset(
    {"range", "compare", "type", "cohort_range", "users", "saved_search", "tz_offset"}
)


Service = Annotated[FunnelService, Depends(get_service)]


def make_router(
    *,
    max_compared: int = MAX_COMPARED,
    max_users: int = MAX_USERS,
    token: str | None = None,
) -> APIRouter:
    """
    The routes (``/health``, ``/pipelines``, ``/users``, ``/funnel/{pipeline_id}`` and its
    ``/users.csv``) with their caps, and the dashboard (``/`` and ``/static/...``).

    Args:
        max_compared: Most ``compare`` values per request (default :data:`MAX_COMPARED`).
        max_users: Most ``users`` values per request (default :data:`MAX_USERS`).
        token: When given, every data route needs ``Authorization: Bearer <token>``
            (401 otherwise); ``/health`` and the dashboard's page and assets (no data;
            the page asks for the token) stay open. :func:`create_app` checks the token
            for the whole app instead (the OpenAPI pages too), so pass it there when you
            use it.

    Past a cap the answer is 422 and nothing is asked of Close.
    """
    _check_cap("max_compared", max_compared)
    _check_cap("max_users", max_users)
    dependencies = [] if token is None else [Depends(bearer_dependency(token))]
    api = APIRouter(tags=["closefunnel"])
    # Defaults, not annotations: the caps are this call's, and annotations are only
    # resolved in the module's globals.
    compare_parameter: Any = Query(
        default=[],
        description=f"Compared range (repeatable, at most {max_compared}): relative name, "
        "same-days name (same-days-last-year; needs a START..END base) or START..END",
        examples=[["last-quarter"]],
        json_schema_extra={
            "maxItems": max_compared,
            "items": {"type": "string", "pattern": _COMPARED_PATTERN},
        },
    )
    users_parameter: Any = Query(
        default=[],
        description=f"User or group ids (repeatable, at most {max_users}); none = everyone",
        examples=[["user_N6KhMpzHRCYQHdn4gRNIFNN5JExnsrprKA6ekxM63XA"]],
        json_schema_extra={"maxItems": max_users},
    )

    # Some load balancers probe with HEAD: the same answer, out of the OpenAPI document
    # (one operation per path and method there; GET documents it).
    @api.head("/health", include_in_schema=False)
    @api.get(
        "/health",
        response_model=HealthModel,
        summary="Liveness, for load balancers",
        responses={422: _ERRORS[422]},
    )
    async def health() -> Response:
        """Always ``{"status": "ok"}`` while the app serves (HEAD too); needs no token."""
        return _json({"status": "ok"})

    @api.get(
        "/pipelines",
        response_model=PipelineList,
        responses={code: _ERRORS[code] for code in (401, 422, 502, 503)},
        summary="The organization's pipelines",
        dependencies=dependencies,
    )
    async def list_pipelines(request: Request, service: Service) -> Response:
        """Every pipeline with its statuses, for picking ids."""
        return await _listing(request, service.pipelines)

    async def funnel_request(
        request: Request,
        pipeline_id: Annotated[
            str,
            Path(
                description="The pipeline's id (``GET /pipelines`` lists them)",
                examples=["pipe_4vukv2FUlFh9FDiVYAop1U"],
            ),
        ],
        report_range: Annotated[
            str | None,
            Query(
                alias="range",
                description="Relative name (this-month, last-quarter, ...) or START..END in "
                "ISO 8601 with zones (write ``+`` as ``%2B``, or use ``Z``); default "
                "this-month for active-stage-cohort",
                examples=["this-quarter"],
                json_schema_extra={"pattern": _RANGE_PATTERN},
            ),
        ] = None,
        compare: list[str] = compare_parameter,
        report_type: Annotated[
            Literal["active-stage-cohort", "created-cohort"],
            Query(
                alias="type",
                description="active-stage-cohort (opportunities active in the range) or "
                "created-cohort (created in cohort_range)",
                examples=["active-stage-cohort"],
            ),
        ] = "active-stage-cohort",
        cohort_range: Annotated[
            str | None,
            Query(
                description="Cohort range (created-cohort): same forms as range",
                examples=["2026-11-01T00:00:00Z..2026-11-19T00:00:00Z"],
                json_schema_extra={"pattern": _RANGE_PATTERN},
            ),
        ] = None,
        users: list[str] = users_parameter,
        saved_search: Annotated[
            str | None,
            Query(
                description="Saved search id: only its opportunities are counted",
                examples=["save_ZVc26G33JTNiDNEFdZhBQAONg9cJHleAAHqBJakf239"],
            ),
        ] = None,
        tz_offset: Annotated[
            float | None,
            Query(
                ge=-18,
                le=18,
                description="Hours east of UTC (-18 to 18, to the minute) for START and END "
                "written without a zone "
                "(2026-11-01..2026-11-19, as the command line takes them); relative ranges "
                "follow the app's client (its tz_offset, default UTC)",
                examples=[2],
            ),
        ] = None,
    ) -> tuple[FunnelQuery, tuple[Any, ...]] | Response:
        # The parameters of both funnel routes; a refusal comes back as the response, so
        # the router answers in ErrorBody shape even without add_exception_handlers.
        try:
            _unknown_parameters(request, _FUNNEL_PARAMETERS)
            _check_count("compare", len(compare), max_compared)
            _check_count("users", len(users), max_users)
            # To the minute: a float just inside the bounds must not round to a zone
            # Python refuses (schemathesis found -23.99999999999 giving a 500).
            zone = None if tz_offset is None else timezone(timedelta(minutes=round(tz_offset * 60)))
            return _funnel_query(
                pipeline_id,
                report_range,
                compare,
                report_type,
                cohort_range,
                users,
                saved_search,
                zone,
            )
        except CloseFunnelError as exc:
            return error_response(exc)

    # A default, not an annotation, for the same reason as the caps above.
    parsed_request: Any = Depends(funnel_request)

    @api.get(
        "/users",
        response_model=UserList,
        responses={code: _ERRORS[code] for code in (401, 422, 502, 503)},
        summary="The organization's users",
        dependencies=dependencies,
    )
    async def list_users(request: Request, service: Service) -> Response:
        """Every user with the name to show, for putting names next to ``user_id``s."""

        async def users() -> list[dict[str, Any]]:
            return [_user_json(user) for user in await service.users()]

        return await _listing(request, users)

    @api.get(
        "/funnel/{pipeline_id}",
        response_model=FunnelResponse,
        responses=_ERRORS,
        summary="A funnel totals report, or a comparison",
        dependencies=dependencies,
    )
    async def funnel(service: Service, parsed: Any = parsed_request) -> Response:
        """
        The base report and each compared report, fetched concurrently and merged (the
        totals alone when no ``compare`` is given). Money is in cents, durations in seconds.
        """
        if isinstance(parsed, Response):
            return parsed
        try:
            return _json(_funnel_json(await service.funnel(*parsed)))
        except CloseFunnelError as exc:
            return error_response(exc)

    @api.get(
        "/funnel/{pipeline_id}/users.csv",
        response_class=Response,
        responses={
            200: {
                "content": {"text/csv": {"schema": {"type": "string"}}},
                "description": "One row per user and period, as ``closefunnel totals "
                "--format csv`` writes it",
            },
            **_ERRORS,
        },
        summary="The per-user table of a report or comparison, as CSV",
        dependencies=dependencies,
    )
    async def funnel_csv(service: Service, parsed: Any = parsed_request) -> Response:
        """
        The same report as ``/funnel/{pipeline_id}`` with the same parameters, as the
        command line's CSV: the base period's users, then each compared period's, in
        Close's units (cents, seconds, fractions), text cells safe for spreadsheets.
        """
        if isinstance(parsed, Response):
            return parsed
        try:
            query, compared = parsed
            return funnel_csv_response(query, await service.funnel(query, compared))
        except CloseFunnelError as exc:
            return error_response(exc)

    add_dashboard(api, max_compared=max_compared)
    return api


def _funnel_json(result: FunnelTotals | FunnelComparison) -> Any:
    """*result* as JSON data, a comparison with its resolved ranges next to what was asked."""
    if not isinstance(result, FunnelComparison):
        return result
    data: dict[str, Any] = CONVERTER.unstructure(result)
    data["base_range"] = CONVERTER.unstructure(result.base_range)
    for period, entry in zip(result.comparisons, data["comparisons"], strict=True):
        entry["compared_range"] = CONVERTER.unstructure(period.compared_range)
    # Keys in the documented order: base, base_range, comparisons.
    return {"base": data["base"], "base_range": data["base_range"], **data}


async def _listing(request: Request, fetch: Callable[[], Awaitable[Any]]) -> Response:
    """A list route: it takes no parameters, answers the list as JSON, and Close's
    failures as the one ErrorBody."""
    try:
        _unknown_parameters(request, frozenset())
        return _json(await fetch())
    except CloseFunnelError as exc:
        return error_response(exc)


def _user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "first_name": user.first_name,
        "last_name": user.last_name,
    }


def _funnel_query(
    pipeline_id: str,
    report_range: str | None,
    compare: list[str],
    report_type: Literal["active-stage-cohort", "created-cohort"],
    cohort_range: str | None,
    users: list[str],
    saved_search: str | None,
    tz: tzinfo | None,
) -> tuple[FunnelQuery, tuple[Any, ...]]:
    report = None if report_range is None else _range(report_range, "range", tz)
    if report is None and report_type == "active-stage-cohort":
        report = "this-month"
    query = FunnelQuery(
        pipeline=pipeline_id,
        type=report_type,
        report_range=report,
        cohort_range=None if cohort_range is None else _range(cohort_range, "cohort_range", tz),
        saved_search_id=saved_search,
        users=tuple(users),
    )
    compared = tuple(
        validate_compared(query, _range(text, "compare", tz, compared=True)) for text in compare
    )
    return query, compared


def _range(text: str, field: str, tz: tzinfo | None, *, compared: bool = False) -> Any:
    try:
        if compared:
            return parse_compared(text, field=field, tz=tz)
        return parse_range(text, field=field, tz=tz)
    except InvalidQueryError as exc:
        # An unencoded "+02:00" in a URL query arrives as " 02:00" (form encoding).
        if re.search(r"\d \d\d:?\d\d", text):
            raise InvalidQueryError(
                f"{exc} (a '+' in a URL query means a space: write '+02:00' as '%2B02:00', "
                "or give UTC with 'Z')",
                field=exc.field,
                rule=exc.rule,
            ) from None
        if tz is None and exc.rule == "timezone-aware":
            raise InvalidQueryError(
                f"{exc}, or give tz_offset=HOURS for the whole request",
                field=exc.field,
                rule=exc.rule,
            ) from None
        raise


def _check_cap(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidQueryError(f"{name} must be an int >= 0, got {value!r}", field=name)


#: The router with the default caps and no token, for ``app.include_router(router)``.
router = make_router()


def create_app(
    *,
    client_factory: ClientFactory | None = None,
    cache_ttl: float | None = None,
    prefix: str = "",
    title: str = "closefunnel",
    token: str | None = None,
    max_compared: int = MAX_COMPARED,
    max_users: int = MAX_USERS,
    redis: str | redis.asyncio.Redis | None = None,
    redis_prefix: str = "closefunnel",
) -> FastAPI:
    """
    A ready app: the lifespan, the router (under *prefix*) and the error handlers.

    Args:
        cache_ttl, redis, redis_prefix: The response cache, shared by every worker
            through *redis* when given (see :func:`client_lifespan`).
        token: When given, every request but ``GET {prefix}/health`` and the
            dashboard's page and assets (the OpenAPI pages included) needs
            ``Authorization: Bearer <token>``; others get 401 with
            ``WWW-Authenticate: Bearer``. The page asks for the token and sends it. The
            token is compared in constant time and never logged or echoed.
        max_compared, max_users: The per-request caps (see :func:`make_router`).

    ``closefunnel serve`` runs this with a 30 s cache.
    """
    from closefunnel._version import __version__

    if token is not None:
        _check_token(token)
    app = FastAPI(
        title=title,
        version=__version__,
        description="Close CRM opportunity funnel reports, base vs compared ranges.",
        lifespan=client_lifespan(
            client_factory, cache_ttl=cache_ttl, redis=redis, redis_prefix=redis_prefix
        ),
        docs_url=None,  # both served offline below
        redoc_url=None,
    )
    add_offline_docs(app)
    app.include_router(make_router(max_compared=max_compared, max_users=max_users), prefix=prefix)
    add_exception_handlers(app)
    if token is not None:
        # The dashboard's page and assets stay open: they carry no data, and the page
        # asks for the token (see closefunnel._web._dashboard).
        unguarded = frozenset({f"{prefix}/health", *open_paths(prefix)})
        app.add_middleware(_BearerGate, token=token, open_paths=unguarded)
    return app
