"""``callrec keys init | rotate``, ``callrec archive --backfill`` and ``callrec verify``
(docs/archive.md#commands)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from callrec.archive import keys, reading
from callrec.archive.crypto import CorruptObject, new_kek_file
from callrec.archive.pipeline import Archiver, Outcome, Unavailable
from callrec.archive.store import StoreError
from callrec.config import ConfigError, Settings
from callrec.db import cli as db_cli
from callrec.db.pool import DbPool
from callrec.ops import metrics

if TYPE_CHECKING:
    from callrec.cli import SubParsers

EXIT_CONFIG = 2


def _keys_init(settings: Settings, args: argparse.Namespace) -> int:
    try:
        kek = new_kek_file(args.path)
    except FileExistsError:
        return db_cli.refuse(f"{args.path} exists; a key file is never overwritten (it may be in use)")
    except OSError as exc:
        return db_cli.refuse(f"{args.path}: {exc.strerror or exc}")
    print(f"wrote a new key-encryption key to {args.path} (key id {kek.key_id}, mode 0600)")
    print("keep a copy where backups of the database are not: docs/archive.md#keys")
    return 0


def _archive_for(settings: Settings) -> reading.Archive | None:
    """The configured archive, or ``None`` after printing why not (exit code 2: the config)."""
    try:
        archive = reading.open_archive(settings)
    except ConfigError as exc:
        print(f"callrec: config: {exc}", file=sys.stderr)
        return None
    if archive is None:
        print("callrec: config: archive.enabled is false: nothing is archived", file=sys.stderr)
    return archive


def _keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    archive = _archive_for(settings)
    if archive is None:
        return EXIT_CONFIG

    async def work(pool: DbPool) -> int:
        report = await keys.rotate(pool, archive.keys)
        print(f"re-wrapped {report.rewrapped} data key(s) under the current key_file")
        for key_id, n in sorted(report.remaining.items()):
            print(f"still wrapped by {key_id}: {n} (add its file to archive.retired_key_files)")
        return 1 if report.remaining else 0

    return db_cli.run(settings, work, refusals=(keys.MissingKey, CorruptObject))


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    """Archive this node's rows still pointing at a WAV, oldest first. Resumable: the state is
    the rows themselves (archived_at), so a killed run goes on where it stopped."""
    archive = _archive_for(settings)
    if archive is None:
        return EXIT_CONFIG

    async def work(pool: DbPool) -> int:
        archiver = Archiver(pool, archive, settings.asterisk.recordings_dir)
        total = await pool.fetchval(
            "SELECT count(*) FROM recordings WHERE node = $1 AND archived_at IS NULL", settings.node
        )
        print(f"{total} recording(s) of node {settings.node!r} to archive", flush=True)
        done = failed = 0
        after: tuple[object, uuid.UUID] = ("-infinity", uuid.UUID(int=0))
        started = time.monotonic()
        try:
            while rows := await pool.fetch(
                "SELECT id, ended_at FROM recordings WHERE node = $1 AND archived_at IS NULL"
                " AND (ended_at, id) > ($2::text::timestamptz, $3) ORDER BY ended_at, id LIMIT 200",
                settings.node,
                str(after[0]),
                after[1],
            ):
                for r in rows:
                    after = (r["ended_at"].isoformat(), r["id"])
                    try:
                        outcome = await archiver.archive_one(r["id"])
                    except Unavailable as exc:
                        print(f"callrec: stopped: {exc}; run again to resume", file=sys.stderr)
                        return db_cli.EXIT_UNAVAILABLE
                    failed += outcome is Outcome.FAILED
                    done += outcome in (Outcome.ARCHIVED, Outcome.ALREADY)
                    if (done + failed) % 100 == 0:
                        rate = done / max(time.monotonic() - started, 1e-9)
                        print(f"{done}/{total} archived, {failed} failed, {rate:.1f}/s", flush=True)
        finally:
            archiver.close()
        print(f"{done}/{total} archived, {failed} failed (see the log for why)")
        return 1 if failed else 0

    return db_cli.run(settings, work, command_timeout=None)


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    """Re-read every archived recording (or those ended since ``--since``): size, every tag and
    the sha256; each result is written to the row (verified_at, verify_error)."""
    archive = _archive_for(settings)
    if archive is None:
        return EXIT_CONFIG

    async def work(pool: DbPool) -> int:
        since = args.since or datetime.fromtimestamp(0).astimezone()
        checked = bad = 0
        last = uuid.UUID(int=0)
        while True:
            rows = await pool.fetch(
                "SELECT id, file_size, sha256, encrypted FROM recordings"
                " WHERE archived_at IS NOT NULL AND ended_at >= $1 AND id > $2 ORDER BY id LIMIT 200",
                since,
                last,
            )
            if not rows:
                break
            for r in rows:
                last = r["id"]
                error = await _check_one(pool, archive, r["id"], r["file_size"], r["sha256"], r["encrypted"])
                checked += 1
                await pool.execute(
                    "UPDATE recordings SET verified_at = now(), verify_error = $2 WHERE id = $1",
                    r["id"],
                    error,
                )
                if error is not None:
                    bad += 1
                    metrics.ARCHIVE_CORRUPT.labels(where="verify").inc()
                    print(f"recording {r['id']}: {error}")
        print(f"verified {checked} archived recording(s): {bad} failed")
        return 1 if bad else 0

    return db_cli.run(settings, work, command_timeout=None)


async def _check_one(
    pool: DbPool, archive: reading.Archive, rid: uuid.UUID, size: int, sha256: str, encrypted: bool
) -> str | None:
    try:
        key = await keys.data_key(pool, archive.keys, rid) if encrypted else None
        await reading.verify(archive.store, rid, key, size, sha256)
    except (CorruptObject, keys.MissingKey) as exc:
        return str(exc)[:200]
    except FileNotFoundError:
        return "the archive object is missing"
    except StoreError as exc:
        return f"store: {exc}"[:200]
    return None


def _since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an ISO date or time, e.g. 2026-11-01") from None
    return value if value.tzinfo else value.astimezone()


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    k = sub.add_parser("keys", help="Key-encryption keys of the archive.", description="Archive keys.")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = ksub.add_parser(
        "init", help="Write a new random key-encryption key (32 bytes, mode 0600).", parents=[common]
    )
    init.add_argument("path", type=Path)
    init.set_defaults(handler=_keys_init)
    rot = ksub.add_parser(
        "rotate",
        help="Re-wrap every data key under archive.key_file (retired keys unwrap the old ones).",
        parents=[common],
    )
    rot.set_defaults(handler=_keys_rotate)
    a = sub.add_parser("archive", help="Archive recordings made before the archive step.", parents=[common])
    a.add_argument("--backfill", action="store_true", required=True, help="archive this node's WAV rows")
    a.set_defaults(handler=_backfill)
    v = sub.add_parser(
        "verify", help="Re-read archived recordings and check their tags and sha256.", parents=[common]
    )
    v.add_argument("--since", type=_since, help="only recordings that ended at or after this time")
    v.set_defaults(handler=_verify)
