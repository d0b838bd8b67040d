"""
What a client reads from the environment when it is not told: the key and the API root.

``CLOSE_API_KEY`` and ``CLOSE_BASE_URL`` (:mod:`closefunnel._vocabulary` spells them) are
read here for the library, the command line and the web app alike, so that they agree on
what a variable means: surrounding whitespace is dropped (a key pasted with its newline
still authenticates) and a blank variable is no variable. An explicit argument always
wins; the environment is only asked when the caller gave nothing.
"""

from __future__ import annotations

import os

from closefunnel._errors import InvalidQueryError
from closefunnel._sansio import DEFAULT_BASE_URL
from closefunnel._vocabulary import API_KEY_ENV, BASE_URL_ENV

__all__ = ["api_key_from_environment", "base_url_from_environment", "client_defaults"]


def api_key_from_environment() -> str | None:
    """``CLOSE_API_KEY``, stripped; None when it is unset or blank."""
    return os.environ.get(API_KEY_ENV, "").strip() or None


def base_url_from_environment() -> str | None:
    """``CLOSE_BASE_URL``, stripped; None when it is unset or blank."""
    return os.environ.get(BASE_URL_ENV, "").strip() or None


def client_defaults(
    *, api_key: str | None, token: str | None, base_url: str | None
) -> tuple[str | None, str]:
    """
    The API key and base URL a :class:`~closefunnel.Client` uses for what it was given.

    With neither *api_key* nor *token*, the key comes from ``CLOSE_API_KEY`` (refused with
    an :class:`InvalidQueryError` saying so when that is not set either); without
    *base_url*, the root comes from ``CLOSE_BASE_URL``, else Close's. The secret read here
    becomes the client's credentials like any other, so it is redacted like any other.
    """
    if api_key is None and token is None:
        api_key = api_key_from_environment()
        if api_key is None:
            raise InvalidQueryError(
                f"no credential: pass api_key= or token=, or set {API_KEY_ENV}",
                field="api_key",
                rule="credentials",
            )
    if base_url is None:
        base_url = base_url_from_environment() or DEFAULT_BASE_URL
    return api_key, base_url
