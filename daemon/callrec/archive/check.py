"""The archive's lines in ``callrec check``: is it on, is it encrypted, can the store be
written, and what in the database says the archive needs an operator (docs/archive.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from callrec.archive import keys
from callrec.archive.reading import open_archive
from callrec.archive.store import StoreError
from callrec.config import ConfigError, Settings
from callrec.db.pool import Db
from callrec.ops.check_result import Result, error_text

NAMES = (
    "archive",
    "archive encryption",
    "archive store",
    "archive keys",
    "archive backlog",
    "archive integrity",
)


async def results(settings: Settings, db: Db | None) -> AsyncIterator[Result]:
    """The lines of ``NAMES``, always all of them; ``db``: ``None`` when the database or its
    schema is not usable (its own lines said why)."""
    try:
        archive = open_archive(settings)
    except ConfigError as exc:
        yield Result("ok", "archive", settings.archive.format)
        yield Result("FAIL", "archive encryption", str(exc))
        for name in NAMES[2:]:
            yield Result("skip", name, "needs a usable key file")
        return
    if archive is None:
        yield Result("warn", "archive", "off ([archive] enabled = false): recordings stay unencrypted WAV")
        for name in NAMES[1:]:
            yield Result("skip", name, "the archive is off")
        return
    a = archive.settings
    detail = f"{a.format}" + (f" at {a.bitrate} bit/s" if a.format == "opus" else "")
    yield Result("ok", "archive", detail)
    if archive.keys.current is None:
        yield Result(
            "warn",
            "archive encryption",
            "off: [archive] key_file is not set, so the archived audio is readable by anyone who can "
            "read the store or a backup of it; make a key with `callrec keys init`",
        )
    else:
        retired = f", {len(archive.keys.retired)} retired key(s)" if archive.keys.retired else ""
        yield Result(
            "ok", "archive encryption", f"on: AES-256-GCM, key id {archive.keys.current.key_id}{retired}"
        )
    try:
        await archive.store.probe()
    except (StoreError, OSError) as exc:
        yield Result(
            "FAIL",
            "archive store",
            f"{archive.store.name}: write/read/delete probe failed: {error_text(exc)}",
        )
    else:
        yield Result("ok", "archive store", f"{archive.store.name}: probe written, read back, deleted")
    if db is None:
        for name in NAMES[3:]:
            yield Result("skip", name, "needs the database with every migration applied")
        return
    ring = archive.keys
    unknown = {
        key_id: n
        for key_id, n in (await keys.key_counts(db)).items()
        if ring.current is None or key_id != ring.current.key_id
        if key_id not in ring.retired
    }
    if unknown:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items()))
        yield Result(
            "FAIL",
            "archive keys",
            f"data keys wrapped by a key-encryption key that is not configured: {listed}; "
            "add its file to [archive] retired_key_files, then run `callrec keys rotate`",
        )
    else:
        yield Result("ok", "archive keys", "every data key unwraps with a configured key")
    waiting = await db.fetchval(
        "SELECT count(*) FROM recordings WHERE node = $1 AND archived_at IS NULL"
        " AND ended_at < now() - interval '1 hour'",
        settings.node,
    )
    if waiting:
        yield Result(
            "warn",
            "archive backlog",
            f"{waiting} recording(s) of this node ended over an hour ago and are still WAV: "
            "made before the archive step, or its queue was lost; run `callrec archive --backfill`",
        )
    else:
        yield Result("ok", "archive backlog", "nothing older than an hour waits")
    corrupt = await db.fetchval("SELECT count(*) FROM recordings WHERE verify_error IS NOT NULL")
    if corrupt:
        yield Result(
            "FAIL",
            "archive integrity",
            f"{corrupt} archived recording(s) failed `callrec verify`: see verify_error in recordings",
        )
    else:
        last = await db.fetchval("SELECT max(verified_at) FROM recordings")
        when = f"last `callrec verify` {last:%Y-%m-%d %H:%M}" if last else "`callrec verify` never run"
        yield Result("ok", "archive integrity", f"no archived recording failed; {when}")
