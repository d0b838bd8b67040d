"""
The ``closefunnel`` command line (also ``python -m closefunnel``): a leaf of the package,
so nothing in the core imports it.

One module per concern, so a command reads from its handler down:

- ``_main``: :func:`main`, the exit status of each failure, ``-v`` logging;
- ``_parser``: every command and option; ``_args``: the argument types;
- ``_connection``: the key, the options that pick the server, the one place a Client is
  made, the query the options ask for;
- ``_commands``: ``totals``, ``bulk``, ``pipelines``, ``emulator``;
- ``demo``: ``closefunnel demo`` and its calendar maths; ``serve``: ``closefunnel serve``;
- ``_render``: tables and CSV, and the terminal's trust boundary;
- ``_console``: the two streams commands write to; ``_status``: the exit statuses;
  ``_failures``: one actionable line per failure.
- ``_completion``: ``closefunnel completion`` and the answer to a shell's TAB.
"""

from __future__ import annotations

from closefunnel.cli._main import main
from closefunnel.cli._status import ExitStatus

__all__ = ["ExitStatus", "main"]
