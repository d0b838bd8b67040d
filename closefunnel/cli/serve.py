"""
``closefunnel serve``: closefunnel's FastAPI app under uvicorn, with a TTL cache.

FastAPI and uvicorn are imported only here, so ``closefunnel demo`` works with a bare
``pip install closefunnel``. Callers can be made to show a bearer token
(``--token-file`` or ``CLOSEFUNNEL_SERVE_TOKEN``): the server holds the organization's
API key, so anyone who can reach it can spend that key's rate limit. Binding beyond
loopback without a token is allowed (a private network may be trusted) but warned about.
The "serving on" banner is printed once the socket is bound, with the real port.

``--workers N`` runs N uvicorn worker processes on one socket. Each builds its app with
:func:`worker_app` from a description the parent leaves in the environment (the key
travels that way only to the workers, as it would through ``CLOSE_API_KEY``). With
``--emulator`` the parent serves one emulator that every worker talks to. Without
``--redis`` each worker has its own rate-limit gate, and a warning says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from closefunnel.cli._connection import Connection, client_factory
from closefunnel.cli._console import Console
from closefunnel.cli._failures import UsageError
from closefunnel.cli._status import ExitStatus

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["FASTAPI_HINT", "TOKEN_ENV", "WORKER_ENV", "read_token", "serve", "worker_app"]

FASTAPI_HINT: Final = "pip install 'closefunnel[fastapi]'"
#: The environment variable the callers' bearer token is read from (--token-file wins).
TOKEN_ENV: Final = "CLOSEFUNNEL_SERVE_TOKEN"
#: Where ``--workers`` leaves each worker's app description (JSON).
WORKER_ENV: Final = "CLOSEFUNNEL_SERVE_WORKER"


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


def guard_host(app: FastAPI, host: str) -> None:
    """
    On a loopback bind, answer only requests addressed to this machine by name or address.

    A page elsewhere can point its own name at 127.0.0.1 (DNS rebinding) and then read the
    app as its own origin, with the API key behind it; its requests carry its name in
    ``Host``, so they get a 400. (IPv6 literals are left alone: Starlette's check cannot
    read ``[::1]:8000``.) Beyond loopback the names are the deployment's: use a token.
    """
    if ":" in host or not is_loopback(host):
        return
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", host])


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
    if ns.workers > 1:
        if connection.redis is None:
            console.note(
                f"WARNING: {ns.workers} workers without --redis: each has its own rate-limit "
                "gate and cache, so together they can send the key into 429s. Give them "
                "--redis URL to share one."
            )
        return _serve_workers(ns, connection, token, console)

    async def run() -> ExitStatus:
        async with client_factory(connection) as make_client:
            # Only ask for auth when there is a token, so the app's default stays as it is.
            app = create_app(
                client_factory=make_client,
                cache_ttl=ns.cache_ttl or None,
                token=token,
                redis=connection.redis,
            )
            guard_host(app, ns.host)
            config = uvicorn.Config(app, host=ns.host, port=ns.port, log_level="info")

            class Server(uvicorn.Server):
                async def startup(self, sockets: Any = None) -> None:
                    await super().startup(sockets=sockets)
                    if self.started:  # bound: now the banner is true
                        port = _bound(self, ns.port)
                        console.note(
                            f"closefunnel API for {connection.where} on http://{ns.host}:{port}/ "
                            f"(dashboard at /, OpenAPI docs at /docs; cache {ns.cache_ttl:g} s"
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


def _serve_workers(
    ns: argparse.Namespace, connection: Connection, token: str | None, console: Console
) -> ExitStatus:
    import uvicorn

    with contextlib.ExitStack() as stack:
        if connection.emulator:
            from closefunnel.cli._connection import emulator_config
            from closefunnel.emulator import BackgroundEmulator

            emu = stack.enter_context(BackgroundEmulator(emulator_config(connection.now)))
            api_key: str | None = emu.api_key
            base_url = emu.base_url
        else:
            api_key, base_url = connection.api_key, connection.base_url
        os.environ[WORKER_ENV] = json.dumps(
            {
                "api_key": api_key,
                "base_url": base_url,
                "tz_offset": connection.tz_offset,
                "max_concurrency": connection.max_concurrency,
                "redis": connection.redis,
                "cache_ttl": ns.cache_ttl,
                "token": token,
                "host": ns.host,
                # The emulator's fixed clock (--now), so workers resolve ranges on it too.
                "now": connection.now.isoformat()
                if connection.emulator and connection.now is not None
                else None,
            }
        )
        # The description holds the API key: it leaves this process's environment however
        # serving ends (a busy port, Ctrl-C, an error), not only when uvicorn returns.
        try:
            # Bound here, before the workers start, so the banner is true and a busy port is
            # reported like the single-process one; the workers share this socket.
            family, kind, _, _, address = socket.getaddrinfo(
                ns.host, ns.port, type=socket.SOCK_STREAM
            )[0]
            sock = stack.enter_context(socket.socket(family, kind))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sharing = "one shared gate and cache" if connection.redis else "each its own gate"
            console.note(
                f"closefunnel API for {connection.where} on "
                f"http://{ns.host}:{sock.getsockname()[1]}/ with {ns.workers} workers ({sharing}"
                f"{'; bearer token required' if token is not None else ''})"
            )
            with contextlib.suppress(KeyboardInterrupt):
                uvicorn.run(
                    "closefunnel.cli.serve:worker_app",
                    factory=True,
                    fd=sock.fileno(),
                    workers=ns.workers,
                    log_level="info",
                )
        finally:
            os.environ.pop(WORKER_ENV, None)
    return ExitStatus.OK


def worker_app() -> FastAPI:
    """The app of one ``serve --workers`` worker, from the parent's description."""
    from closefunnel import Client
    from closefunnel.fastapi import create_app

    spec = json.loads(os.environ[WORKER_ENV])
    fixed = None if spec.get("now") is None else datetime.fromisoformat(spec["now"])

    def make_client() -> Client:
        return Client(
            api_key=spec["api_key"],
            base_url=spec["base_url"],
            tz_offset=spec["tz_offset"],
            max_concurrency=spec["max_concurrency"],
            redis=spec["redis"],
            clock=None if fixed is None else (lambda: fixed),
        )

    app = create_app(
        client_factory=make_client,
        cache_ttl=spec["cache_ttl"] or None,
        token=spec["token"],
        redis=spec["redis"],
    )
    guard_host(app, spec["host"])
    return app
