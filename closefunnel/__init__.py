"""
closefunnel: Close CRM opportunity funnel reports, base vs compared, fetched concurrently.

The public API is what this module exports; the ``_``-prefixed modules are private.
``closefunnel.emulator`` (a faithful Close API emulator) and ``closefunnel.fastapi``
(FastAPI integration, extra ``[fastapi]``) are the other public namespaces.
"""

import logging as _logging

from closefunnel._auth import Credentials
from closefunnel._client import BulkItem, Client, PoolSnapshot, ProgressCallback
from closefunnel._compare import (
    ComparedPeriod,
    Delta,
    FunnelComparison,
    MetricDeltas,
    UserDeltas,
    merge_comparison,
)
from closefunnel._convert import make_converter
from closefunnel._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    CloseFunnelError,
    GateUnavailableError,
    InvalidQueryError,
    NotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)
from closefunnel._gate import GateSnapshot
from closefunnel._models import (
    METRIC_NAMES,
    FunnelMetrics,
    FunnelTotals,
    Pipeline,
    PipelineStatus,
    User,
    UserFunnelMetrics,
)
from closefunnel._query import (
    RELATIVE_RANGES,
    REPORT_TYPES,
    SAME_DAYS_RANGES,
    Compared,
    DateRange,
    FunnelQuery,
    RangeSpec,
    ReportType,
    validate_compared,
)
from closefunnel._ratelimit import RateLimitInfo, parse_ratelimit, parse_retry_after
from closefunnel._retry import RetryPolicy
from closefunnel._sansio import DEFAULT_BASE_URL
from closefunnel._sync import SyncClient
from closefunnel._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "METRIC_NAMES",
    "RELATIVE_RANGES",
    "REPORT_TYPES",
    "SAME_DAYS_RANGES",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BulkItem",
    "Client",
    "ClientClosedError",
    "CloseFunnelError",
    "Compared",
    "ComparedPeriod",
    "Credentials",
    "DateRange",
    "Delta",
    "FunnelComparison",
    "FunnelMetrics",
    "FunnelQuery",
    "FunnelTotals",
    "GateSnapshot",
    "GateUnavailableError",
    "InvalidQueryError",
    "MetricDeltas",
    "NotFoundError",
    "Pipeline",
    "PipelineStatus",
    "PoolSnapshot",
    "ProgressCallback",
    "RangeSpec",
    "RateLimitInfo",
    "RateLimitedError",
    "ReportType",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "ServerError",
    "SyncClient",
    "TransportError",
    "User",
    "UserDeltas",
    "UserFunnelMetrics",
    "__version__",
    "make_converter",
    "merge_comparison",
    "parse_ratelimit",
    "parse_retry_after",
    "validate_compared",
]

# A library does not decide where its log records go: without this handler Python's
# last-resort handler would print the client's retry warnings on the stderr of every
# program that never configured logging. Applications that do configure it see them.
_logging.getLogger("closefunnel").addHandler(_logging.NullHandler())
