"""The README's Python examples run as written (against the bundled emulator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", TEXT, re.S)
#: The pytest configuration the README tells users to put in their own ``pyproject.toml``.
PYTEST_CONFIGS = [
    block for block in re.findall(r"```toml\n(.*?)```", TEXT, re.S) if "[tool.pytest" in block
]


def test_readme_has_examples() -> None:
    """The usage section keeps its runnable examples, and one pytest configuration for them."""
    assert len(EXAMPLES) >= 4
    assert any("def test_" in source for source in EXAMPLES)
    assert len(PYTEST_CONFIGS) == 1


@pytest.mark.slow  # each example in a fresh interpreter
@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(source: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each example exits 0 in a fresh interpreter, with warnings as errors."""
    env = dict(os.environ)
    if "REDIS_URL" in source:  # the Many workers example: a Redis database of the session's
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    if "def test_" in source:  # an example of a user's own test module: run it with pytest
        # in a project of its own, configured only by what the README says to configure, so
        # a warning today's pytest-asyncio gives a user who copies the example fails here too
        (tmp_path / "pyproject.toml").write_text(PYTEST_CONFIGS[0], encoding="utf-8")
        script = tmp_path / "test_example.py"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        command += ["--rootdir", str(tmp_path), str(script)]
    else:
        script = tmp_path / "example.py"
        command = [sys.executable, "-W", "error", str(script)]
    script.write_text(source, encoding="utf-8")
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
