"""
Data to stdout, people to stderr, in a real process (issue 10 §7).

Under a pseudo-terminal rich shows a progress display on stderr; the data must still
reach a redirected stdout. A closed pipe ends quietly, like any Unix tool; a full disk
says so, without blaming the port.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]  # real processes: run with -m slow

NOW_ISO = "2026-11-18T15:30:00+00:00"
CLI = (sys.executable, "-m", "closefunnel")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLOSE_API_KEY", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    return env


def _drain(fd: int, into: bytearray) -> None:
    """Read a pty's master side until the child closes it (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(fd, 65_536)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


def test_bulk_jsonl_reaches_a_redirected_stdout_under_a_terminal(tmp_path: Path) -> None:
    """`closefunnel bulk ... --format jsonl > file` with stderr and stdin on a terminal."""
    master, slave = pty.openpty()
    terminal = bytearray()
    reader = threading.Thread(target=_drain, args=(master, terminal), daemon=True)
    reader.start()
    target = tmp_path / "out.jsonl"
    try:
        with target.open("wb") as stdout:
            proc = subprocess.run(
                [*CLI, "bulk", "--all-pipelines", "--emulator", "--now", NOW_ISO,
                 "--compare", "last-month", "--format", "jsonl"],
                stdin=slave, stdout=stdout, stderr=slave, env=_env(), timeout=60, check=False,
            )  # fmt: skip
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    shown = terminal.decode(errors="replace")
    assert proc.returncode == 0, shown
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(records) == 3
    assert all(record["error"] is None and record["result"] for record in records)
    assert "3 of 3 reports fetched" in shown  # the people's part went to the terminal
    assert '"pipeline"' not in shown  # and none of the data


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`closefunnel demo | head -0`: no traceback, no port hint, SIGPIPE's status."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        proc = subprocess.run(
            [*CLI, "demo", "--now", NOW_ISO],
            stdout=write_end, stderr=subprocess.PIPE, env=_env(), timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 141


def test_closed_pipe_during_jsonl_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*CLI, "bulk", "--all-pipelines", "--emulator", "--now", NOW_ISO, "--format", "jsonl"],
            stdout=write_end, stderr=subprocess.PIPE, env=_env(), timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == 141


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_says_so_without_the_port_hint() -> None:
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [*CLI, "demo", "--now", NOW_ISO],
            stdout=full, stderr=subprocess.PIPE, env=_env(), timeout=60, check=False,
        )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err == "closefunnel: cannot write the output: No space left on device\n"
