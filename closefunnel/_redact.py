"""
Scrubbing the secret out of an error before it reaches a caller.

Anything a response carries may repeat the request: debugging proxies and WAF pages echo
the request headers, ``Authorization`` included, into their error bodies, and a body
that is not a report can end up quoted in a decode error. Callers print errors (the CLI
to stderr, the web app into its JSON, Sentry with the whole chain), so every error the
client raises passes through :func:`redact_error` once, at the boundary: its message,
kept body and details lose every form of the secret, and a chained exception that still
shows one is cut from the chain.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, Final

from closefunnel._errors import CloseFunnelError

__all__ = ["redact_error", "redact_value"]

Redact = Callable[[str], str]

# The attributes of our errors that hold text from a response.
_DETAILS: Final = ("body", "message", "errors", "field_errors", "messages")
_MAX_DEPTH: Final = 64  # a kept body is JSON; deeper nesting is not walked, it is dropped


def redact_value(value: Any, redact: Redact, *, depth: int = 0) -> Any:
    """*value* (decoded JSON, or a tuple/list/dict of text) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            redact_value(key, redact, depth=depth + 1): redact_value(item, redact, depth=depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [redact_value(item, redact, depth=depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def _shows_secret(exc: BaseException, redact: Redact) -> bool:
    try:
        text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))
    except Exception:  # an exotic exception that cannot describe itself is not kept either
        return True
    return redact(text) != text


def redact_error(exc: BaseException, redact: Redact) -> BaseException:
    """
    *exc*, changed in place, with the secret gone from everything it shows; returns it.

    Our own errors are scrubbed field by field, down their chain. A foreign exception
    in the chain (an aiohttp or cattrs error) is kept only when nothing it shows,
    traceback included, holds a form of the secret.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CloseFunnelError):
            current.args = tuple(redact_value(arg, redact) for arg in current.args)
            for name in _DETAILS:
                if name in vars(current):
                    setattr(current, name, redact_value(getattr(current, name), redact))
        nxt = current.__cause__ if current.__cause__ is not None else current.__context__
        if nxt is not None and not isinstance(nxt, CloseFunnelError) and _shows_secret(nxt, redact):
            current.__cause__ = None
            current.__context__ = None
            current.__suppress_context__ = True
            nxt = None
        current = nxt
    return exc
