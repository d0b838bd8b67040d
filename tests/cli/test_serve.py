"""
``closefunnel serve`` options that need no auth on the app's side: the token's sources,
the warning beyond loopback, and the banner printed only once the socket is bound.

The server runs in real subprocesses: uvicorn configures logging process-wide.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from closefunnel.cli.serve import TOKEN_ENV

from .conftest import Run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # real processes: run with -m slow

SCRIPT = shutil.which("closefunnel") or str(Path(sys.executable).with_name("closefunnel"))
#: TEST-NET-1 (RFC 5737): not loopback, and not an address of this machine, so a bind
#: fails at once and nothing is ever exposed.
NOT_LOOPBACK = "192.0.2.1"


def _serve(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CLOSE_API_KEY", TOKEN_ENV)}
    return subprocess.run(
        [SCRIPT, "serve", "--emulator", *argv],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


@pytest.fixture(name="busy_port")
def _busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_banner_only_once_bound(busy_port: int) -> None:
    done = _serve("--port", str(busy_port))
    assert done.returncode == 1
    assert "closefunnel API for" not in done.stderr  # it never served
    assert "Traceback" not in done.stderr


def test_warning_beyond_loopback_without_a_token() -> None:
    done = _serve("--host", NOT_LOOPBACK, "--port", "0")
    assert done.returncode == 1  # the address is not this machine's
    assert "WARNING" in done.stderr
    assert TOKEN_ENV in done.stderr
    assert "Traceback" not in done.stderr


def test_no_warning_on_loopback(busy_port: int) -> None:
    done = _serve("--host", "127.0.0.1", "--port", str(busy_port))
    assert "WARNING: serving on" not in done.stderr


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        ("empty-file", "is empty"),
        ("missing-file", "cannot read --token-file"),
        ("blank-env", f"{TOKEN_ENV} is set but empty"),
    ],
)
def test_token_source_problems_are_usage_errors(
    setup: str,
    named: str,
    cli_plain: Callable[..., Run],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked before anything starts: exit 2 and one line naming the source."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    argv = ["serve", "--emulator", "--port", "0"]
    if setup == "empty-file":
        (tmp_path / "token").write_text(" \n")
        argv += ["--token-file", str(tmp_path / "token")]
    elif setup == "missing-file":
        argv += ["--token-file", str(tmp_path / "absent")]
    else:
        monkeypatch.setenv(TOKEN_ENV, "  ")
    run = cli_plain(*argv)
    assert run.code == 2
    assert named in run.err
    assert run.err.count("\n") == 1


def test_read_token_prefers_the_file_and_strips(tmp_path: Path) -> None:
    from closefunnel.cli.serve import read_token

    path = tmp_path / "token"
    path.write_text("  from-file\n")
    assert read_token(path, {TOKEN_ENV: "from-env"}) == "from-file"
    assert read_token(None, {TOKEN_ENV: " from-env\n"}) == "from-env"
    assert read_token(None, {}) is None
