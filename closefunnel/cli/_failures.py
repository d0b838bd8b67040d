"""
What went wrong, in one line a person can act on.

Close's and the network's failures (exit 1) say what failed and what to do about it;
usage problems found by closefunnel itself (exit 2) are :class:`UsageError`. The text of
an exception may carry what a server sent: the console cleans it before it is printed.
"""

from __future__ import annotations

import math

from closefunnel._errors import (
    APIError,
    AuthenticationError,
    CloseFunnelError,
    NotFoundError,
    RateLimitedError,
    ResponseDecodeError,
    ServerError,
    TransportError,
)
from closefunnel._vocabulary import API_KEY_ENV

__all__ = ["UsageError", "failure_message"]


class UsageError(Exception):
    """Bad usage found by closefunnel itself (exit 2), as opposed to argparse."""


def failure_message(exc: CloseFunnelError, *, base_url: str) -> str:
    """One line: what failed, and what to do about it."""
    if isinstance(exc, AuthenticationError):
        return (
            f"Close refused the credentials ({exc.status}: {exc}); "
            f"check {API_KEY_ENV} or --api-key-file"
        )
    if isinstance(exc, NotFoundError):
        return f"not found (404): {exc}; check the ids (`closefunnel pipelines` lists pipelines)"
    if isinstance(exc, RateLimitedError):
        after = exc.retry_after
        wait = f"{math.ceil(after)} s" if after is not None and math.isfinite(after) else "a while"
        return f"Close's rate limit stopped the request ({exc}); try again in {wait}"
    if isinstance(exc, ServerError):
        return f"Close failed ({exc.status}: {exc}); try again later"
    if isinstance(exc, APIError):
        return f"Close answered {exc.status}: {exc}"
    if isinstance(exc, TransportError):
        return f"could not reach {base_url}: {exc}; check the network and --base-url"
    if isinstance(exc, ResponseDecodeError):
        return f"unexpected response from {base_url}: {exc}; is --base-url Close's API root?"
    return f"failed: {exc}"
