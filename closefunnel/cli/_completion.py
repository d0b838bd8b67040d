"""
Shell completion: ``closefunnel completion bash|zsh|fish`` and the shell's side of it.

argcomplete does the work from the parser itself (commands, options, ``choices``, and the
range names the parser attaches to its range options), so completion cannot drift from
the command line the way a hand-written script would. The script it prints only forwards
the line being edited: the shell runs ``closefunnel`` with ``_ARGCOMPLETE`` and
``COMP_LINE``/``COMP_POINT`` set and file descriptor 8 open, :func:`complete` writes the
candidates there, and the process ends without running any command or printing anything
on stdout or stderr.

argcomplete is imported here, inside the functions, and only when completing or printing
a script: every other run neither imports it nor pays for its import.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from closefunnel.cli._console import Console
from closefunnel.cli._status import ExitStatus

__all__ = ["PROG", "SHELLS", "complete", "completion", "requested"]

#: The command the printed scripts register (the installed entry point's name).
PROG: Final = "closefunnel"
#: The shells ``closefunnel completion`` prints a script for.
SHELLS: Final = ("bash", "zsh", "fish")


def requested(environ: Mapping[str, str]) -> bool:
    """
    Whether this process was started by a completion script, not by a person.

    Both variables, not only ``_ARGCOMPLETE``: a stray ``_ARGCOMPLETE`` exported into a
    session must not turn every ``closefunnel`` run into a silent completion attempt.
    """
    return "_ARGCOMPLETE" in environ and "COMP_LINE" in environ


def complete(
    parser: argparse.ArgumentParser,
    *,
    output_stream: Any = None,
    exit_method: Callable[[int], object] = os._exit,
) -> None:
    """
    Answer the shell: write the candidates for ``COMP_LINE`` and exit.

    *output_stream* (default: file descriptor 8, argcomplete's protocol) and *exit_method*
    (default: ``os._exit``, so nothing else runs or flushes) are there for tests.
    Options that take a path complete file names; every other free-form value (ids,
    URLs, numbers) completes nothing rather than the files of the current directory.
    """
    import argcomplete
    from argcomplete.completers import FilesCompleter, SuppressCompleter

    # The ignores: argcomplete's annotations are complete only from 3.7.2; the lowest
    # version allowed (3.6.3, the first that fills in `%(default)s` in descriptions) has
    # untyped constructors.
    for action in _actions(parser):
        if action.type is Path and getattr(action, "completer", None) is None:
            files = FilesCompleter()  # type: ignore[no-untyped-call, unused-ignore]
            setattr(action, "completer", files)  # noqa: B010 (argparse has no such field)
    argcomplete.autocomplete(
        parser,
        always_complete_options="long",  # `--verbose`, not also `-v`, on an empty word
        exit_method=exit_method,
        output_stream=output_stream,
        default_completer=SuppressCompleter(),  # type: ignore[no-untyped-call, unused-ignore]
    )


def completion(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """``closefunnel completion SHELL``: print the script that makes SHELL complete us."""
    from argcomplete.shell_integration import shellcode

    # use_defaults=False: no fallback to file names when nothing matches (bash), the
    # same as zsh and fish; path options still complete files (see complete()).
    # The ignore: as in complete().
    script = shellcode(  # type: ignore[no-untyped-call, unused-ignore]
        [PROG], shell=ns.shell, use_defaults=False
    )
    console.write(script)
    console.flush()
    return ExitStatus.OK


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every action of *parser* and of its subcommands' parsers."""
    for action in parser._actions:  # argparse has no public way to list them
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
