"""The composition root: builds every connection once, owns every task, runs until a signal.

Lifecycle as in uvicorn: ``startup()`` -> ``main_loop()`` -> ``shutdown()``. The first
SIGTERM/SIGINT starts a bounded drain (calls being recorded still get their rows); a
second one cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from typing import Any

import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from callrec import __version__, metrics, sdnotify
from callrec.asterisk.ami import AmiClient, AmiSettings
from callrec.asterisk.ari import AriClient, AriSettings
from callrec.calls import EVENT_TYPES, CallTracker, MalformedEvent, parse_channel, parse_event
from callrec.config import Settings
from callrec.recorder import Recorder, free_bytes
from callrec.store import Store, StoreUnavailable

log = structlog.get_logger("callrec.app")


class App:
    """One running daemon."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ast = settings.asterisk
        self.ami = AmiClient(AmiSettings(ast.ami_host, ast.ami_port, ast.ami_username, ast.ami_secret))
        self.ari = AriClient(
            AriSettings(ast.ari_url, ast.ari_username, ast.ari_password, ast.ari_app, event_types=EVENT_TYPES)
        )
        self.tracker = CallTracker(settings.registers, hmac_key=settings.number_hmac_key)
        self.store: Store | None = None
        self.recorder: Recorder | None = None
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._web: web.AppRunner | None = None

    # --- event path (hot) -------------------------------------------------------------------

    def on_event(self, obj: dict[str, Any]) -> None:
        try:
            event = parse_event(obj)
        except MalformedEvent as exc:
            metrics.PROTOCOL_ERRORS.labels(source="ari", kind="malformed_event").inc()
            log.warning("malformed ari event skipped", event_type=str(obj.get("type"))[:40], reason=str(exc))
            return
        if event is not None:
            assert self.recorder is not None
            self.recorder.execute(self.tracker.handle(event, time.time()))

    async def on_connect(self) -> None:
        """Asterisk keeps no events for a disconnected client: rebuild from the channel list."""
        channels = await self.ari.channels()
        live = []
        for obj in sorted(
            channels, key=lambda c: str(c.get("creationtime", "")) if isinstance(c, dict) else ""
        ):
            try:
                live.append(parse_channel(obj))
            except MalformedEvent:
                metrics.PROTOCOL_ERRORS.labels(source="ari", kind="malformed_channel").inc()
        assert self.recorder is not None
        self.recorder.execute(self.tracker.reconcile(live, time.time()))
        log.info("reconciled with asterisk", channels=len(live), calls=self.tracker.call_count)

    # --- lifecycle --------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # An owned task dying is a bug; stop so systemd restarts us in a clean state.
            log.error("task failed", task=task.get_name(), error=repr(task.exception()))
            self.stopping.set()

    async def startup(self) -> None:
        s = self.settings
        metrics.BUILD_INFO.info({"version": __version__})
        await self._start_metrics()
        self.store = await self._connect_store()
        self.recorder = Recorder(
            self.ami,
            self.store,
            s.registers,
            s.asterisk.recordings_dir,
            file_wait_timeout=s.file_wait_timeout,
            node=s.node,
        )
        self._spawn(self.ami.run(), "ami")
        self._spawn(self.ari.run(self.on_event, self.on_connect), "ari")
        self._spawn(self._gauges(), "gauges")
        # READY only once every connection is up (systemd Type=notify).
        waits: asyncio.Future[Any] = asyncio.gather(self.ami.wait_connected(), self.ari.wait_connected())
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait([waits, stop], return_when=asyncio.FIRST_COMPLETED)
        if not stop.done():
            stop.cancel()
            sdnotify.notify("READY=1")
            log.info("callrec ready", registers=sorted(s.registers), version=__version__)
        else:
            waits.cancel()
        await asyncio.gather(waits, stop, return_exceptions=True)

    async def _connect_store(self) -> Store:
        delay = 0.5
        while True:
            try:
                store = await Store.connect(self.settings.database_dsn)
                metrics.CONNECTION_UP.labels(connection="database").set(1)
                return store
            except StoreUnavailable as exc:
                metrics.CONNECTION_UP.labels(connection="database").set(0)
                metrics.RECONNECTS.labels(connection="database").inc()
                log.warning("database unreachable; retrying", error=str(exc)[:200], retry_in=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay * random.uniform(0.5, 1.0))
            if self.stopping.is_set():
                raise asyncio.CancelledError
            delay = min(delay * 2, 10.0)

    async def _start_metrics(self) -> None:
        host, port = self.settings.metrics_listen
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(metrics.REGISTRY))
        self._web = web.AppRunner(app, access_log=None)
        await self._web.setup()
        await web.TCPSite(self._web, host, port).start()

    async def _gauges(self) -> None:
        """Slow-changing gauges and the systemd watchdog, fed from the event loop itself so
        a stuck loop stops feeding it."""
        rec_dir = self.settings.asterisk.recordings_dir
        while True:
            try:
                metrics.RECORDINGS_DIR_FREE_BYTES.set(await asyncio.to_thread(free_bytes, rec_dir))
            except OSError as exc:
                log.warning("cannot stat recordings_dir", error=str(exc)[:200])
            if self.store is not None:
                try:
                    await asyncio.wait_for(self.store.ping(), 5)
                    metrics.CONNECTION_UP.labels(connection="database").set(1)
                except (StoreUnavailable, TimeoutError):
                    metrics.CONNECTION_UP.labels(connection="database").set(0)
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(sdnotify.watchdog_interval(default=10.0))

    async def main_loop(self) -> None:
        await self.stopping.wait()

    async def shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        if self.recorder is not None:
            log.info("draining recordings", active=self.recorder.active)
            left = await self.recorder.drain(self.settings.drain_timeout)
            if left:
                log.warning("recordings still running at exit; the next start adopts them", count=left)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        if self._web is not None:
            await self._web.cleanup()
        log.info("callrec stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None

        def on_signal(sig: signal.Signals) -> None:
            if self.stopping.is_set():
                log.warning("second signal: exiting now", signal=sig.name)
                main.cancel()
                return
            log.info("signal received: shutting down", signal=sig.name)
            self.stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            try:
                await self.startup()
            except asyncio.CancelledError:
                if not self.stopping.is_set():
                    raise
            await self.main_loop()
        finally:
            await self.shutdown()
