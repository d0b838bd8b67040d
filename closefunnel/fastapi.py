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

Errors map to HTTP: an invalid query (ours or Close's 400) is 422 with the message, an
unknown pipeline or saved search 404, Close's rate limit beyond the retry policy's
``max_wait`` 503 with ``Retry-After``, any other upstream failure 502.
"""

from __future__ import annotations

try:
    # The real packages: absolute imports, so ``fastapi`` here is not this module.
    import pydantic
    from fastapi import APIRouter, Depends, FastAPI, Query, Request
    from fastapi.responses import JSONResponse, Response
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "closefunnel.fastapi needs FastAPI: pip install 'closefunnel[fastapi]'"
    ) from exc

import math
import os
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Final, Literal

import attrs

from closefunnel._cache import TTLCache
from closefunnel._client import Client
from closefunnel._compare import FunnelComparison
from closefunnel._convert import CONVERTER
from closefunnel._errors import (
    CloseFunnelError,
    InvalidQueryError,
    NotFoundError,
    RateLimitedError,
)
from closefunnel._models import FunnelTotals, Pipeline
from closefunnel._query import FunnelQuery, parse_compared, parse_range, validate_compared
from closefunnel._vocabulary import API_KEY_ENV

__all__ = [
    "ClientFactory",
    "FunnelService",
    "add_exception_handlers",
    "client_lifespan",
    "create_app",
    "error_response",
    "get_client",
    "get_service",
    "router",
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
    apps behave the same apart from how often Close is asked.
    """

    client: Client
    cache: TTLCache[Hashable, Any] | None = None

    async def _cached(self, key: Hashable, fetch: Callable[[], Any]) -> Any:
        if self.cache is None:
            return await fetch()
        return await self.cache.get(key, fetch)

    async def pipelines(self) -> list[Pipeline]:
        """Every pipeline of the organization."""
        result: list[Pipeline] = await self._cached(("pipelines",), self.client.pipelines)
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
            ("funnel", query, compared), fetch
        )
        return result


def _default_factory() -> Client:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise RuntimeError(
            f"closefunnel.fastapi: set {API_KEY_ENV} or pass client_factory= to client_lifespan()"
        )
    return Client(api_key=key)


def client_lifespan(
    client_factory: ClientFactory | None = None,
    *,
    cache_ttl: float | None = None,
    cache_size: int = 1024,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """
    A FastAPI ``lifespan`` that opens one :class:`Client` at startup and closes it at shutdown.

    Args:
        client_factory: Makes the client (default: ``Client(api_key=$CLOSE_API_KEY)``).
        cache_ttl: Seconds to serve identical router requests from memory; None (the
            default) turns the cache off, so library users get fresh data unless they
            ask otherwise.
        cache_size: Most cached responses kept.

    Compose it with your own lifespan by entering it inside yours:
    ``async with client_lifespan(...)(app): yield``.
    """
    factory = client_factory or _default_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache: TTLCache[Hashable, Any] | None = None
        if cache_ttl is not None and cache_ttl > 0:
            cache = TTLCache(ttl=cache_ttl, max_entries=cache_size)
        async with factory() as client:
            setattr(app.state, _STATE_ATTR, FunnelService(client, cache))
            try:
                yield
            finally:
                delattr(app.state, _STATE_ATTR)

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
    """What every closefunnel error response carries."""

    detail: str
    error: str
    field: str | None = None


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


def add_exception_handlers(app: FastAPI) -> None:
    """Map :class:`CloseFunnelError` raised by your own routes to HTTP the same way."""

    async def handle(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, CloseFunnelError)
        return error_response(exc)

    app.add_exception_handler(CloseFunnelError, handle)


# -- response shapes, for the OpenAPI schema -----------------------------------------------


class FunnelMetricsModel(pydantic.BaseModel):
    """The ten metrics: money in cents (annualized), durations in seconds, rates 0-1."""

    average_time_to_win: float | None
    average_value_annualized_per_won_opportunity: int
    count: int
    count_total_complete: int
    count_total_won: int
    count_win_rate: float
    sales_velocity: float
    value_total_complete: int
    value_total_won: int
    value_win_rate: float


class UserFunnelMetricsModel(FunnelMetricsModel):
    """One user's metrics."""

    user_id: str


class FunnelTotalsModel(pydantic.BaseModel):
    """One report, as Close sends it."""

    aggregations: FunnelMetricsModel | None
    data: list[UserFunnelMetricsModel]


class DateRangeModel(pydantic.BaseModel):
    """A half-open ``[start, end)`` range in ISO 8601."""

    start: str
    end: str


class DeltaModel(pydantic.BaseModel):
    """``delta = base - compared``; ``change = delta / compared`` (a fraction), or null."""

    base: float | None
    compared: float | None
    delta: float | None
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
    totals: FunnelTotalsModel
    aggregations: MetricDeltasModel | None
    users: list[UserDeltasModel]


class FunnelComparisonModel(pydantic.BaseModel):
    """The base report and each compared period, in the order asked."""

    base: FunnelTotalsModel
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


# -- the router ----------------------------------------------------------------------------

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "Unknown pipeline or saved search"},
    422: {"model": ErrorBody, "description": "Invalid query (the message names the value)"},
    502: {"model": ErrorBody, "description": "Close failed or could not be reached"},
    503: {
        "model": ErrorBody,
        "description": "Close's rate limit; retry after the Retry-After header's seconds",
    },
}

router = APIRouter(tags=["closefunnel"])

Service = Annotated[FunnelService, Depends(get_service)]


def _json(value: object) -> Response:
    return Response(CONVERTER.dumps(value), media_type="application/json")


@router.get(
    "/pipelines",
    response_model=list[PipelineModel],
    responses={502: _ERRORS[502], 503: _ERRORS[503]},
    summary="The organization's pipelines",
)
async def list_pipelines(service: Service) -> Response:
    """Every pipeline with its statuses, for picking ids."""
    try:
        return _json(await service.pipelines())
    except CloseFunnelError as exc:
        return error_response(exc)


@router.get(
    "/funnel/{pipeline_id}",
    response_model=FunnelComparisonModel | FunnelTotalsModel,
    responses=_ERRORS,
    summary="A funnel totals report, or a comparison",
)
async def funnel(
    service: Service,
    pipeline_id: str,
    report_range: Annotated[
        str | None,
        Query(
            alias="range",
            description="Relative name (this-month, last-quarter, ...) or START..END in "
            "ISO 8601 with zones; default this-month for active-stage-cohort",
        ),
    ] = None,
    compare: Annotated[
        list[str],
        Query(
            description="Compared range (repeatable): relative name, same-days name "
            "(same-days-last-year; needs a START..END base) or START..END"
        ),
    ] = [],  # noqa: B006 - FastAPI copies defaults per request
    report_type: Annotated[
        Literal["active-stage-cohort", "created-cohort"], Query(alias="type")
    ] = "active-stage-cohort",
    cohort_range: Annotated[
        str | None, Query(description="Cohort range (created-cohort): same forms as range")
    ] = None,
    users: Annotated[list[str], Query(description="User or group ids (repeatable)")] = [],  # noqa: B006
    saved_search: Annotated[str | None, Query(description="Saved search id")] = None,
) -> Response:
    """
    The base report and each compared report, fetched concurrently and merged (the totals
    alone when no ``compare`` is given). Money is in cents, durations in seconds.
    """
    try:
        report = None if report_range is None else parse_range(report_range, field="range", tz=None)
        if report is None and report_type == "active-stage-cohort":
            report = "this-month"
        query = FunnelQuery(
            pipeline=pipeline_id,
            type=report_type,
            report_range=report,
            cohort_range=None
            if cohort_range is None
            else parse_range(cohort_range, field="cohort_range", tz=None),
            saved_search_id=saved_search,
            users=tuple(users),
        )
        compared = tuple(
            validate_compared(query, parse_compared(text, field="compare", tz=None))
            for text in compare
        )
        return _json(await service.funnel(query, compared))
    except CloseFunnelError as exc:
        return error_response(exc)


def create_app(
    *,
    client_factory: ClientFactory | None = None,
    cache_ttl: float | None = None,
    prefix: str = "",
    title: str = "closefunnel",
) -> FastAPI:
    """
    A ready app: the lifespan, the router (under *prefix*) and the error handlers.

    ``closefunnel serve`` runs this with a 30 s cache.
    """
    from closefunnel._version import __version__

    app = FastAPI(
        title=title,
        version=__version__,
        description="Close CRM opportunity funnel reports, base vs compared ranges.",
        lifespan=client_lifespan(client_factory, cache_ttl=cache_ttl),
    )
    app.include_router(router, prefix=prefix)
    add_exception_handlers(app)
    return app
