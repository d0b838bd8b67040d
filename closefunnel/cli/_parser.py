"""The ``closefunnel`` argument parser: every command, option and help text."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import attrs

import closefunnel.cli._commands as _commands
import closefunnel.cli._completion as _completion
import closefunnel.cli.demo as demo
import closefunnel.cli.serve as serve
from closefunnel._sansio import DEFAULT_BASE_URL
from closefunnel._version import __version__
from closefunnel._vocabulary import API_KEY_ENV, RELATIVE_RANGES, REPORT_TYPES, SAME_DAYS_RANGES
from closefunnel.cli._args import aware_datetime, hours, non_negative_seconds, port, positive_int
from closefunnel.cli._connection import REDIS_URL_ENV

__all__ = ["build_parser"]


_VERBOSE_HELP = "log retries and rate-limit pauses to stderr"


@attrs.frozen
class _Candidates:
    """
    What shell completion offers for a free-form option: each name with what it means.

    A plain callable in argcomplete's completer shape (keyword arguments in, a mapping of
    candidate to description out), so building the parser never imports argcomplete.
    """

    names: Mapping[str, str]

    def __call__(self, **_: object) -> Mapping[str, str]:
        return self.names


_RELATIVE = dict.fromkeys(RELATIVE_RANGES, "relative range")
_SAME_DAYS = dict.fromkeys(SAME_DAYS_RANGES, "the base days shifted back (needs a START..END base)")
_RANGE_NAMES = _Candidates(_RELATIVE)
_COMPARE_NAMES = _Candidates({**_RELATIVE, **_SAME_DAYS})


def _completes(action: argparse.Action, candidates: _Candidates) -> None:
    # argcomplete reads an action's `completer` attribute; argparse has no field for it.
    setattr(action, "completer", candidates)  # noqa: B010


def _global_options() -> argparse.ArgumentParser:
    # Accepted after the command too (`closefunnel pipelines -v`). SUPPRESS: a command
    # that was not given -v leaves the value set before the command alone.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
    )
    return parent


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API root (default: $CLOSE_BASE_URL, else {DEFAULT_BASE_URL})",
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
        type=aware_datetime,
        metavar="ISO",
        help="with --emulator: fix the emulator's clock (ISO 8601 with zone) for repeatable output",
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        help="share one rate-limit gate per key with every process using this Redis "
        f"(redis://host:6379/0; default: the {REDIS_URL_ENV} environment variable; "
        "needs closefunnel[redis])",
    )
    group.add_argument(
        "--tz-offset",
        type=hours,
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
    _completes(
        group.add_argument(
            "--range",
            metavar="RANGE",
            help="report range: a relative name (this-month, last-quarter, ...) or START..END "
            "(default: this-month for active-stage-cohort reports)",
        ),
        _RANGE_NAMES,
    )
    group.add_argument("--from", dest="from_", metavar="ISO", help="report range start")
    group.add_argument("--to", metavar="ISO", help="report range end (exclusive)")
    _completes(
        group.add_argument(
            "--cohort-range",
            metavar="RANGE",
            help="cohort range for created-cohort reports (same forms as --range)",
        ),
        _RANGE_NAMES,
    )
    _completes(
        group.add_argument(
            "--compare",
            action="append",
            default=[],
            metavar="RANGE",
            help="compare with RANGE: a relative name (last-month), a same-days name "
            "(same-days-last-year, needs a START..END base) or START..END; repeatable",
        ),
        _COMPARE_NAMES,
    )
    group.add_argument(
        "--users", nargs="+", action="extend", default=[], metavar="ID", help="user or group ids"
    )
    group.add_argument("--saved-search", metavar="ID", help="saved search id to filter by")
    return parent


def _format_option(parser: argparse.ArgumentParser, *choices: str) -> None:
    parser.add_argument(
        "--format",
        choices=choices,
        default=choices[0],
        help="output: " + ", ".join(choices) + " (default: %(default)s; data goes to stdout)",
    )


def _chart_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-chart",
        action="store_true",
        help="table output: leave out the funnel bar chart (drawn only on a terminal, "
        "never into a pipe or file)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``closefunnel`` argument parser (each subcommand sets ``handler``)."""
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
        help=_VERBOSE_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _global_options()
    connection = _connection_options()
    ranges = _range_options()

    demo_parser = sub.add_parser(
        "demo",
        parents=[common],
        help="compare this month with last month and last year on a built-in emulator",
        description="Start the Close API emulator in-process (demo organization), fetch this "
        "month to date (on the 1st, the whole of last month) against the same days last month "
        "and last year for every pipeline concurrently, and print the results. No key, no "
        "network.",
    )
    demo_parser.add_argument(
        "--now", type=aware_datetime, metavar="ISO", help="fix the clock (ISO 8601 with zone)"
    )
    demo_parser.add_argument(
        "--tz-offset", type=hours, metavar="H", help="hours from UTC (default: --now's or local)"
    )
    _chart_option(demo_parser)
    demo_parser.set_defaults(handler=demo.demo)

    totals = sub.add_parser(
        "totals",
        parents=[common, connection, ranges],
        help="one report, or one report against compared ranges",
        description="Fetch one funnel totals report; with --compare, the base report and "
        "each compared report concurrently, merged.",
    )
    totals.add_argument("--pipeline", required=True, metavar="ID", help="pipeline id")
    _format_option(totals, "table", "json", "csv", "html")
    _chart_option(totals)
    totals.set_defaults(handler=_commands.totals)

    bulk = sub.add_parser(
        "bulk",
        parents=[common, connection, ranges],
        help="the same report for many pipelines at once",
        description="Fetch the same report (and comparison) for many pipelines under one "
        "rate-limit gate. Exit status 1 if any failed.",
    )
    which = bulk.add_mutually_exclusive_group(required=True)
    which.add_argument("--all-pipelines", action="store_true", help="every pipeline")
    which.add_argument("--pipeline", nargs="+", action="extend", metavar="ID", help="pipeline ids")
    _format_option(bulk, "table", "json", "jsonl", "csv", "html")
    _chart_option(bulk)
    bulk.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    bulk.set_defaults(handler=_commands.bulk)

    pipelines = sub.add_parser(
        "pipelines", parents=[common, connection], help="list pipelines and their ids"
    )
    _format_option(pipelines, "table", "json", "csv")
    pipelines.set_defaults(handler=_commands.pipelines)

    users = sub.add_parser(
        "users", parents=[common, connection], help="list users and their ids (for --users)"
    )
    _format_option(users, "table", "json", "csv")
    users.set_defaults(handler=_commands.users)

    emulator = sub.add_parser(
        "emulator",
        parents=[common],
        help="serve the Close API emulator",
        description="Serve a Close API emulator until Ctrl-C (same options as "
        "python -m closefunnel.emulator).",
    )
    from closefunnel.emulator._cli import add_arguments

    add_arguments(emulator)
    emulator.set_defaults(handler=_commands.emulator)

    serve_parser = sub.add_parser(
        "serve",
        parents=[common, connection],
        help=f"serve the FastAPI app (needs {serve.FASTAPI_HINT})",
        description="Serve closefunnel's FastAPI router (GET /pipelines, GET /funnel/{id}) "
        "with uvicorn, with a TTL cache in front of the client.",
    )
    serve_parser.add_argument(
        "--host", default="127.0.0.1", help="interface (default: %(default)s)"
    )
    serve_parser.add_argument(
        "--port", type=port, default=8000, help="TCP port (default: %(default)s)"
    )
    serve_parser.add_argument(
        "--cache-ttl",
        type=non_negative_seconds,
        default=30.0,
        metavar="SECONDS",
        help=(
            "serve identical requests from memory (or Redis, with --redis) for this long; "
            "0 = off, and with it the single-flight workers share (default: %(default)s)"
        ),
    )
    serve_parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N worker processes on one socket; give them --redis so they share one "
        "rate-limit gate and one cache (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="require callers to send `Authorization: Bearer <token>` with the token in PATH "
        f"(default: the {serve.TOKEN_ENV} environment variable; none = no auth)",
    )
    serve_parser.set_defaults(handler=serve.serve)

    completion = sub.add_parser(
        "completion",
        parents=[common],
        help="print the shell completion script for bash, zsh or fish",
        # Raw text (the examples' lines must stay lines), so the description is wrapped here.
        description="Print a script that makes SHELL complete closefunnel's commands, options\n"
        "and their values (report types, range names, --format ...). Load it from the\n"
        "shell's startup file, or save it where the shell looks for completions.",
        epilog="examples:\n"
        '  eval "$(closefunnel completion bash)"    # in ~/.bashrc\n'
        '  eval "$(closefunnel completion zsh)"     # in ~/.zshrc, after compinit\n'
        "  closefunnel completion fish > ~/.config/fish/completions/closefunnel.fish",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument(
        "shell", choices=_completion.SHELLS, metavar="SHELL", help="bash, zsh or fish"
    )
    completion.set_defaults(handler=_completion.completion)
    return parser
