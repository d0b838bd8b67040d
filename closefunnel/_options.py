"""
The client's options, checked in one place before anything is made.

Typed callers cannot pass most of the junk refused here, but the CLI and the web app
pass what people typed, so every option is checked and refused with an
:class:`InvalidQueryError` naming the field and the rule. Adding an option is one
field here (with its validator) plus its keyword in ``Client.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp
import attrs

from closefunnel._auth import Credentials
from closefunnel._errors import InvalidQueryError
from closefunnel._redis_url import check_prefix, check_redis, connect
from closefunnel._retry import RetryPolicy
from closefunnel._sansio import DEFAULT_BASE_URL, format_tz_offset, normalize_base_url

if TYPE_CHECKING:
    # Aliased: the field named ``redis`` would shadow the module inside the class.
    import redis.asyncio as aioredis_types

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "ClientOptions", "RedisFallback"]

#: What a shared gate does when Redis is unreachable.
RedisFallback = Literal["local", "fail"]

#: The longest response body read by default: a 10,000-user report is about 3 MiB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 32 * 1024 * 1024


def _credentials(options: ClientOptions, _: attrs.Attribute[Any], token: object) -> None:
    if (options.api_key is None) == (token is None):
        raise InvalidQueryError(
            "pass exactly one of api_key= or token=", field="api_key", rule="credentials"
        )
    secret = options.api_key if options.api_key is not None else token
    if not isinstance(secret, str) or not secret.strip():
        raise InvalidQueryError(
            "the API key or token must be a non-empty string",
            field="api_key" if options.api_key is not None else "token",
            rule="non-empty",
        )


def _count(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueryError(
            f"{attribute.name} must be an int, got {value!r}", field=attribute.name, rule="type"
        )
    if value < 1:
        raise InvalidQueryError(
            f"{attribute.name} must be >= 1, got {value}", field=attribute.name, rule="positive"
        )


def _seconds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or not value > 0:
        raise InvalidQueryError(
            f"{attribute.name} must be > 0 seconds, got {value!r}",
            field=attribute.name,
            rule="positive",
        )


def _url(options: ClientOptions, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidQueryError(
            f"base_url must be a string, got {type(value).__name__}", field="base_url", rule="type"
        )
    normalize_base_url(value, allow_insecure_http=options.allow_insecure_http is True)


def _tz_offset(_: object, __: attrs.Attribute[Any], value: float | None) -> None:
    format_tz_offset(value)


def _instance_of(cls: type, what: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, cls):
            raise InvalidQueryError(
                f"{attribute.name} must be {what}, got {type(value).__name__}",
                field=attribute.name,
                rule="type",
            )

    return check


def _callable(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidQueryError(
            f"{attribute.name} must be a callable returning an aware datetime, "
            f"got {type(value).__name__}",
            field=attribute.name,
            rule="type",
        )


def _flag(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidQueryError(
            f"{attribute.name} must be True or False, got {value!r}",
            field=attribute.name,
            rule="type",
        )


def _redis(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_redis(value, field=attribute.name, purpose="the shared gate")


def _choice(*allowed: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in allowed:
            raise InvalidQueryError(
                f"{attribute.name} must be one of {', '.join(map(repr, allowed))}, got {value!r}",
                field=attribute.name,
                rule="choice",
            )

    return check


def _prefix(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_prefix(value, field=attribute.name)


@attrs.frozen(kw_only=True)
class ClientOptions:
    """
    Every option of :class:`closefunnel.Client`, validated; see its docstring for each.

    Validators run in field order, so the first problem found is the one reported.
    """

    api_key: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False, validator=_credentials)
    max_concurrency: int = attrs.field(default=8, validator=_count)
    timeout: float = attrs.field(default=30.0, validator=_seconds)
    base_url: str = attrs.field(default=DEFAULT_BASE_URL, validator=_url)
    allow_insecure_http: bool = attrs.field(default=False, validator=_flag)
    tz_offset: float | None = attrs.field(default=None, validator=_tz_offset)
    retry: RetryPolicy | None = attrs.field(
        default=None, validator=_instance_of(RetryPolicy, "a RetryPolicy")
    )
    session: aiohttp.ClientSession | None = attrs.field(
        default=None, validator=_instance_of(aiohttp.ClientSession, "an aiohttp.ClientSession")
    )
    max_response_bytes: int = attrs.field(default=DEFAULT_MAX_RESPONSE_BYTES, validator=_count)
    # The URL can hold a password: never in a repr.
    redis: str | aioredis_types.Redis | None = attrs.field(
        default=None, repr=False, validator=_redis
    )
    redis_fallback: RedisFallback = attrs.field(default="local", validator=_choice("local", "fail"))
    redis_prefix: str = attrs.field(default="closefunnel", validator=_prefix)
    clock: Callable[[], datetime] | None = attrs.field(default=None, validator=_callable)

    def credentials(self) -> Credentials:
        """How requests authenticate."""
        if self.api_key is not None:
            return Credentials.api_key(self.api_key)
        assert self.token is not None  # the validator saw to exactly one
        return Credentials.token(self.token)

    def normalized_base_url(self) -> str:
        """The base URL with exactly one trailing slash."""
        return normalize_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)

    def redis_client(self) -> tuple[aioredis_types.Redis | None, bool]:
        """The Redis client of the shared gate (None: in-process gate), and whether the
        Client owns it (made it from a URL, so closes it)."""
        if self.redis is None:
            return None, False
        return connect(self.redis, field="redis", purpose="the shared gate")

    def tz_header(self) -> str | None:
        """The ``X-TZ-Offset`` header value, or None."""
        return format_tz_offset(self.tz_offset)
