"""``python -m closefunnel.emulator``: serve the emulator until Ctrl-C."""

from __future__ import annotations

import sys

from closefunnel.emulator._cli import main

if __name__ == "__main__":
    sys.exit(main())
