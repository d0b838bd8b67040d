"""
The emulator's command line, in reusable parts.

``closefunnel emulator ...`` (the package CLI) and ``python -m closefunnel.emulator``
share :func:`add_arguments`, :func:`config_from_args` and :func:`serve`, so both accept
the same options and print the same banner. The banner shows the API key because it is
the emulator's own made-up key, which a user has to paste into a client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from closefunnel.emulator._config import (
    DATASETS,
    FAULT_KINDS,
    HEADER_STYLES,
    EmulatorConfig,
)
from closefunnel.emulator._server import Emulator

__all__ = ["add_arguments", "config_from_args", "main", "serve"]

#: The EmulatorConfig fields the command line sets (``--org-factor`` -> ``org_factor``).
_CONFIG_OPTIONS = (
    "host", "port", "dataset", "seed", "now", "rps", "burst", "window", "org_factor",
    "header_style", "legacy_429_body", "latency", "jitter", "fault_rate", "faults",
    "slow_delay", "users", "opportunities", "pipelines", "keys", "log_limit", "header_timeout",
)  # fmt: skip


def _aware(text: str) -> datetime:
    # ArgumentTypeError, not ValueError: argparse would name this function in its message.
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 datetime (e.g. 2025-06-18T12:00Z)"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (e.g. Z or +02:00)")
    return value


def _faults(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s): {', '.join(unknown)}")
    return kinds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options (defaults are :class:`EmulatorConfig`'s)."""
    d = EmulatorConfig()
    add = parser.add_argument
    add("--host", default=d.host, help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8765, help="TCP port, 0 = any free (default: %(default)s)")
    add(
        "--dataset",
        choices=DATASETS,
        default=d.dataset,
        help="demo (seeded organization) or docs-example (default: %(default)s)",
    )
    add("--seed", type=int, default=d.seed, help="seed for data, keys, faults, jitter")
    add("--now", type=_aware, default=None, help="fixed clock, ISO 8601 with zone")
    add("--rps", type=float, default=None, help="requests/s per key and endpoint group")
    add("--burst", type=float, default=d.burst, help="bucket size = ceil(rps*burst*window)")
    add("--window", type=float, default=d.window, help="refill window in seconds")
    add("--org-factor", type=float, default=d.org_factor, help="org limit = factor x key limit")
    add(
        "--header-style",
        choices=HEADER_STYLES,
        default=d.header_style,
        help="rate-limit headers to send (default: %(default)s)",
    )
    add(
        "--legacy-429-body",
        choices=("top", "nested"),
        default=None,
        help="send the deprecated JSON body with 429s",
    )
    add("--latency", type=float, default=d.latency, help="seconds added to every response")
    add("--jitter", type=float, default=d.jitter, help="+- uniform seconds on the latency")
    add("--fault-rate", type=float, default=d.fault_rate, help="probability of a fault")
    add(
        "--faults",
        type=_faults,
        default=d.faults,
        help=f"comma-separated fault kinds (default: all of {','.join(FAULT_KINDS)})",
    )
    add("--slow-delay", type=float, default=d.slow_delay, help="seconds for slow/stall")
    add("--users", type=int, default=d.users, help="users of the demo organization")
    add("--opportunities", type=int, default=d.opportunities, help="opportunities in the demo")
    add("--pipelines", type=int, default=d.pipelines, help="pipelines of the demo organization")
    add("--keys", type=int, default=d.keys, help="API keys of the organization")
    add("--log-limit", type=int, default=d.log_limit, help="requests kept in the log")
    add(
        "--header-timeout",
        type=float,
        default=d.header_timeout,
        help="seconds a client may take to send a request's headers",
    )


def config_from_args(ns: argparse.Namespace) -> EmulatorConfig:
    """
    The config the parsed options describe.

    Raises:
        ValueError: an option value :class:`EmulatorConfig` refuses.
    """
    fields: dict[str, Any] = {n: getattr(ns, n) for n in _CONFIG_OPTIONS if hasattr(ns, n)}
    return EmulatorConfig(**fields)


async def serve(config: EmulatorConfig, *, out: TextIO = sys.stdout) -> None:
    """Serve *config* until cancelled, after printing the base URL and the API key(s)."""
    async with Emulator(config) as emu:
        print(f"Close API emulator ({config.dataset}) at {emu.base_url}", file=out)
        print(f"API key: {emu.api_key}", file=out)
        for key in emu.api_keys[1:]:
            print(f"API key: {key}", file=out)
        print(f"OAuth token: {emu.token}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m closefunnel.emulator [options]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m closefunnel.emulator", description="Serve a Close API emulator."
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0
