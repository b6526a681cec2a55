"""Slow-changing gauges and the systemd watchdog: the recordings folder's free space, whether
the database and the archive store answer (docs/operations.md#metrics). Fed from the event
loop itself, so a stuck loop stops feeding the watchdog."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from callrec.archive.reading import Archive
from callrec.archive.store import StoreError
from callrec.config import Settings
from callrec.db.pool import Store, StoreUnavailable
from callrec.ops import metrics, sdnotify
from callrec.ops.disk import free_bytes

log = structlog.get_logger("callrec.app")


async def feed(settings: Settings, store: Callable[[], Store | None], archive: Archive | None) -> None:
    """Forever, every watchdog interval; ``store``: the database once connected."""
    rec_dir = settings.asterisk.recordings_dir
    while True:
        try:
            free = await asyncio.to_thread(free_bytes, rec_dir)
            metrics.RECORDINGS_DIR_FREE_BYTES.set(free)
            low = free < settings.disk_low_bytes
            metrics.DISK_LOW.set(int(low))
            if low:
                # Recording goes on (a call may be needed as evidence); once the disk is
                # full MixMonitor writes nothing, and those calls are counted as no_file.
                log.error(
                    "recordings_dir is low on space",
                    free_bytes=free,
                    threshold_bytes=settings.disk_low_bytes,
                )
        except OSError as exc:
            log.warning("cannot stat recordings_dir", error=str(exc)[:200])
        db = store()
        if db is not None:
            try:
                await asyncio.wait_for(db.ping(), 5)
                metrics.CONNECTION_UP.labels(connection="database").set(1)
            except (StoreUnavailable, TimeoutError):
                metrics.CONNECTION_UP.labels(connection="database").set(0)
        if archive is not None:
            try:
                await asyncio.wait_for(archive.store.ping(), 5)
                metrics.CONNECTION_UP.labels(connection="store").set(1)
            except (StoreError, OSError, TimeoutError) as exc:
                metrics.CONNECTION_UP.labels(connection="store").set(0)
                log.warning("archive store unreachable", store=archive.store.name, error=str(exc)[:200])
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(sdnotify.watchdog_interval(default=10.0))
