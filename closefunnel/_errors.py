"""
The one exception tree every closefunnel failure belongs to.

Callers catch :class:`CloseFunnelError` (or one branch of it) and never see an
aiohttp, cattrs, json or tenacity exception: every third-party error is wrapped
with ``raise ... from exc`` at the boundary where it happens::

    CloseFunnelError
    ├── InvalidQueryError        bad query, found before sending (also a ValueError)
    │   └── BadRequestError      Close's 400, with .errors and .field_errors (also an APIError)
    ├── TransportError           connection refused/reset, broken stream       (retried)
    │   └── RequestTimeoutError  one attempt took longer than the timeout      (retried)
    ├── ResponseDecodeError      a 2xx body that is not the documented shape   (retried)
    │   └── ResponseTooLargeError a body past Client(max_response_bytes=)  (never retried)
    ├── ClientClosedError        the client was closed while the call was in flight
    └── APIError                 any other non-2xx status; .status, .body
        ├── AuthenticationError  401 / 403
        ├── NotFoundError        404 (unknown pipeline, saved search, path)
        ├── RateLimitedError     429, or a wait longer than the policy allows; .retry_after
        └── ServerError          5xx                                    (500/502/503/504 retried)

Messages never contain credentials: the client redacts every form of the secret from
the messages, kept bodies and details of each error before it reaches a caller (an
upstream that echoes request headers in its error page would otherwise hand the key to
whoever reads the error), and never chains an aiohttp error that holds request headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "CloseFunnelError",
    "GateUnavailableError",
    "InvalidQueryError",
    "NotFoundError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "ServerError",
    "TransportError",
]


class CloseFunnelError(Exception):
    """Base class of every error closefunnel raises."""


class InvalidQueryError(CloseFunnelError, ValueError):
    """
    A query that Close would reject, or that would silently not mean what was asked.

    Raised before anything is sent, naming the *field* and the *rule* it breaks. It is
    also a :class:`ValueError`, so code that validates input generically still catches it.
    """

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class TransportError(CloseFunnelError):
    """The request did not get a complete HTTP response (connect, reset, broken stream)."""


class RequestTimeoutError(TransportError):
    """One attempt took longer than the client's per-attempt timeout."""


class GateUnavailableError(CloseFunnelError):
    """
    The shared rate-limit gate's Redis is unreachable and the client was told not to fall
    back to its own gate (``redis_fallback="fail"``). Not retried: the caller chose to
    send nothing rather than send unshared.
    """


class ResponseDecodeError(CloseFunnelError):
    """
    A successful response whose body is not what Close documents.

    *messages* lists every problem found (one per bad field), so a single error tells
    the whole story instead of the first mismatch only.
    """

    def __init__(self, message: str, *, messages: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.messages: tuple[str, ...] = tuple(messages)


class ResponseTooLargeError(ResponseDecodeError):
    """
    A response body longer than ``Client(max_response_bytes=...)``.

    The client stops reading at the cap and closes the connection, so a hostile or broken
    upstream (an endless chunked stream, a multi-gigabyte page) costs at most the cap in
    memory. Never retried: the same request would get the same answer.
    """


class ClientClosedError(CloseFunnelError, RuntimeError):
    """
    The client was closed (``aclose()``) while this call was in flight, or before it.

    A caller that was not itself cancelled gets this rather than a bare
    ``CancelledError``, which would look like its own cancellation. Also a
    ``RuntimeError``, as using a closed client always was.
    """


class APIError(CloseFunnelError):
    """
    Close answered with a non-2xx status.

    *body* is the decoded JSON body when there was one (``None`` otherwise) and
    *message* the most useful sentence from it.
    """

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.message = message


class BadRequestError(InvalidQueryError, APIError):
    """
    Close rejected the request with 400.

    *errors* and *field_errors* are Close's ``errors`` list and ``field-errors`` map.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        body: Any = None,
        errors: Sequence[str] = (),
        field_errors: Mapping[str, str] | None = None,
    ) -> None:
        fields = dict(field_errors or {})
        # Not InvalidQueryError.__init__: its super() is APIError in this MRO, which
        # needs ``status``, so every 400 used to fail with a TypeError instead.
        APIError.__init__(self, message, status=status, body=body)
        self.field = next(iter(fields), None)
        self.rule = None
        self.errors: tuple[str, ...] = tuple(errors)
        self.field_errors: dict[str, str] = fields


class AuthenticationError(APIError):
    """Close refused the credentials (401) or the operation for them (403)."""


class NotFoundError(APIError):
    """The pipeline, saved search or path does not exist (404)."""


class RateLimitedError(APIError):
    """
    Close's rate limit stopped the request and waiting was not an option.

    *retry_after* is how many seconds Close asked to wait. The client raises this only
    when that wait is longer than the retry policy's ``max_wait`` or would pass its
    ``deadline``; shorter waits are slept through by the gate.
    """

    def __init__(
        self, message: str, *, retry_after: float | None, status: int = 429, body: Any = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class ServerError(APIError):
    """
    Close failed with a 5xx status.

    *retry_after* is the ``Retry-After`` a 503 may carry (seconds), else None.
    """

    def __init__(
        self, message: str, *, status: int, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after
