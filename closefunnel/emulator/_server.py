"""
:class:`Emulator`: the emulator app served on a free loopback port, as an async context.

Tests, demos, the CLI and the benchmarks all start the emulator this way, so they all get
the same lifecycle: the dataset is built at construction (so keys and data can be read
before starting), the socket is bound in :meth:`Emulator.start`, and :meth:`Emulator.close`
stops within a fraction of a second even with slow or stalled responses in flight.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from types import TracebackType

from aiohttp import web

from closefunnel.emulator._app import OAUTH_KEY_ID, EmulatorState, make_app
from closefunnel.emulator._config import EmulatorConfig
from closefunnel.emulator._data import Dataset
from closefunnel.emulator._deadline import SERVER_LOG, DeadlineSite
from closefunnel.emulator._log import RequestLog

__all__ = ["BackgroundEmulator", "Emulator"]

#: How long close() lets in-flight handlers finish before cancelling them.
_SHUTDOWN_TIMEOUT = 0.25


class Emulator:
    """
    A running Close API emulator.

    ``async with Emulator(EmulatorConfig(...)) as emu:`` then point a client at
    ``emu.base_url`` with ``emu.api_key`` (or ``emu.token`` as a Bearer token).
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._state = EmulatorState.create(self.config)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind ``config.host:config.port`` (0 = a free port) and start serving."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        app = make_app(config=self.config, state=self._state)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT, logger=SERVER_LOG
        )
        await runner.setup()
        try:
            site = DeadlineSite(
                runner,
                self.config.host,
                self.config.port,
                header_timeout=self.config.header_timeout,
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        """Stop serving (idempotent); in-flight responses are cut short."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- what tests read -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/api/v1/``, the base URL for clients."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/api/v1/"

    @property
    def api_key(self) -> str:
        """The organization's first API key (``api_<id>.<secret>``)."""
        return self._state.dataset.api_keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        """All ``config.keys`` API keys, one organization."""
        return self._state.dataset.api_keys

    @property
    def token(self) -> str:
        """A valid OAuth access token (``Authorization: Bearer <token>``)."""
        return self._state.dataset.token

    @property
    def oauth_key_id(self) -> str:
        """The ``key_id`` logged for requests made with :attr:`token`."""
        return OAUTH_KEY_ID

    @property
    def dataset(self) -> Dataset:
        """The organization's data, for computing expectations."""
        return self._state.dataset

    def now(self) -> datetime:
        """
        The emulator's clock (``config.now`` when fixed, else the real time): pass it as
        ``closefunnel.Client(clock=emulator.now)`` so the client resolves relative ranges
        on the same clock the emulator answers them on.
        """
        return self._state.now()

    @property
    def state(self) -> EmulatorState:
        """The app state (limiter, fault plan, cache): for white-box tests."""
        return self._state

    @property
    def log(self) -> RequestLog:
        """
        The requests so far, in arrival order (status 0 while in flight): the newest
        ``config.log_limit`` of them (``log.dropped`` counts the older ones let go).
        """
        return self._state.log

    @property
    def internal_errors(self) -> list[BaseException]:
        """Handler bugs answered with a 500; always empty unless the emulator is wrong."""
        return self._state.internal_errors

    def clear_log(self) -> None:
        """Forget the requests logged so far."""
        self._state.log.clear()

    def fail_next(self, n: int, kind: str, *, path: str | None = None) -> None:
        """
        Give the next *n* requests that pass auth and the limiter (and whose path contains
        *path*, if given) the fault *kind* (one of ``FAULT_KINDS``).
        """
        self._state.faults.script(n, kind, path=path)

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None and self._runner else "not running"
        return f"<Emulator {self.config.dataset} seed={self.config.seed} {where}>"


class BackgroundEmulator:
    """
    An :class:`Emulator` serving from its own event loop in a daemon thread.

    For code under test that runs its own event loop (a CLI calling ``asyncio.run``, a
    synchronous test suite): ``with BackgroundEmulator(config) as emu:`` gives the running
    emulator, whose ``base_url`` and ``api_key`` work from any thread.
    """

    def __init__(self, config: EmulatorConfig | None = None, *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="closefunnel-emulator", daemon=True
        )
        self._timeout = timeout
        self.emulator = Emulator(config)

    def __enter__(self) -> Emulator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(self._timeout)
        return self.emulator

    def __exit__(self, *exc_info: object) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(self.emulator.close(), self._loop)
            future.result(self._timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._timeout)
            self._loop.close()
