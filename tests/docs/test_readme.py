"""The README's Python examples run as written (against the bundled emulator)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples() -> None:
    """The usage section keeps its runnable examples."""
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(source: str, tmp_path: Path) -> None:
    """Each example exits 0 in a fresh interpreter, with warnings as errors."""
    if "def test_" in source:  # an example of a user's own test module: run it with pytest
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
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
