"""
A redis-server of a test's own: on a free loopback port, in a directory given to it,
nothing saved to disk; stoppable and restartable on the same port (an outage, then
Redis coming back empty). Shared by every conftest that needs one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import NoReturn

from tests.needs import missing

ENABLE_HINT = (
    "set REDIS_URL=redis://host:port (a server the tests may borrow an empty database on) "
    "or put redis-server on PATH (Debian: apt-get install redis-server)"
)
#: How long a started redis-server may take to accept connections.
START_SECONDS = 10.0


def unavailable(reason: str) -> NoReturn:
    """Skip a Redis test, or fail it in CI, where a skip would hide an untested path."""
    missing(f"Redis tests need a Redis server: {reason}; {ENABLE_HINT}")


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server; :meth:`start` it, :meth:`stop` it, :meth:`restart` it."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("REDIS_URL is unset and redis-server is not on PATH")
        self.binary = binary
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server (on its port, again after a stop) and wait until it listens."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    unavailable(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)

    def restart(self) -> None:
        """A new, empty server on the same port, as Redis coming back after an outage."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
