"""What a test needs from the machine: a skip without it locally, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to 1, true or yes, in any case)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(message: str) -> NoReturn:
    """Skip the test, saying what is missing; under CI=true fail it: a skip there would
    hide an untested path."""
    if in_ci():
        pytest.fail(f"{message} (a skip is a failure under CI=true)", pytrace=False)
    pytest.skip(message)
