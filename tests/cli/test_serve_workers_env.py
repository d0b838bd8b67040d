"""
``serve --workers`` leaves each worker's app description (which holds the API key) in its
own environment only while it serves: it is gone however serving ends, a busy port
included. In-process (``main()``): the port is refused before any worker starts.
"""

from __future__ import annotations

import os
import socket

import pytest

from closefunnel.cli.serve import WORKER_ENV

from .conftest import run_main

pytest.importorskip("uvicorn", reason="pip install 'closefunnel[fastapi]'")

SECRET = "api_envtest.sekrit-value"


def test_the_worker_description_leaves_the_environment_when_the_port_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOSE_API_KEY", SECRET)
    monkeypatch.delenv(WORKER_ENV, raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = run_main(
            ["serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
            secrets=(SECRET,),
        )
    assert run.code == 1
    assert "pick another --port" in run.err
    assert WORKER_ENV not in set(os.environ)  # (the names only: the value holds the key)
