"""The composition root: builds every connection once, owns every task, runs until a signal.

Lifecycle as in uvicorn: ``startup()`` -> ``main_loop()`` -> ``shutdown()``. The first
SIGTERM/SIGINT starts a bounded drain (calls being recorded still get their rows); a
second one cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from callrec import __version__
from callrec.access import audit
from callrec.archive.pipeline import Archiver
from callrec.archive.reading import open_archive
from callrec.asterisk.ami import AmiClient, AmiSettings
from callrec.asterisk.ari import AriClient, AriSettings
from callrec.asterisk.ari_events import (
    EVENT_TYPES,
    ChannelEvent,
    MalformedEvent,
    irrelevant_raw,
    parse_channels,
    parse_event,
    published_at,
)
from callrec.asterisk.ari_events import playing as ari_playing
from callrec.asterisk.ari_rest import AriUnavailable
from callrec.asterisk.ari_subscriptions import LEAN_EVENT_TYPES
from callrec.config import Settings
from callrec.db.pool import DbPool, Store, StoreUnavailable, close_pool, open_pool
from callrec.http.api import build_api
from callrec.http.calls import LiveCalls
from callrec.ops import gauges, metrics, node, sdnotify
from callrec.recording.agi import AgiServer
from callrec.recording.facts import StartRecording
from callrec.recording.file_close import CloseWatch, FileClose
from callrec.recording.journal import Journal
from callrec.recording.lean import Lean
from callrec.recording.outbox import Outbox
from callrec.recording.pause import Pauses
from callrec.recording.recorder import Recorder
from callrec.recording.strays import Rules, StrayScan, adopt_unjournaled
from callrec.recording.tracker import CallTracker
from callrec.retention.sweep import Sweeper
from callrec.retry import Backoff, Stopped, retry

log = structlog.get_logger("callrec.app")
T = TypeVar("T")


class App:
    """One running daemon."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        ast = settings.asterisk
        self.ami = AmiClient(AmiSettings(ast.ami_host, ast.ami_port, ast.ami_username, ast.ami_secret))
        self.ari = AriClient(
            AriSettings(
                ast.ari_url,
                ast.ari_username,
                ast.ari_password,
                ast.ari_app,
                event_types=EVENT_TYPES if settings.mode != "lean" else LEAN_EVENT_TYPES,
                skip_raw=irrelevant_raw,
                subscribe_all=settings.mode != "lean",
            )
        )
        self.tracker = CallTracker(settings.registers, hmac_key=settings.number_hmac_key, node=settings.node)
        self.pauses = Pauses(self.ami, max_pause=settings.max_pause, audit_sink=self._audit)
        self.store: Store | None = None
        self.journal: Journal | None = None
        self.outbox: Outbox | None = None
        self.recorder: Recorder | None = None
        self.lean: Lean | None = None
        """Lean mode (recording/lean.py): only the recorded channels are watched."""
        self.closes: CloseWatch | None = None
        self.strays: StrayScan | None = None
        """Files in recordings_dir without journal entry or row (recording/strays.py)."""
        self.archive = open_archive(settings)
        """``None`` with ``[archive] enabled = false``: recordings stay MixMonitor's WAV."""
        self.archiver: Archiver | None = None
        self.stopping = asyncio.Event()
        self.failed = False
        """Set when an owned task died: ``callrec run`` then exits 1, not 0."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runners: list[web.AppRunner] = []
        self._api_pool: DbPool | None = None
        self._pending_at_start: list[StartRecording] | None = None
        self._asterisk_started: str | None = None

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
            commands = self.tracker.handle(event, now := time.time())
            self.recorder.execute(commands)  # first: it writes MixMonitor at once
            if any(isinstance(c, StartRecording) for c in commands) and (at := published_at(obj)):
                # Asterisk's part of the head loss (docs/performance.md#where-the-head-loss-goes).
                metrics.ANSWER_EVENT_DELAY.observe(max(now - at, 0.0))

    async def on_connect(self) -> None:
        """Asterisk keeps no events for a disconnected client: rebuild from the channel list.

        Runs after every (re)connect of the events websocket; the ARI client holds the
        events that arrive meanwhile and delivers them after it, in order.
        """
        backoff = Backoff(initial=0.2, maximum=3.2, stop=self.stopping)

        def failed(exc: BaseException, retry_in: float) -> None:
            log.warning(
                "reconciliation failed; retrying",
                error=str(exc)[:200],
                attempt=backoff.attempt,
                retry_in=round(retry_in, 2),
            )

        # Six tries, five waits of at most 0.2 to 3.2 s: a REST hiccup right after the connect is
        # ridden out, a lasting failure propagates, logged and counted by the ARI client, which
        # then reconnects. Stopping: nothing is left to reconcile for.
        with contextlib.suppress(Stopped):
            await retry(
                self._reconcile, retry_on=(AriUnavailable,), backoff=backoff, on_failure=failed, tries=6
            )

    async def _reconcile(self) -> None:
        assert self.recorder is not None
        info = await self.ari.asterisk_info()
        status = info.get("status")
        started = str(status.get("startup_time", "")) if isinstance(status, dict) else ""
        restarted = self._asterisk_started is not None and started != self._asterisk_started
        self._asterisk_started = started
        live = await self._channels()
        playing = ari_playing(live)
        if self.lean is not None:
            live = self.lean.live(live, (f.channel_id for f in self._pending_at_start or ()))
        if self._pending_at_start is not None:
            # First connect of this run: the recordings a previous run left in the journal
            # are either still up (adopt: never a second MixMonitor) or over (row from file).
            by_id = {ev.channel.id: ev for ev in live}
            for facts in self._pending_at_start:
                event = by_id.get(facts.channel_id)
                if event is not None:
                    self.tracker.adopt(event, facts.recording_id, facts.register)
                    # The journal keeps no channel name (recording/journal.py): the live one.
                    self.recorder.adopt(dataclasses.replace(facts, channel_name=event.channel.name))
                else:
                    self.recorder.recover(facts, interrupted=False)
            journaled = {f.recording_id for f in self._pending_at_start}
            adopt_unjournaled(
                self.tracker, self.recorder, live, journaled, self.settings.asterisk.recordings_dir
            )
            self._pending_at_start = None
            if self.strays is not None:
                # After the adoptions: what is left in recordings_dir has no owner in this run.
                self._spawn(self.strays.run(playing), "strays")
        self.recorder.execute(self.tracker.reconcile(live, time.time(), restarted=restarted))
        if self.lean is not None:
            await self.lean.resubscribe()
        log.info(
            "reconciled with asterisk",
            channels=len(live),
            calls=self.tracker.call_count,
            asterisk_restarted=restarted,
        )

    async def _channels(self) -> list[ChannelEvent]:
        live, malformed = parse_channels(await self.ari.channels())
        metrics.PROTOCOL_ERRORS.labels(source="ari", kind="malformed_channel").inc(malformed)
        return live

    async def _playing(self) -> set[str]:
        return ari_playing(await self._channels())

    # --- lifecycle --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # An owned task dying is a bug; stop so systemd restarts us in a clean state
            # (Restart=on-failure: the exit code must say so, see ``failed``).
            log.error("task failed", task=task.get_name(), error=repr(task.exception()))
            self.failed = True
            self.stopping.set()

    async def _audit(self, entry: audit.Entry) -> None:
        """The audit row of a pause from the dialplan or of an automatic resume."""
        if self.store is None:
            raise StoreUnavailable("no database connection yet")
        await audit.write(self.store.pool, entry)

    async def startup(self) -> None:
        s = self.settings
        metrics.BUILD_INFO.info({"version": __version__})
        metrics.init_series(s.registers, s.retention_interval)
        metrics.watch_tracker(self.tracker)
        await self._serve(self._metrics_app(), s.metrics_listen)
        if s.api_listen is not None:
            # Its own small pool: a slow export or search never holds up writing rows.
            self._api_pool = await self._api_database()
            live = LiveCalls(self.tracker, self.pauses)
            await self._serve(build_api(self._api_pool, s, self.archive, live=live), s.api_listen)
        self.journal = await Journal.open(s.state_dir)
        # The node name of this host's rows, kept though the host be renamed (ops/node.py).
        await asyncio.to_thread(node.pin, s.state_dir, s.node)
        self._pending_at_start = await self.journal.pending()
        if self._pending_at_start:
            log.info("recordings left by the previous run", count=len(self._pending_at_start))
        self.store = await self._connect_store()
        if self.archive is not None:
            self.archiver = Archiver(self.store.pool, self.archive, s.asterisk.recordings_dir, self.journal)
        self.outbox = Outbox(
            self.journal,
            self.store.pool,
            archive=self.archiver is not None,
            on_delivered=self.archiver.wake if self.archiver is not None else lambda: None,
        )
        self.closes = CloseWatch.open()  # None off Linux: MixMonitor leaves a marker instead
        self.recorder = Recorder(
            self.ami,
            self.journal,
            self.outbox,
            s.registers,
            s.asterisk.recordings_dir,
            closes=FileClose(self.closes, timeout=s.file_wait_timeout),
            node=s.node,
            pauses=self.pauses,
        )
        self._spawn(self.outbox.run(), "outbox")
        self._spawn(self.ami.run(), "ami")
        self._spawn(self.ari.run(self.on_event, self.on_connect), "ari")
        if s.mode == "lean":
            self.lean = Lean(self.ari, self.tracker, self.recorder, dict(s.registers))
        if s.agi_listen is not None:
            # AGI mode, beside the event mode: the dialplan asks for recording and waits for it.
            self._spawn(AgiServer(s.agi_listen, self.tracker, self.recorder, self.lean).run(), "agi")
        if self.archiver is not None:
            self._spawn(self.archiver.run(), "archive")
        store = self.archive.store if self.archive is not None else None
        self.strays = StrayScan(
            Rules.of(s),
            self.journal,
            self.store.pool,
            self.recorder,
            self._playing,
        )
        self._spawn(self._retention(Sweeper(self.store.pool, s, store)), "retention")
        self._spawn(gauges.feed(self.settings, lambda: self.store, self.archive), "gauges")
        # What exists now (modules, config, clients) lives as long as the daemon: out of the
        # cyclic collector's full scans from here on (docs/performance.md#garbage-collection).
        # Before READY, so the one collection's pause (~70 ms) never holds up a call.
        gc.collect()
        gc.freeze()
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

    async def _retention(self, sweeper: Sweeper) -> None:
        """The sweep starts after the start-up scan of recordings_dir has given its files rows
        (recording/strays.py); an Asterisk that stays away holds it up one interval at most."""
        if self.strays is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.strays.first_pass.wait(), self.settings.retention_interval)
        await sweeper.run_forever()

    async def _connect_store(self) -> Store:
        def failed(exc: BaseException, retry_in: float) -> None:
            metrics.CONNECTION_UP.labels(connection="database").set(0)
            metrics.RECONNECTS.labels(connection="database").inc()
            log.warning("database unreachable; retrying", error=str(exc)[:200], retry_in=round(retry_in, 2))

        store = await self._until_connected(lambda: Store.connect(self.settings.database_dsn), failed)
        metrics.CONNECTION_UP.labels(connection="database").set(1)
        return store

    async def _until_connected(
        self, connect: Callable[[], Awaitable[T]], failed: Callable[[BaseException, float], None]
    ) -> T:
        """Retry ``connect`` through any outage; a stop signal meanwhile cancels startup."""
        backoff = Backoff(initial=0.5, maximum=10.0, stop=self.stopping)
        try:
            return await retry(connect, retry_on=(StoreUnavailable,), backoff=backoff, on_failure=failed)
        except Stopped:
            raise asyncio.CancelledError from None

    def _metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(metrics.REGISTRY))
        return app

    async def _api_database(self) -> DbPool:
        def failed(exc: BaseException, retry_in: float) -> None:
            log.warning(
                "database unreachable for the api; retrying",
                error=str(exc).partition(":")[0],
                retry_in=round(retry_in, 2),
            )

        return await self._until_connected(lambda: open_pool(self.settings.database_dsn), failed)

    async def _serve(self, app: web.Application, listen: tuple[str, int]) -> None:
        # access_log=None: the API's middleware logs each request once, without tokens.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, listen[0], listen[1]).start()

    async def main_loop(self) -> None:
        await self.stopping.wait()

    async def shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        if self.recorder is not None:
            log.info("draining recordings", active=self.recorder.active)
            left = await self.recorder.drain(self.settings.drain_timeout)
            if left:
                log.warning("recordings still running at exit; the next start adopts them", count=left)
        await self.pauses.close()
        if self.outbox is not None and not await self.outbox.flush(5.0):
            log.warning("rows left in the journal; written at the next start")
        if self.lean is not None:
            await self.lean.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        if self.archive is not None:
            await self.archive.store.close()
        if self.journal is not None:
            await self.journal.close()
        if self.closes is not None:
            self.closes.close()
        for runner in self._runners:
            await runner.cleanup()
        if self._api_pool is not None:
            await close_pool(self._api_pool)
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
