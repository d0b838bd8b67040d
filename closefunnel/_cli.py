"""
The ``closefunnel`` command line (also ``python -m closefunnel``).

Argument handling lives here; what things look like lives in :mod:`closefunnel._render`.
Every expected failure ends as one line on stderr and an exit code, never a traceback:
0 ok, 1 Close or the network failed (with what to do about it), 2 bad usage or an invalid
query (naming the bad value). The API key is read from ``CLOSE_API_KEY`` or a file, never
from a command-line value (which would land in shell history and ``ps``), and is never
printed. ``asyncio.run`` is called only here: the rest of the package is plain async code.

FastAPI and uvicorn are imported only by ``closefunnel serve``, so ``closefunnel demo``
works with a bare ``pip install closefunnel``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeVar

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from closefunnel import _render
from closefunnel._client import BulkItem, Client
from closefunnel._compare import FunnelComparison
from closefunnel._convert import CONVERTER
from closefunnel._errors import (
    APIError,
    AuthenticationError,
    CloseFunnelError,
    InvalidQueryError,
    NotFoundError,
    RateLimitedError,
    ResponseDecodeError,
    ServerError,
    TransportError,
)
from closefunnel._models import FunnelTotals
from closefunnel._query import (
    REPORT_TYPES,
    Compared,
    DateRange,
    FunnelQuery,
    RangeSpec,
    paired_range,
    parse_compared,
    parse_instant,
    parse_range,
    validate_compared,
)
from closefunnel._sansio import DEFAULT_BASE_URL, format_tz_offset
from closefunnel._version import __version__

if TYPE_CHECKING:
    from closefunnel.emulator import Emulator

__all__ = ["main"]

T = TypeVar("T")

#: The environment variable the API key is read from.
API_KEY_ENV: Final = "CLOSE_API_KEY"
#: What ``closefunnel demo`` compares this month-to-date with.
DEMO_COMPARED: Final = ("same-days-last-month", "same-days-last-year")
_FASTAPI_HINT: Final = "pip install 'closefunnel[fastapi]'"
#: Width for tables written to a pipe or file when COLUMNS is unset (rich would use 80).
_PIPE_WIDTH: Final = 120


class UsageError(Exception):
    """Bad usage found by closefunnel itself (exit 2), as opposed to argparse."""


# -- the parser ----------------------------------------------------------------------------


def _argument(
    convert: Callable[[str], T], what: str, check: Callable[[str, T], str | None]
) -> Callable[[str], T]:
    """An argparse ``type=``: *convert*, then *check* (a message when the value is bad)."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        problem = check(text, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def _tz_problem(_: str, hours: float) -> str | None:
    try:
        format_tz_offset(hours)
    except InvalidQueryError as exc:
        return str(exc)
    return None


_aware = _argument(
    datetime.fromisoformat,
    "an ISO 8601 datetime",
    lambda text, value: (
        None if value.tzinfo is not None else f"{text!r} needs a time zone (e.g. Z or +02:00)"
    ),
)
_hours = _argument(float, "a number of hours", _tz_problem)
_positive_int = _argument(
    int, "a whole number", lambda _, value: None if value >= 1 else f"must be >= 1, got {value}"
)
_seconds = _argument(
    float,
    "a number of seconds",
    lambda text, value: (
        None if math.isfinite(value) and value >= 0 else f"must be >= 0 seconds, got {text!r}"
    ),
)


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API root (default: {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--api-key-file",
        metavar="PATH",
        type=Path,
        help=f"read the API key from PATH (default: the {API_KEY_ENV} environment variable)",
    )
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run against an in-process Close API emulator (demo organization; no key needed)",
    )
    group.add_argument(
        "--now",
        type=_aware,
        metavar="ISO",
        help="with --emulator: fix the emulator's clock (ISO 8601 with zone) for repeatable output",
    )
    group.add_argument(
        "--tz-offset",
        type=_hours,
        metavar="H",
        help="hours from UTC for relative ranges and dates without a zone "
        "(default: this machine's current offset)",
    )
    return parent


def _range_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("report")
    group.add_argument(
        "--type",
        choices=REPORT_TYPES,
        default="active-stage-cohort",
        help="report type (default: %(default)s)",
    )
    group.add_argument(
        "--range",
        metavar="RANGE",
        help="report range: a relative name (this-month, last-quarter, ...) or START..END "
        "(default: this-month for active-stage-cohort reports)",
    )
    group.add_argument("--from", dest="from_", metavar="ISO", help="report range start")
    group.add_argument("--to", metavar="ISO", help="report range end (exclusive)")
    group.add_argument(
        "--cohort-range",
        metavar="RANGE",
        help="cohort range for created-cohort reports (same forms as --range)",
    )
    group.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="RANGE",
        help="compare with RANGE: a relative name (last-month), a same-days name "
        "(same-days-last-year, needs a START..END base) or START..END; repeatable",
    )
    group.add_argument(
        "--users", nargs="+", action="extend", default=[], metavar="ID", help="user or group ids"
    )
    group.add_argument("--saved-search", metavar="ID", help="saved search id to filter by")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``closefunnel`` argument parser (subcommands set ``handler``)."""
    parser = argparse.ArgumentParser(
        prog="closefunnel",
        description="Close CRM opportunity funnel reports: this period against that one.",
        epilog=f"The API key comes from {API_KEY_ENV} or --api-key-file. "
        "Try `closefunnel demo` (no key, no network).",
    )
    parser.add_argument("--version", action="version", version=f"closefunnel {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log retries and rate-limit pauses to stderr",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    connection = _connection_options()
    ranges = _range_options()

    demo = sub.add_parser(
        "demo",
        help="compare this month with last month and last year on a built-in emulator",
        description="Start the Close API emulator in-process (demo organization), fetch this "
        "month to date against the same days last month and last year for every pipeline "
        "concurrently, and print the results. No key, no network.",
    )
    demo.add_argument(
        "--now", type=_aware, metavar="ISO", help="fix the clock (ISO 8601 with zone)"
    )
    demo.add_argument(
        "--tz-offset", type=_hours, metavar="H", help="hours from UTC (default: --now's or local)"
    )
    demo.set_defaults(handler=_cmd_demo)

    totals = sub.add_parser(
        "totals",
        parents=[connection, ranges],
        help="one report, or one report against compared ranges",
        description="Fetch one funnel totals report; with --compare, the base report and "
        "each compared report concurrently, merged.",
    )
    totals.add_argument("--pipeline", required=True, metavar="ID", help="pipeline id")
    totals.add_argument("--format", choices=("table", "json", "csv"), default="table")
    totals.set_defaults(handler=_cmd_totals)

    bulk = sub.add_parser(
        "bulk",
        parents=[connection, ranges],
        help="the same report for many pipelines at once",
        description="Fetch the same report (and comparison) for many pipelines under one "
        "rate-limit gate. Exit status 1 if any failed.",
    )
    which = bulk.add_mutually_exclusive_group(required=True)
    which.add_argument("--all-pipelines", action="store_true", help="every pipeline")
    which.add_argument("--pipeline", nargs="+", action="extend", metavar="ID", help="pipeline ids")
    bulk.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table")
    bulk.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    bulk.set_defaults(handler=_cmd_bulk)

    pipelines = sub.add_parser(
        "pipelines", parents=[connection], help="list pipelines and their ids"
    )
    pipelines.add_argument("--format", choices=("table", "json"), default="table")
    pipelines.set_defaults(handler=_cmd_pipelines)

    emulator = sub.add_parser(
        "emulator",
        help="serve the Close API emulator",
        description="Serve a Close API emulator until Ctrl-C (same options as "
        "python -m closefunnel.emulator).",
    )
    from closefunnel.emulator._cli import add_arguments

    add_arguments(emulator)
    emulator.set_defaults(handler=_cmd_emulator)

    serve = sub.add_parser(
        "serve",
        parents=[connection],
        help=f"serve the FastAPI app (needs {_FASTAPI_HINT})",
        description="Serve closefunnel's FastAPI router (GET /pipelines, GET /funnel/{id}) "
        "with uvicorn, with a TTL cache in front of the client.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    serve.add_argument(
        "--cache-ttl",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="serve identical requests from memory for this long; 0 = off (default: %(default)s)",
    )
    serve.set_defaults(handler=_cmd_serve)
    return parser


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's own usage error (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(ns, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    with _logging(verbose=ns.verbose):
        return _dispatch(handler, ns)


@contextlib.contextmanager
def _logging(*, verbose: bool) -> Iterator[None]:
    """
    Retry and pause warnings are for people debugging (``-v``), not for every run; without
    a handler, Python's last-resort handler would print each one. Undone on exit, so
    calling :func:`main` in-process leaves the logger as it was.
    """
    logger = logging.getLogger("closefunnel")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("closefunnel: %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    level = logger.level
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _dispatch(handler: Callable[[argparse.Namespace], int], ns: argparse.Namespace) -> int:
    try:
        return handler(ns)
    except UsageError as exc:
        _error(f"error: {exc}")
        return 2
    except InvalidQueryError as exc:  # ours, or Close's 400 (BadRequestError)
        _error(f"error: invalid query: {exc}")
        return 2
    except CloseFunnelError as exc:
        _error(_failure_message(exc, base_url=_base_url_of(ns)))
        return 1
    except OSError as exc:  # e.g. a port already in use for serve/emulator
        _error(f"{exc.strerror or exc}; pick another --port or check permissions")
        return 1
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    print(f"closefunnel: {message}", file=sys.stderr)


def _base_url_of(ns: argparse.Namespace) -> str:
    if getattr(ns, "emulator", False):
        return "the in-process emulator"
    return str(getattr(ns, "base_url", None) or DEFAULT_BASE_URL)


def _failure_message(exc: CloseFunnelError, *, base_url: str) -> str:
    """One line: what failed, and what to do about it."""
    if isinstance(exc, AuthenticationError):
        return (
            f"Close refused the credentials ({exc.status}: {exc}); "
            f"check {API_KEY_ENV} or --api-key-file"
        )
    if isinstance(exc, NotFoundError):
        return f"not found (404): {exc}; check the ids (`closefunnel pipelines` lists pipelines)"
    if isinstance(exc, RateLimitedError):
        wait = f"{math.ceil(exc.retry_after)} s" if exc.retry_after is not None else "a while"
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


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- shared pieces -------------------------------------------------------------------------


def _local_zone(now: datetime | None, tz_offset: float | None) -> timezone:
    """The zone for relative ranges and naive dates: --tz-offset, --now's zone, or local."""
    if tz_offset is not None:
        return timezone(timedelta(hours=tz_offset))
    reference = now if now is not None else datetime.now().astimezone()
    offset = reference.utcoffset()
    assert offset is not None  # --now is parsed as aware; astimezone() always is
    return timezone(offset)


def _zone_hours(zone: timezone) -> float:
    offset = zone.utcoffset(None)
    return offset.total_seconds() / 3600


def _read_key(ns: argparse.Namespace) -> str:
    path: Path | None = ns.api_key_file
    if path is not None:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise UsageError(f"cannot read --api-key-file {str(path)!r}: {reason}") from None
        if not key:
            raise UsageError(f"--api-key-file {str(path)!r} is empty")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise UsageError(
            f"no API key: set {API_KEY_ENV}, pass --api-key-file PATH, or use --emulator"
        )
    return key


class _Connection:
    """What a command connects with, checked before anything starts (so bad usage is 2)."""

    def __init__(self, ns: argparse.Namespace, *, max_concurrency: int = 8) -> None:
        self.emulator: bool = ns.emulator
        self.now: datetime | None = ns.now
        if self.now is not None and not self.emulator:
            raise UsageError("--now only applies with --emulator (Close's clock is Close's)")
        if self.emulator and (ns.base_url or ns.api_key_file):
            raise UsageError("--emulator runs its own server: drop --base-url/--api-key-file")
        self.zone = _local_zone(self.now, ns.tz_offset)
        self.tz_offset = _zone_hours(self.zone)
        self.max_concurrency = max_concurrency
        self.base_url: str = ns.base_url or DEFAULT_BASE_URL
        self._ns = ns
        self._key: str | None = None

    def load_key(self) -> None:
        """Read the key (after the query is checked, so a bad query is reported first)."""
        if not self.emulator:
            self._key = _read_key(self._ns)

    def __repr__(self) -> str:  # never show the key
        return f"<_Connection base_url={self.base_url!r} emulator={self.emulator}>"

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        async with contextlib.AsyncExitStack() as stack:
            key, base_url = self._key, self.base_url
            if self.emulator:
                emu = await stack.enter_async_context(_start_emulator(self.now))
                key, base_url = emu.api_key, emu.base_url
            assert key is not None
            client = Client(
                api_key=key,
                base_url=base_url,
                tz_offset=self.tz_offset,
                max_concurrency=self.max_concurrency,
            )
            yield await stack.enter_async_context(client)


def _start_emulator(now: datetime | None) -> Emulator:
    # Imported here: the emulator pulls in aiohttp.web and builds a dataset, which only
    # --emulator and demo need.
    from closefunnel.emulator import Emulator, EmulatorConfig

    return Emulator(EmulatorConfig(dataset="demo", now=now))


def _query_template(ns: argparse.Namespace, zone: tzinfo) -> tuple[dict[str, Any], list[Compared]]:
    """The FunnelQuery fields (all but the pipeline) and compared ranges the options ask for."""
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
    compared = [parse_compared(text, field="--compare", tz=zone) for text in ns.compare]
    return fields, compared


def _check(fields: dict[str, Any], compared: Sequence[Compared], pipeline: str) -> FunnelQuery:
    query = FunnelQuery(pipeline=pipeline, **fields)
    for rng in compared:
        validate_compared(query, rng)
    return query


async def _names(client: Client) -> tuple[dict[str, str], dict[str, str]]:
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


def _console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    stream = file if file is not None else sys.stderr if stderr else sys.stdout
    probe = Console(file=stream)
    width = None if probe.is_terminal or "COLUMNS" in os.environ else _PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False)


def _print_json(value: object, *, indent: bool = True) -> None:
    option = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(CONVERTER.dumps(value, option=option).decode() + "\n")


Result = FunnelTotals | FunnelComparison


def _tables(
    result: Result,
    query: FunnelQuery,
    *,
    pipeline_name: str,
    user_names: dict[str, str],
) -> list[Any]:
    _, base = paired_range(query)
    kind = "active stage cohort" if query.type == "active-stage-cohort" else "created cohort"
    title = f"{pipeline_name} · {kind}"
    if isinstance(result, FunnelComparison):
        return _render.comparison_tables(
            result,
            title=title,
            base_label=_render.range_label(base),
            compared_labels=[_render.range_label(p.compared) for p in result.comparisons],
            user_names=user_names,
        )
    return _render.totals_tables(
        result, title=f"{title}, {_render.range_label(base)}", user_names=user_names
    )


def _csv_rows(result: Result, query: FunnelQuery, prefix: Sequence[str] = ()) -> list[list[str]]:
    _, base = paired_range(query)
    if isinstance(result, FunnelComparison):
        return _render.comparison_csv_rows(result, base_range=base, prefix=prefix)
    return _render.totals_csv_rows(result, base_range=base, prefix=prefix)


# -- commands ------------------------------------------------------------------------------


def _cmd_totals(ns: argparse.Namespace) -> int:
    connection = _Connection(ns)
    fields, compared = _query_template(ns, connection.zone)
    query = _check(fields, compared, ns.pipeline)
    connection.load_key()

    async def run() -> tuple[Result, dict[str, str], dict[str, str]]:
        async with connection.client() as client:
            names = asyncio.ensure_future(_names(client)) if ns.format == "table" else None
            try:
                result: Result = (
                    await client.compare_totals(query, *compared)
                    if compared
                    else await client.funnel_totals(query)
                )
            except BaseException:
                if names is not None:
                    names.cancel()
                    await asyncio.gather(names, return_exceptions=True)
                raise
            user_names, pipeline_names = await names if names is not None else ({}, {})
            return result, user_names, pipeline_names

    result, user_names, pipeline_names = _run(run())
    if ns.format == "json":
        _print_json(result)
    elif ns.format == "csv":
        sys.stdout.write(_render.write_csv(_csv_rows(result, query)))
    else:
        console = _console()
        name = pipeline_names.get(query.pipeline, query.pipeline)
        for table in _tables(result, query, pipeline_name=name, user_names=user_names):
            console.print(table)
    return 0


def _bulk_record(item: BulkItem[Any]) -> dict[str, Any]:
    error = None
    if item.error is not None:
        error = {"type": type(item.error).__name__, "message": str(item.error)}
    return {
        "pipeline": item.query.pipeline,
        "query": item.query.to_body(),
        "result": None if item.result is None else CONVERTER.unstructure(item.result),
        "error": error,
    }


def _cmd_bulk(ns: argparse.Namespace) -> int:
    connection = _Connection(ns, max_concurrency=ns.max_concurrency)
    fields, compared = _query_template(ns, connection.zone)
    wanted = list(dict.fromkeys(ns.pipeline or ()))
    _check(fields, compared, wanted[0] if wanted else "pipe_placeholder")
    queries = [_check(fields, compared, pipeline) for pipeline in wanted]
    connection.load_key()
    err = _console(stderr=True)

    async def run() -> tuple[list[BulkItem[Any]], dict[str, str], dict[str, str]]:
        async with connection.client() as client:
            names = await _names(client) if ns.all_pipelines or ns.format == "table" else None
            user_names, pipeline_names = names if names is not None else ({}, {})
            todo = queries
            if ns.all_pipelines:
                if not pipeline_names:  # the lookup failed: ask again and let it raise
                    pipeline_names = {p.id: p.name for p in await client.pipelines()}
                todo = [_check(fields, compared, pipeline) for pipeline in pipeline_names]
            items: list[BulkItem[Any]] = []
            progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            )
            with progress:
                task = progress.add_task("Fetching reports", total=len(todo))

                def advance(done: int, total: int | None) -> None:
                    progress.update(task, completed=done, total=total)

                stream = (
                    client.compare_many(todo, *compared, on_progress=advance)
                    if compared
                    else client.totals_many(todo, on_progress=advance)
                )
                async for item in stream:
                    if ns.format == "jsonl":
                        sys.stdout.write(orjson.dumps(_bulk_record(item)).decode() + "\n")
                        sys.stdout.flush()
                    items.append(item)
            order = {query: index for index, query in enumerate(todo)}
            items.sort(key=lambda item: order[item.query])
            return items, user_names, pipeline_names

    items, user_names, pipeline_names = _run(run())
    if ns.format == "json":
        sys.stdout.write(
            orjson.dumps([_bulk_record(i) for i in items], option=orjson.OPT_INDENT_2).decode()
            + "\n"
        )
    elif ns.format == "csv":
        rows: list[list[str]] = []
        for item in items:
            if item.result is not None:
                rows += _csv_rows(item.result, item.query, prefix=(item.query.pipeline,))
        sys.stdout.write(_render.write_csv(rows, header=("pipeline", *_render.CSV_HEADER)))
    elif ns.format == "table":
        console = _console()
        for item in items:
            if item.result is not None:
                name = pipeline_names.get(item.query.pipeline, item.query.pipeline)
                for table in _tables(
                    item.result, item.query, pipeline_name=name, user_names=user_names
                ):
                    console.print(table)
    failures = [
        (
            pipeline_names.get(item.query.pipeline, item.query.pipeline),
            _failure_message(item.error, base_url=_base_url_of(ns)),
        )
        for item in items
        if item.error is not None
    ]
    ok = len(items) - len(failures)
    if failures:
        err.print(_render.failures_table(failures))
    err.print(
        f"{ok} of {len(items)} reports fetched" + (f", {len(failures)} failed" if failures else "")
    )
    return 1 if failures else 0


def _cmd_pipelines(ns: argparse.Namespace) -> int:
    connection = _Connection(ns)
    connection.load_key()

    async def run() -> list[Any]:
        async with connection.client() as client:
            return await client.pipelines()

    pipelines = _run(run())
    if ns.format == "json":
        _print_json(pipelines)
    else:
        _console().print(_render.pipelines_table(pipelines))
    return 0


def _cmd_emulator(ns: argparse.Namespace) -> int:
    from closefunnel.emulator._cli import config_from_args, serve

    try:
        config = config_from_args(ns)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        _run(serve(config))
    return 0


# -- demo ----------------------------------------------------------------------------------


def _months_back(value: datetime, months: int) -> datetime:
    """*value* moved back by calendar *months*, the day clamped (Mar 31 -> Feb 28/29)."""
    index = value.year * 12 + value.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=value.tzinfo)
    last_day = (following - timedelta(days=1)).day
    return value.replace(year=year, month=month, day=min(value.day, last_day))


def demo_range(now: datetime, zone: tzinfo) -> DateRange:
    """This month to date in *zone*, whole days: the 1st to the end of today."""
    local = now.astimezone(zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return DateRange(start, end)


def _cmd_demo(ns: argparse.Namespace) -> int:
    zone = _local_zone(ns.now, ns.tz_offset)
    now = ns.now if ns.now is not None else datetime.now(zone)
    base = demo_range(now, zone)
    shifts = {"same-days-last-month": 1, "same-days-last-year": 12}
    labels = [
        _render.range_label(
            DateRange(_months_back(base.start, shifts[c]), _months_back(base.end, shifts[c]))
        )
        for c in DEMO_COMPARED
    ]
    console = _console()
    started = time.perf_counter()

    async def run() -> tuple[list[BulkItem[FunnelComparison]], dict[str, str], dict[str, str], int]:
        async with _start_emulator(now) as emu:
            async with Client(
                api_key=emu.api_key, base_url=emu.base_url, tz_offset=_zone_hours(zone)
            ) as client:
                user_names, pipeline_names = await _names(client)
                if not pipeline_names:
                    pipeline_names = {p.id: p.name for p in await client.pipelines()}
                queries = [FunnelQuery(pipeline=p, report_range=base) for p in pipeline_names]
                items = [item async for item in client.compare_many(queries, *DEMO_COMPARED)]
            order = {query.pipeline: index for index, query in enumerate(queries)}
            items.sort(key=lambda item: order[item.query.pipeline])
            return items, user_names, pipeline_names, len(emu.log)

    items, user_names, pipeline_names, requests = _run(run())
    elapsed = time.perf_counter() - started
    console.print(
        Text.assemble(
            ("closefunnel demo", "bold"),
            f": {len(items)} pipelines of the emulator's demo organization, "
            f"this month to date ({_render.range_label(base)}, UTC{_zone_label(zone)}) "
            "against the same days last month and last year.\n",
            (f"{requests} requests, concurrently, in {elapsed:.2f} s.", "dim"),
        )
    )
    console.print()
    failures = []
    for item in items:
        name = pipeline_names.get(item.query.pipeline, item.query.pipeline)
        if item.result is None:
            failures.append((name, _failure_message(item.error or CloseFunnelError(), base_url="")))
            continue
        for table in _render.comparison_tables(
            item.result,
            title=name,
            base_label=_render.range_label(base),
            compared_labels=labels,
            user_names=user_names,
        ):
            console.print(table)
    if failures:
        _console(stderr=True).print(_render.failures_table(failures))
        return 1
    console.print(
        Text(
            "Against your own organization: CLOSE_API_KEY=... closefunnel bulk --all-pipelines "
            "--from 2026-11-01 --to 2026-11-19 --compare same-days-last-month",
            style="dim",
        )
    )
    return 0


def _zone_label(zone: timezone) -> str:
    hours = _zone_hours(zone)
    if hours == 0:
        return ""
    sign = "+" if hours > 0 else "-"
    whole, minutes = divmod(round(abs(hours) * 60), 60)
    return f"{sign}{whole:02d}:{minutes:02d}"


# -- serve ---------------------------------------------------------------------------------


def _cmd_serve(ns: argparse.Namespace) -> int:
    try:
        import uvicorn

        from closefunnel.fastapi import create_app
    except ImportError:
        raise UsageError(f"closefunnel serve needs FastAPI and uvicorn: {_FASTAPI_HINT}") from None
    if not 0 <= ns.port <= 65_535:
        raise UsageError(f"--port must be between 0 and 65535, got {ns.port}")
    connection = _Connection(ns)
    connection.load_key()

    async def run() -> int:
        async with contextlib.AsyncExitStack() as stack:
            key, base_url = connection._key, connection.base_url
            if connection.emulator:
                emu = await stack.enter_async_context(_start_emulator(connection.now))
                key, base_url = emu.api_key, emu.base_url
            assert key is not None

            def make_client() -> Client:
                return Client(api_key=key, base_url=base_url, tz_offset=connection.tz_offset)

            app = create_app(client_factory=make_client, cache_ttl=ns.cache_ttl or None)
            config = uvicorn.Config(app, host=ns.host, port=ns.port, log_level="info")
            server = uvicorn.Server(config)
            where = "the in-process emulator" if connection.emulator else base_url
            print(
                f"closefunnel API for {where} on http://{ns.host}:{ns.port}/ "
                f"(OpenAPI docs at /docs; cache {ns.cache_ttl:g} s)",
                file=sys.stderr,
                flush=True,
            )
            try:
                await server.serve()
            except SystemExit as exc:  # uvicorn exits when it cannot bind
                return 1 if exc.code else 0
            return 0 if server.started else 1

    try:
        return _run(run())
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        return 0
