"""
The commands that fetch: ``totals``, ``bulk``, ``pipelines`` (and ``emulator``).

Each takes the parsed options and a :class:`~closefunnel.cli._console.Console` and
returns an :class:`~closefunnel.cli._status.ExitStatus`; failures are raised and turned
into a line and a status by :mod:`closefunnel.cli._main`. Data goes to the console's
``out``, progress and failure summaries to its ``err``, so ``> file`` keeps the data
whatever the terminal shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import closefunnel.cli._render as _render
from closefunnel._client import BulkItem, Client
from closefunnel._compare import FunnelComparison
from closefunnel._convert import CONVERTER
from closefunnel._html import report_document
from closefunnel._models import FunnelMetrics, FunnelTotals
from closefunnel._query import Compared, FunnelQuery, paired_range
from closefunnel.cli._chart import FunnelChart
from closefunnel.cli._connection import (
    Connection,
    QueryTemplate,
    failure_context,
    names,
    open_client,
)
from closefunnel.cli._console import Console
from closefunnel.cli._failures import UsageError, failure_message
from closefunnel.cli._status import ExitStatus

__all__ = ["bulk", "emulator", "pipelines", "totals", "users"]

Result = FunnelTotals | FunnelComparison


def _write_json(console: Console, value: object, *, indent: bool = True) -> None:
    # orjson writes NaN and infinities as null; json_text escapes what it leaves raw.
    option = orjson.OPT_INDENT_2 if indent else 0
    console.write(_render.json_text(CONVERTER.dumps(value, option=option)) + "\n")


def _title(query: FunnelQuery, pipeline_name: str) -> str:
    kind = "active stage cohort" if query.type == "active-stage-cohort" else "created cohort"
    return f"{pipeline_name} · {kind}"


def _tables(
    result: Result, query: FunnelQuery, *, pipeline_name: str, user_names: dict[str, str]
) -> list[Table]:
    _, base = paired_range(query)
    title = _title(query, pipeline_name)
    # Every period says which dates it covered: dates in the headings, or for a relative
    # name ("last month") in the caption under the table.
    if isinstance(result, FunnelComparison):
        periods = [(base, result.base_range)]
        periods += [(p.compared, p.compared_range) for p in result.comparisons]
        return _render.comparison_tables(
            result,
            title=title,
            base_label=_render.period_label(*periods[0]),
            compared_labels=[_render.period_label(*period) for period in periods[1:]],
            user_names=user_names,
            caption=_render.periods_caption(periods),
        )
    label = _render.period_label(base, result.range)
    return _render.totals_tables(
        result,
        title=f"{title}, {label}",
        user_names=user_names,
        caption=_render.periods_caption([(base, result.range)]),
    )


def _chart(result: Result, query: FunnelQuery, *, pipeline_name: str) -> FunnelChart | None:
    """The funnel of every period as bars (None for a report without aggregations)."""
    _, base = paired_range(query)
    if isinstance(result, FunnelComparison):
        base_totals = result.base
        compared = [
            (_render.period_label(p.compared, p.compared_range), p.totals)
            for p in result.comparisons
        ]
    else:
        base_totals, compared = result, []
    periods: list[tuple[str, FunnelMetrics]] = []
    base_label = _render.period_label(base, base_totals.range)
    for label, totals in [(base_label, base_totals), *compared]:
        if totals.aggregations is None:
            return None
        periods.append((label, totals.aggregations))
    return FunnelChart(f"{_title(query, pipeline_name)}: funnel", periods)


def _charted(
    result: Result, query: FunnelQuery, tables: list[Table], *, pipeline_name: str, show: bool
) -> list[RenderableType]:
    """*tables* with the funnel chart after the metrics table, when *show* and it has one."""
    chart = _chart(result, query, pipeline_name=pipeline_name) if show else None
    if chart is None:
        return list(tables)
    return [tables[0], chart, *tables[1:]]


def _show_chart(ns: argparse.Namespace, console: Console) -> bool:
    """Charts are for people: on a terminal, unless ``--no-chart``; never into a pipe."""
    return not ns.no_chart and console.rich().is_terminal


def _html(
    results: Sequence[tuple[Result, FunnelQuery, str]],
    *,
    title: str,
    user_names: dict[str, str],
    failures: Sequence[tuple[str, str]] = (),
) -> str:
    """The standalone HTML report of ``(result, query, pipeline name)`` triples."""
    reports = [(_title(query, name), result) for result, query, name in results]
    base_label = None
    if results:
        _, base = paired_range(results[0][1])
        base_label = _render.range_label(base)
    return report_document(
        reports, title=title, base_label=base_label, names=user_names, failures=failures
    )


def _document_title(query: FunnelQuery, compared: Sequence[Compared], subject: str) -> str:
    _, base = paired_range(query)
    versus = "".join(f" vs {_render.range_label(c)}" for c in compared)
    return f"{subject}: {_render.range_label(base)}{versus}"


def _length_notes(
    results: Sequence[tuple[Result, FunnelQuery]], connection: Connection
) -> list[RenderableType]:
    """The note on periods of different lengths, once per distinct note (bulk runs ask
    the same periods of every pipeline)."""
    now = connection.now or datetime.now(UTC)  # the clock the client resolved on
    notes: dict[str, RenderableType] = {}
    for result, query in results:
        if isinstance(result, FunnelComparison):
            note = _render.length_note(result, base_spec=paired_range(query)[1], now=now)
            if note is not None:
                notes.setdefault(note.plain, note)
    return list(notes.values())


def _csv_rows(result: Result, query: FunnelQuery, prefix: Sequence[str] = ()) -> list[list[str]]:
    _, base = paired_range(query)
    if isinstance(result, FunnelComparison):
        return _render.comparison_csv_rows(result, base_range=base, prefix=prefix)
    return _render.totals_csv_rows(result, base_range=base, prefix=prefix)


def totals(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """One report, or the base report against each ``--compare`` range, merged."""
    connection = Connection.from_args(ns)
    template = QueryTemplate.from_args(ns, connection.zone)
    query = template.query(ns.pipeline)
    connection = connection.with_key()
    compared = template.compared

    async def run() -> tuple[Result, dict[str, str], dict[str, str]]:
        async with open_client(connection) as client:
            wants_names = ns.format in ("table", "html")
            looked_up = asyncio.ensure_future(names(client)) if wants_names else None
            try:
                result: Result = (
                    await client.compare_totals(query, *compared)
                    if compared
                    else await client.funnel_totals(query)
                )
            except BaseException:
                if looked_up is not None:
                    looked_up.cancel()
                    await asyncio.gather(looked_up, return_exceptions=True)
                raise
            user_names, pipeline_names = await looked_up if looked_up is not None else ({}, {})
            return result, user_names, pipeline_names

    result, user_names, pipeline_names = asyncio.run(run())
    if ns.format == "json":
        _write_json(console, result)
    elif ns.format == "csv":
        console.write(_render.write_csv(_csv_rows(result, query)))
    elif ns.format == "html":
        name = pipeline_names.get(query.pipeline, query.pipeline)
        title = _document_title(query, compared, _title(query, name))
        console.write(_html([(result, query, name)], title=title, user_names=user_names))
    else:
        name = pipeline_names.get(query.pipeline, query.pipeline)
        tables = _tables(result, query, pipeline_name=name, user_names=user_names)
        show = _show_chart(ns, console)
        console.show(
            *_charted(result, query, tables, pipeline_name=name, show=show),
            *_length_notes([(result, query)], connection),
        )
    return ExitStatus.OK


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


def bulk(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """The same report for many pipelines under one gate; status 1 if any failed."""
    connection = Connection.from_args(ns)
    template = QueryTemplate.from_args(ns, connection.zone)
    queries = template.queries(list(dict.fromkeys(ns.pipeline or ())))
    connection = connection.with_key()
    compared = template.compared
    err = console.rich(stderr=True)

    async def run() -> tuple[list[BulkItem[Any]], dict[str, str], dict[str, str]]:
        async with open_client(connection) as client:
            wants_names = ns.all_pipelines or ns.format in ("table", "html")
            looked_up = await names(client) if wants_names else None
            user_names, pipeline_names = looked_up if looked_up is not None else ({}, {})
            todo = queries
            if ns.all_pipelines:
                if not pipeline_names:  # the lookup failed: ask again and let it raise
                    pipeline_names = {p.id: p.name for p in await client.pipelines()}
                todo = template.queries(list(pipeline_names))
            items: list[BulkItem[Any]] = []
            # The progress display is for people: it lives on stderr and must not take
            # over stdout (rich redirects it by default), or `> file` would get nothing.
            # Off a terminal there is no display at all (some rich releases print a
            # newline even for a disabled one, which a closed pipe turns into noise).
            progress = (
                Progress(
                    SpinnerColumn(),
                    TextColumn("[progress.description]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=err,
                    transient=True,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                if err.is_terminal
                else None
            )
            with progress if progress is not None else contextlib.nullcontext():
                task = progress.add_task("Fetching reports", total=len(todo)) if progress else None

                def advance(done: int, total: int | None) -> None:
                    if progress is not None and task is not None:
                        progress.update(task, completed=done, total=total)

                stream = (
                    client.compare_many(todo, *compared, on_progress=advance)
                    if compared
                    else client.totals_many(todo, on_progress=advance)
                )
                async for item in stream:
                    if ns.format == "jsonl":
                        console.write(_render.json_text(orjson.dumps(_bulk_record(item))) + "\n")
                        console.flush()
                    items.append(item)
            order = {query: index for index, query in enumerate(todo)}
            items.sort(key=lambda item: order[item.query])
            return items, user_names, pipeline_names

    items, user_names, pipeline_names = asyncio.run(run())
    if ns.format == "json":
        records = [_bulk_record(i) for i in items]
        console.write(_render.json_text(orjson.dumps(records, option=orjson.OPT_INDENT_2)) + "\n")
    elif ns.format == "csv":
        rows: list[list[str]] = []
        for item in items:
            if item.result is not None:
                rows += _csv_rows(item.result, item.query, prefix=(item.query.pipeline,))
        console.write(_render.write_csv(rows, header=("pipeline", *_render.CSV_HEADER)))
    elif ns.format == "table":
        shown: list[RenderableType] = []
        show = _show_chart(ns, console)
        done = [(item.result, item.query) for item in items if item.result is not None]
        for result, query in done:
            name = pipeline_names.get(query.pipeline, query.pipeline)
            tables = _tables(result, query, pipeline_name=name, user_names=user_names)
            shown += _charted(result, query, tables, pipeline_name=name, show=show)
        console.show(*shown, *_length_notes(done, connection))
    failures = [
        (
            pipeline_names.get(item.query.pipeline, item.query.pipeline),
            failure_message(item.error, failure_context(ns)),
        )
        for item in items
        if item.error is not None
    ]
    if ns.format == "html":
        named = [
            (item.result, item.query, pipeline_names.get(item.query.pipeline, item.query.pipeline))
            for item in items
            if item.result is not None
        ]
        first = items[0].query if items else None
        title = "Funnel reports"
        if first is not None:
            title = _document_title(first, compared, title)
        console.write(_html(named, title=title, user_names=user_names, failures=failures))
    ok = len(items) - len(failures)
    if failures:
        console.show(_render.failures_table(failures), stderr=True)
    console.note(
        f"{ok} of {len(items)} reports fetched" + (f", {len(failures)} failed" if failures else "")
    )
    return ExitStatus.FAILED if failures else ExitStatus.OK


def _listing(
    ns: argparse.Namespace,
    console: Console,
    fetch: Callable[[Client], Awaitable[list[Any]]],
    *,
    csv_rows: Callable[[list[Any]], Any],
    csv_header: Any,
    table: Callable[[list[Any]], Any],
) -> ExitStatus:
    """A list of the organization's things (pipelines, users) as JSON, CSV or a table."""
    connection = Connection.from_args(ns).with_key()

    async def run() -> list[Any]:
        async with open_client(connection) as client:
            return await fetch(client)

    found = asyncio.run(run())
    if ns.format == "json":
        _write_json(console, found)
    elif ns.format == "csv":
        console.write(_render.write_csv(csv_rows(found), header=csv_header))
    else:
        console.show(table(found))
    return ExitStatus.OK


def pipelines(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """The organization's pipelines and their statuses."""
    return _listing(
        ns,
        console,
        lambda client: client.pipelines(),
        csv_rows=_render.pipelines_csv_rows,
        csv_header=_render.PIPELINES_CSV_HEADER,
        table=_render.pipelines_table,
    )


def users(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """The organization's users and their ids."""
    return _listing(
        ns,
        console,
        lambda client: client.users(),
        csv_rows=_render.users_csv_rows,
        csv_header=_render.USERS_CSV_HEADER,
        table=_render.users_table,
    )


def emulator(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """Serve the Close API emulator until Ctrl-C."""
    from closefunnel.emulator._cli import config_from_args, serve

    try:
        config = config_from_args(ns)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return ExitStatus.OK
