"""
The entry point: parse, run one command, turn every expected failure into a status.

Every expected failure ends as one line on stderr and an exit status, never a traceback
(:class:`~closefunnel.cli._status.ExitStatus`): 1 when Close or the network failed (with
what to do about it), 2 for bad usage or an invalid query (naming the bad value). A
closed pipe (``| head``) ends quietly; a full disk says so. ``asyncio.run`` is called
only by the commands: the rest of the package is plain async code. A call from a shell
completion script is answered before any of that (:mod:`~closefunnel.cli._completion`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from closefunnel._errors import CloseFunnelError, InvalidQueryError
from closefunnel.cli._completion import complete, requested
from closefunnel.cli._connection import failure_context
from closefunnel.cli._console import Console
from closefunnel.cli._failures import UsageError, failure_message
from closefunnel.cli._parser import build_parser
from closefunnel.cli._render import clean
from closefunnel.cli._status import ExitStatus

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Console], ExitStatus]

# A bind that failed: the only OSErrors a different --port can fix.
_PORT_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit status.

    Data goes to *stdout* and everything for people to *stderr* (default: the process's
    streams, looked up at call time), so the command line can be run in-process.
    """
    parser = build_parser()
    if argv is None and requested(os.environ):
        # Started by a completion script (the process's own command line, never a caller's
        # *argv*): the candidates go to the shell's descriptor and the process ends here.
        complete(parser)
        return ExitStatus.OK
    console = Console(out=stdout or sys.stdout, err=stderr or sys.stderr)
    try:
        with contextlib.redirect_stdout(console.out), contextlib.redirect_stderr(console.err):
            ns = parser.parse_args(argv)  # argparse prints --help and its errors itself
    except SystemExit as exc:  # --help, --version, or argparse's own usage error (2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    handler: Handler | None = getattr(ns, "handler", None)
    if handler is None:
        parser.print_help(console.err)
        return ExitStatus.USAGE
    with _logging(console.err, verbose=ns.verbose):
        return _dispatch(handler, ns, console)


class _CleanFormatter(logging.Formatter):
    """Log lines carry server text (error reasons): clean them like every other line."""

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))


@contextlib.contextmanager
def _logging(stream: TextIO, *, verbose: bool) -> Iterator[None]:
    """
    Retry and pause warnings are for people debugging (``-v``), not for every run; without
    a handler, Python's last-resort handler would print each one. Undone on exit, so
    calling :func:`main` in-process leaves the logger as it was.
    """
    logger = logging.getLogger("closefunnel")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_CleanFormatter("closefunnel: %(message)s"))
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


def _dispatch(handler: Handler, ns: argparse.Namespace, console: Console) -> int:
    try:
        return handler(ns, console)
    except UsageError as exc:
        console.error(f"error: {exc}")
        return ExitStatus.USAGE
    except InvalidQueryError as exc:  # ours, or Close's 400 (BadRequestError)
        console.error(f"error: invalid query: {exc}")
        return ExitStatus.USAGE
    except CloseFunnelError as exc:
        console.error(failure_message(exc, failure_context(ns)))
        return ExitStatus.FAILED
    except BrokenPipeError:  # `closefunnel ... | head`: the reader has all it wanted
        _silence(console.out)
        return ExitStatus.BROKEN_PIPE
    except OSError as exc:
        if exc.errno in _PORT_ERRORS:  # a port in use (serve, emulator)
            console.error(f"{exc.strerror or exc}; pick another --port or check permissions")
        else:  # e.g. writing to a full disk
            _silence(console.out)
            console.error(f"cannot write the output: {exc.strerror or exc}")
        return ExitStatus.FAILED
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED


def _silence(stream: TextIO) -> None:
    """
    Point the process's stdout at /dev/null when *stream* is it, so the interpreter's
    final flush of what could not be written does not print a traceback on exit.
    """
    if stream is not sys.stdout and stream is not sys.__stdout__:
        return
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
