"""
What a command connects with, and the one place a :class:`~closefunnel.Client` is made.

The connection options are checked before anything starts (bad usage is exit 2, and a
bad query is reported before a missing key). The API key is read from ``CLOSE_API_KEY``
or a file, never from a command-line value (which would land in shell history and
``ps``), and never shown: :class:`Connection`'s repr leaves it out.

``totals``, ``bulk``, ``pipelines`` and ``serve`` all get their clients from
:func:`client_factory`, so a new client option is added in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from closefunnel._client import Client
from closefunnel._environment import api_key_from_environment, base_url_from_environment
from closefunnel._errors import CloseFunnelError
from closefunnel._query import (
    Compared,
    DateRange,
    FunnelQuery,
    RangeSpec,
    parse_compared,
    parse_instant,
    parse_range,
    validate_compared,
)
from closefunnel._sansio import DEFAULT_BASE_URL
from closefunnel._vocabulary import API_KEY_ENV
from closefunnel.cli._failures import FailureContext, UsageError

if TYPE_CHECKING:
    from closefunnel.emulator import Emulator, EmulatorConfig

__all__ = [
    "Connection",
    "QueryTemplate",
    "base_url_of",
    "client_factory",
    "failure_context",
    "local_zone",
    "names",
    "open_client",
    "start_emulator",
    "zone_hours",
]


def local_zone(now: datetime | None, tz_offset: float | None) -> timezone:
    """The zone for relative ranges and naive dates: --tz-offset, --now's zone, or local."""
    if tz_offset is not None:
        return timezone(timedelta(hours=tz_offset))
    reference = now if now is not None else datetime.now().astimezone()
    offset = reference.utcoffset()
    assert offset is not None  # --now is parsed as aware; astimezone() always is
    return timezone(offset)


def zone_hours(zone: timezone) -> float:
    """*zone*'s offset from UTC in hours (what ``X-TZ-Offset`` carries)."""
    return zone.utcoffset(None).total_seconds() / 3600


def base_url_of(ns: argparse.Namespace) -> str:
    """``--base-url``, else ``CLOSE_BASE_URL``, else Close's API root."""
    given: str | None = getattr(ns, "base_url", None)
    return given or base_url_from_environment() or DEFAULT_BASE_URL


def failure_context(ns: argparse.Namespace) -> FailureContext:
    """What a failure message needs to know about the command that failed."""
    emulator = bool(getattr(ns, "emulator", False))
    ids = tuple(
        option
        for option, attribute in (
            ("--pipeline", "pipeline"),
            ("--saved-search", "saved_search"),
            ("--users", "users"),
        )
        if getattr(ns, attribute, None)
    )
    return FailureContext(
        base_url="the in-process emulator" if emulator else base_url_of(ns),
        emulator=emulator,
        ids=ids,
    )


def _read_key(path: Path | None) -> str:
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise UsageError(f"cannot read --api-key-file {str(path)!r}: {reason}") from None
        if not key:
            raise UsageError(f"--api-key-file {str(path)!r} is empty")
        return key
    from_environment = api_key_from_environment()
    if from_environment is None:
        raise UsageError(
            f"no API key: set {API_KEY_ENV}, pass --api-key-file PATH, or use --emulator"
        )
    return from_environment


#: The environment variable ``--redis`` defaults to.
REDIS_URL_ENV: Final = "CLOSEFUNNEL_REDIS_URL"


def redis_url_of(ns: argparse.Namespace) -> str | None:
    """``--redis``, else ``CLOSEFUNNEL_REDIS_URL``, else None (each process its own gate)."""
    given = (getattr(ns, "redis", None) or "").strip()
    return given or os.environ.get(REDIS_URL_ENV, "").strip() or None


@attrs.frozen(kw_only=True)
class Connection:
    """
    Where a command's requests go and how its clients are configured.

    Attributes:
        emulator: Serve an in-process emulator (demo organization) and use it.
        now: The emulator's clock (only with *emulator*).
        zone: The zone relative ranges and dates without a zone are read in.
        base_url: Close's API root (unused with *emulator*).
        api_key_file: Where the key is read from (default: ``CLOSE_API_KEY``).
        max_concurrency: Requests in flight at once.
        api_key: The key, once :meth:`with_key` has read it; never in the repr.
        redis: The Redis URL of the shared gate (None: in-process); never in the repr,
            since a URL can hold a password.
    """

    emulator: bool = False
    now: datetime | None = None
    zone: timezone = UTC
    base_url: str = DEFAULT_BASE_URL
    api_key_file: Path | None = None
    max_concurrency: int = 8
    api_key: str | None = attrs.field(default=None, repr=False)
    redis: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Connection:
        """The connection the options ask for, checked (UsageError when they clash)."""
        emulator: bool = ns.emulator
        now: datetime | None = ns.now
        if now is not None and not emulator:
            raise UsageError("--now only applies with --emulator (Close's clock is Close's)")
        if emulator and (ns.base_url or ns.api_key_file):
            raise UsageError("--emulator runs its own server: drop --base-url/--api-key-file")
        return cls(
            emulator=emulator,
            now=now,
            zone=local_zone(now, ns.tz_offset),
            base_url=DEFAULT_BASE_URL if emulator else base_url_of(ns),
            api_key_file=ns.api_key_file,
            max_concurrency=getattr(ns, "max_concurrency", 8),
            redis=redis_url_of(ns),
        )

    @property
    def tz_offset(self) -> float:
        """Hours from UTC, sent as ``X-TZ-Offset``."""
        return zone_hours(self.zone)

    @property
    def where(self) -> str:
        """What the requests go to, for messages."""
        return "the in-process emulator" if self.emulator else self.base_url

    def with_key(self) -> Connection:
        """This connection with the key read (after the query is checked, so a bad query
        is reported first); the emulator needs none."""
        if self.emulator:
            return self
        return attrs.evolve(self, api_key=_read_key(self.api_key_file))


def start_emulator(now: datetime | None) -> Emulator:
    """The in-process emulator (demo organization) that ``--emulator`` and demo use."""
    # Imported here: the emulator pulls in aiohttp.web and builds a dataset, which only
    # --emulator and demo need.
    from closefunnel.emulator import Emulator

    return Emulator(emulator_config(now))


def emulator_config(now: datetime | None) -> EmulatorConfig:
    """The configuration of the emulator that ``--emulator`` and demo serve."""
    from closefunnel.emulator import EmulatorConfig

    return EmulatorConfig(dataset="demo", now=now)


@contextlib.asynccontextmanager
async def client_factory(connection: Connection) -> AsyncIterator[Callable[[], Client]]:
    """
    A function that makes a new, unopened client for *connection*: the only place the
    CLI builds a :class:`~closefunnel.Client`. With ``--emulator`` the emulator serves
    until the block ends.
    """
    async with contextlib.AsyncExitStack() as stack:
        api_key, base_url = connection.api_key, connection.base_url
        clock: Callable[[], datetime] | None = None  # the system clock
        if connection.emulator:
            emu = await stack.enter_async_context(start_emulator(connection.now))
            api_key, base_url = emu.api_key, emu.base_url
            clock = emu.now  # relative ranges resolve on the emulator's (maybe --now) clock
        if api_key is None:
            raise UsageError("no API key was read (Connection.with_key)")

        def make_client() -> Client:
            return Client(
                api_key=api_key,
                base_url=base_url,
                tz_offset=connection.tz_offset,
                max_concurrency=connection.max_concurrency,
                redis=connection.redis,
                clock=clock,
            )

        yield make_client


@contextlib.asynccontextmanager
async def open_client(connection: Connection) -> AsyncIterator[Client]:
    """One open client for *connection* (and its emulator, with ``--emulator``)."""
    async with client_factory(connection) as make_client, make_client() as client:
        yield client


@attrs.frozen(kw_only=True)
class QueryTemplate:
    """The query the options ask for, all but the pipeline, and the compared ranges."""

    fields: dict[str, Any]
    compared: tuple[Compared, ...]

    @classmethod
    def from_args(cls, ns: argparse.Namespace, zone: tzinfo) -> QueryTemplate:
        """Parse ``--type``, ``--range``/``--from``/``--to``, ``--compare`` and the rest."""
        report: RangeSpec | None = None
        if ns.from_ is not None or ns.to is not None:
            if ns.range is not None:
                raise UsageError("give either --range or --from/--to, not both")
            if ns.from_ is None or ns.to is None:
                raise UsageError("--from and --to go together")
            report = DateRange(
                parse_instant(ns.from_, field="--from", tz=zone),
                parse_instant(ns.to, field="--to", tz=zone),
            )
        elif ns.range is not None:
            report = parse_range(ns.range, field="--range", tz=zone)
        elif ns.type == "active-stage-cohort":
            report = "this-month"
        cohort = (
            None
            if ns.cohort_range is None
            else parse_range(ns.cohort_range, field="--cohort-range", tz=zone)
        )
        fields: dict[str, Any] = {
            "type": ns.type,
            "report_range": report,
            "cohort_range": cohort,
            "saved_search_id": ns.saved_search,
            "users": tuple(ns.users),
        }
        compared = tuple(parse_compared(text, field="--compare", tz=zone) for text in ns.compare)
        return cls(fields=fields, compared=compared)

    def query(self, pipeline: str) -> FunnelQuery:
        """The query for *pipeline*, with every compared range checked against it."""
        query = FunnelQuery(pipeline=pipeline, **self.fields)
        for compared in self.compared:
            validate_compared(query, compared)
        return query

    def queries(self, pipelines: Sequence[str]) -> list[FunnelQuery]:
        """One query per pipeline (checked once even for none, so bad options fail early)."""
        self.query(pipelines[0] if pipelines else "pipe_placeholder")
        return [self.query(pipeline) for pipeline in pipelines]


async def names(client: Client) -> tuple[dict[str, str], dict[str, str]]:
    """User and pipeline display names, best effort: a table with ids beats no table."""
    users, pipelines = await asyncio.gather(
        client.users(), client.pipelines(), return_exceptions=True
    )
    user_names = {} if isinstance(users, BaseException) else {u.id: u.name for u in users}
    pipeline_names = (
        {} if isinstance(pipelines, BaseException) else {p.id: p.name for p in pipelines}
    )
    for failed in (users, pipelines):
        if isinstance(failed, BaseException) and not isinstance(failed, CloseFunnelError):
            raise failed
    return user_names, pipeline_names
