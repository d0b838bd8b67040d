"""
What went wrong, in one line a person can act on.

Close's and the network's failures (exit 1) say what failed and what to do about it,
once: the hint fits the failure (a 404 from a ``--base-url`` that is not Close's API root
is not a bad pipeline id). Usage problems found by closefunnel itself (exit 2) are
:class:`UsageError`. The text of an exception may carry what a server sent: the console
cleans it before it is printed.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

import attrs

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
from closefunnel._sansio import DEFAULT_BASE_URL
from closefunnel._vocabulary import API_KEY_ENV

__all__ = ["FailureContext", "UsageError", "failure_message"]

#: The hints the client's own messages end with; the CLI gives its own, once.
_CLIENT_HINTS = (" (check the API key or token)", " (the key may not do this)")


class UsageError(Exception):
    """Bad usage found by closefunnel itself (exit 2), as opposed to argparse."""


@attrs.frozen(kw_only=True)
class FailureContext:
    """
    What the command asked for, so a hint can name the option to check.

    Attributes:
        base_url: Where requests went ("the in-process emulator" with ``--emulator``).
        emulator: Whether that was the in-process emulator.
        ids: The id options the command was given (``--pipeline``, ``--saved-search``).
    """

    base_url: str = DEFAULT_BASE_URL
    emulator: bool = False
    ids: tuple[str, ...] = ()

    @property
    def api_root(self) -> bool:
        """Whether the base URL looks like Close's API root (``.../api/v1/``)."""
        if self.emulator:
            return True
        return urlsplit(self.base_url).path.rstrip("/").endswith("/api/v1")


def _detail(exc: APIError) -> str:
    """The server's part of *exc*'s message, without the client's prefix and hint."""
    text = str(exc)
    text = text.removeprefix(f"Close answered {exc.status}: ")
    for hint in _CLIENT_HINTS:
        text = text.removesuffix(hint)
    return text.strip()


def _missing_hint(context: FailureContext) -> str:
    if not context.api_root:
        return f"--base-url {context.base_url} is not an API root; Close's ends in /api/v1/"
    ids = [option for option in context.ids if option != "--users"] or ["--pipeline"]
    return f"check {' and '.join(ids)} (`closefunnel pipelines` lists pipeline ids)"


def failure_message(exc: CloseFunnelError, context: FailureContext) -> str:
    """One line: what failed, and what to do about it."""
    if isinstance(exc, AuthenticationError):
        if exc.status == 403:
            return f"Close refused the request (403: {_detail(exc)}); the key may not do this"
        return (
            f"Close refused the credentials ({exc.status}: {_detail(exc)}); "
            f"check {API_KEY_ENV} or --api-key-file"
        )
    if isinstance(exc, NotFoundError):
        return f"not found (404: {_detail(exc)}); {_missing_hint(context)}"
    if isinstance(exc, RateLimitedError):
        after = exc.retry_after
        wait = f"{math.ceil(after)} s" if after is not None and math.isfinite(after) else "a while"
        return f"Close's rate limit stopped the request ({exc}); try again in {wait}"
    if isinstance(exc, ServerError):
        return f"Close failed ({exc.status}: {_detail(exc)}); try again later"
    if isinstance(exc, APIError):
        return f"Close answered {exc.status}: {_detail(exc)}"
    if isinstance(exc, TransportError):
        return f"could not reach {context.base_url}: {exc}; check the network and --base-url"
    if isinstance(exc, ResponseDecodeError):
        return (
            f"unexpected response from {context.base_url}: {exc}; is --base-url Close's API root?"
        )
    return f"failed: {exc}"
