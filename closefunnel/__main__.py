"""``python -m closefunnel``: the same command line as the ``closefunnel`` script."""

from __future__ import annotations

import sys

from closefunnel.cli import main

if __name__ == "__main__":
    sys.exit(main())
