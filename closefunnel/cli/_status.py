"""The exit statuses of ``closefunnel``, one name each, as shells and CI read them."""

from __future__ import annotations

import enum

__all__ = ["ExitStatus"]


class ExitStatus(enum.IntEnum):
    """
    What a run's exit status means.

    ``FAILED`` is Close or the network (try again, or fix the key); ``USAGE`` is the
    command line (fix the command). ``BROKEN_PIPE`` is what a Unix tool killed by
    SIGPIPE reports (128 + 13), so ``closefunnel demo | head -1`` ends like ``yes | head -1``.
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130
    BROKEN_PIPE = 141
