"""
``closefunnel serve``: closefunnel's FastAPI app under uvicorn, with a TTL cache.

FastAPI and uvicorn are imported only here, so ``closefunnel demo`` works with a bare
``pip install closefunnel``. Callers can be made to show a bearer token
(``--token-file`` or ``CLOSEFUNNEL_SERVE_TOKEN``): the server holds the organization's
API key, so anyone who can reach it can spend that key's rate limit. Binding beyond
loopback without a token is allowed (a private network may be trusted) but warned about.
The "serving on" banner is printed once the socket is bound, with the real port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
from pathlib import Path
from typing import Any, Final

from closefunnel.cli._connection import Connection, client_factory
from closefunnel.cli._console import Console
from closefunnel.cli._failures import UsageError
from closefunnel.cli._status import ExitStatus

__all__ = ["FASTAPI_HINT", "TOKEN_ENV", "read_token", "serve"]

FASTAPI_HINT: Final = "pip install 'closefunnel[fastapi]'"
#: The environment variable the callers' bearer token is read from (--token-file wins).
TOKEN_ENV: Final = "CLOSEFUNNEL_SERVE_TOKEN"


def read_token(path: Path | None, environ: dict[str, str] | os._Environ[str]) -> str | None:
    """
    The bearer token callers must send, or None for none: ``--token-file`` if given,
    else ``CLOSEFUNNEL_SERVE_TOKEN``; surrounding whitespace (a trailing newline) is
    stripped. An empty file, or the variable set to nothing, is a usage error rather than
    an open server the operator did not ask for.
    """
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise UsageError(f"cannot read --token-file {str(path)!r}: {reason}") from None
        if not token:
            raise UsageError(f"--token-file {str(path)!r} is empty")
        return token
    if TOKEN_ENV in environ:
        token = environ[TOKEN_ENV].strip()
        if not token:
            raise UsageError(f"{TOKEN_ENV} is set but empty; unset it or give a token")
        return token
    return None


def is_loopback(host: str) -> bool:
    """Whether *host* only accepts connections from this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _bound(server: Any, fallback: int) -> int:
    for listener in getattr(server, "servers", ()):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return fallback


def serve(ns: argparse.Namespace, console: Console) -> ExitStatus:
    """Serve the app until Ctrl-C; status 1 when the port cannot be bound."""
    try:
        import uvicorn

        from closefunnel.fastapi import create_app
    except ImportError:
        raise UsageError(f"closefunnel serve needs FastAPI and uvicorn: {FASTAPI_HINT}") from None
    token = read_token(ns.token_file, os.environ)
    connection = Connection.from_args(ns).with_key()
    if token is None and not is_loopback(ns.host):
        console.note(
            f"WARNING: serving on {ns.host}, beyond this machine, without a token: anyone who "
            f"can reach it can spend the API key's rate limit. Set --token-file or {TOKEN_ENV}."
        )

    async def run() -> ExitStatus:
        async with client_factory(connection) as make_client:
            # Only ask for auth when there is a token, so the app's default stays as it is.
            auth: dict[str, Any] = {} if token is None else {"token": token}
            app = create_app(client_factory=make_client, cache_ttl=ns.cache_ttl or None, **auth)
            config = uvicorn.Config(app, host=ns.host, port=ns.port, log_level="info")

            class Server(uvicorn.Server):
                async def startup(self, sockets: Any = None) -> None:
                    await super().startup(sockets=sockets)
                    if self.started:  # bound: now the banner is true
                        port = _bound(self, ns.port)
                        console.note(
                            f"closefunnel API for {connection.where} on http://{ns.host}:{port}/ "
                            f"(OpenAPI docs at /docs; cache {ns.cache_ttl:g} s"
                            f"{'; bearer token required' if token is not None else ''})"
                        )

            server = Server(config)
            try:
                await server.serve()
            except SystemExit as exc:  # uvicorn exits when it cannot bind
                return ExitStatus.FAILED if exc.code else ExitStatus.OK
            return ExitStatus.OK if server.started else ExitStatus.FAILED

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutdown
        return asyncio.run(run())
    return ExitStatus.OK
