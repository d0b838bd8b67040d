"""
Which request gets which fault: random draws from a seeded RNG, and scripted faults.

Every request that passed auth and the limiter draws exactly one number, whether or not
a script applies, so the random sequence depends only on the seed and the request order.
"""

from __future__ import annotations

import random
from collections import deque

import attrs

from closefunnel.emulator._config import FAULT_KINDS

__all__ = ["FaultPlan", "Script"]


@attrs.define
class Script:
    """``remaining`` more requests (whose path contains ``path``, if set) get ``kind``."""

    remaining: int
    kind: str
    path: str | None = None


@attrs.define
class FaultPlan:
    """The fault source of one emulator."""

    rate: float
    kinds: tuple[str, ...]
    seed: int
    _rng: random.Random = attrs.field(init=False)
    _scripts: deque[Script] = attrs.field(factory=deque, init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(f"closefunnel-emulator-faults-{self.seed}")

    def script(self, n: int, kind: str, *, path: str | None = None) -> None:
        """Give the next *n* matching requests the fault *kind* (after earlier scripts)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if n:
            self._scripts.append(Script(n, kind, path))

    def draw(self, path: str) -> str | None:
        """The fault for the next request to *path*, or None."""
        roll = self._rng.random()
        pick = self._rng.randrange(len(self.kinds)) if self.kinds else 0
        for script in self._scripts:
            if script.path is None or script.path in path:
                script.remaining -= 1
                if script.remaining <= 0:
                    self._scripts.remove(script)
                return script.kind
        if self.rate > 0 and roll < self.rate:
            return self.kinds[pick]
        return None
