"""
Where the command line writes: data to one stream, everything for people to the other.

Commands never touch ``sys.stdout``: they are handed a :class:`Console`, so tests run
them with two ``io.StringIO`` and a ``> file`` redirect always gets the data, whatever
the progress display does on the terminal.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Final, TextIO

import attrs
from rich.console import Console as RichConsole
from rich.console import RenderableType

from closefunnel.cli._render import clean

__all__ = ["Console"]

#: Width for tables written to a pipe or file when COLUMNS is unset (rich would use 80).
PIPE_WIDTH: Final = 120


class _RichConsole(RichConsole):
    """rich's console, but a closed pipe is an ordinary ``BrokenPipeError``.

    rich's own reaction (redirect ``sys.stdout`` and ``SystemExit(1)``) assumes it writes
    to the process's stdout; ours may write elsewhere, and the caller decides the status.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


@attrs.frozen
class Console:
    """
    The two text streams a command writes to.

    Attributes:
        out: Data: tables, JSON, JSONL, CSV. Nothing else ever goes here.
        err: People: progress, warnings, failure summaries, error lines.
    """

    out: TextIO
    err: TextIO

    @classmethod
    def system(cls) -> Console:
        """The process's own ``sys.stdout`` and ``sys.stderr`` (looked up now)."""
        return cls(out=sys.stdout, err=sys.stderr)

    def rich(self, *, stderr: bool = False) -> RichConsole:
        """A rich console on ``out`` (or ``err``); no highlighting, no markup of our own."""
        stream = self.err if stderr else self.out
        probe = _RichConsole(file=stream)
        width = None if probe.is_terminal or "COLUMNS" in os.environ else PIPE_WIDTH
        return _RichConsole(file=stream, width=width, highlight=False, emoji=False)

    def show(self, *renderables: RenderableType, stderr: bool = False) -> None:
        """
        Print rich renderables (tables, text) for people on ``out`` (or ``err``).

        On a terminal rich draws them as usual. To a pipe or file each line ends where its
        text does: rich pads every line to the full width, which is noise in a file and
        breaks ``diff`` and ``grep $``.
        """
        console = self.rich(stderr=stderr)
        if console.is_terminal:
            for renderable in renderables:
                console.print(renderable)
            return
        with console.capture() as captured:
            for renderable in renderables:
                console.print(renderable)
        stream = self.err if stderr else self.out
        stream.write("\n".join(line.rstrip() for line in captured.get().split("\n")))
        stream.flush()

    def write(self, text: str) -> None:
        """Write data (already encoded: JSON, CSV) to ``out``."""
        self.out.write(text)

    def flush(self) -> None:
        """Flush ``out`` (so a JSONL consumer sees each record as it comes)."""
        self.out.flush()

    def error(self, message: str) -> None:
        """One ``closefunnel: ...`` line on ``err``; *message* may hold server text."""
        self.err.write(f"closefunnel: {clean(message)}\n")
        self.err.flush()

    def note(self, message: str) -> None:
        """A line for people on ``err`` (a banner, a warning)."""
        self.err.write(clean(message) + "\n")
        self.err.flush()
