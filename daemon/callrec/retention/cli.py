"""``callrec retention | hold | release | erase``: the retention operations from a shell.

Every command that touches a recording also writes an audit row, like the API does, so the
audit log shows who held, released or erased what, whichever way it was done.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from callrec.access import audit
from callrec.archive.reading import open_store
from callrec.archive.store import ObjectStore
from callrec.config import Settings
from callrec.db import cli as db_cli
from callrec.db.cli import refuse
from callrec.db.pool import DbPool
from callrec.retention.holds import RecordingNotFound, RecordingOnHold, erase, hold, release
from callrec.retention.sweep import PassReport, Sweeper


def format_report(report: PassReport) -> str:
    """Count and bytes per register, then erasures, orphans and the total: nothing else about
    a recording, so no number of any kind can reach the terminal."""
    head = "would destroy (dry run, nothing changed)" if report.dry_run else "destroyed"
    lines = [f"{head}:", f"  {'register':<24}{'recordings':>12}{'bytes':>16}"]
    rows = [*sorted(report.registers.items()), ("(erasures)", report.erasures), ("(orphans)", report.orphans)]
    for name, tally in [*rows, ("total", report.total)]:
        lines.append(f"  {name:<24}{tally.count:>12}{tally.bytes:>16}")
    extras = {
        "stale markers removed" if not report.dry_run else "stale markers": report.markers,
        "files already missing": report.missing_files,
        "legal holds ended": report.holds_lifted,
        "errors (see the log)": report.errors,
    }
    lines += [f"  {label}: {value}" for label, value in extras.items() if value]
    return "\n".join(lines)


def _by() -> str:
    # sudo keeps the real operator's name; the register records who acted.
    return "cli:" + (os.environ.get("SUDO_USER") or os.environ.get("USER") or "root")


def _outcome(exc: Exception) -> audit.Outcome:
    if isinstance(exc, RecordingNotFound):
        return "not_found"
    if isinstance(exc, (RecordingOnHold, ValueError)):
        return "invalid"
    return "error"


async def _audit(
    pool: DbPool, action: str, recording_id: uuid.UUID, outcome: audit.Outcome, **detail: object
) -> None:
    entry = replace(
        audit.cli_entry(action, detail), user_name=_by(), recording_id=recording_id, outcome=outcome
    )
    await audit.write(pool, entry)


def _until(text: str) -> datetime:
    """``2027-01-31`` holds through that day (local time); a time may be given, in ISO 8601."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2027-01-31") from None
    if len(text) == 10:
        value += timedelta(days=1)
    return value if value.tzinfo else value.astimezone()


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[ObjectStore | None]:
    """The archive store, to delete archived recordings from (no key is needed for that)."""
    store = open_store(settings) if settings.archive.enabled else None
    try:
        yield store
    finally:
        if store is not None:
            await store.close()


def _retention_command(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: DbPool) -> int:
        async with _store(settings) as store:
            report = await Sweeper(pool, settings, store).run_pass(dry_run=args.dry_run)
        if report.skipped:
            return refuse(f"another retention pass of node {settings.node!r} is running; nothing done")
        print(format_report(report))
        return refuse(f"{report.errors} file(s) could not be deleted; see the log") if report.errors else 0

    return db_cli.run(settings, work)


def _hold_command(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: DbPool) -> int:
        try:
            await hold(pool, args.id, reason=args.reason, by=_by(), until=args.until)
        except (RecordingNotFound, ValueError) as exc:
            await _audit(pool, "hold", args.id, _outcome(exc))
            return refuse(exc)
        await _audit(pool, "hold", args.id, "ok")
        print(
            f"recording {args.id} on legal hold until "
            + (args.until.isoformat() if args.until else "released")
        )
        return 0

    return db_cli.run(settings, work)


def _release_command(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: DbPool) -> int:
        try:
            await release(pool, args.id, by=_by())
        except RecordingNotFound as exc:
            await _audit(pool, "release", args.id, _outcome(exc))
            return refuse(exc)
        await _audit(pool, "release", args.id, "ok")
        print(f"recording {args.id} is not on hold; its retention applies from the next pass")
        return 0

    return db_cli.run(settings, work)


def _erase_command(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: DbPool) -> int:
        try:
            async with _store(settings) as store:
                size = await erase(pool, settings, args.id, reason=args.reason, by=_by(), store=store)
        except (RecordingNotFound, RecordingOnHold, ValueError, OSError) as exc:
            await _audit(pool, "erase", args.id, _outcome(exc))
            return refuse(exc)
        await _audit(pool, "erase", args.id, "ok", bytes=size)
        print(f"recording {args.id} erased ({size} bytes)")
        if not size:
            print("its file, if it is on another node, is deleted by that node's next retention pass")
        return 0

    return db_cli.run(settings, work)


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``callrec retention | hold | release | erase``; cli.parser() calls this."""

    def command(
        name: str, help: str, handler: Callable[[Settings, argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(handler=handler)
        return cmd

    def recording_id(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("id", type=uuid.UUID, metavar="ID", help="the recording's id (a uuid)")

    cmd = command(
        "retention", "Run one retention pass now; print what it destroyed per register.", _retention_command
    )
    cmd.add_argument("--dry-run", action="store_true", help="print what a pass would destroy; change nothing")
    cmd = command("hold", "Keep a recording past its retention (restriction, police case).", _hold_command)
    recording_id(cmd)
    cmd.add_argument("--reason", required=True, help="why, e.g. a case reference (stored and logged)")
    cmd.add_argument("--until", type=_until, metavar="DATE", help="end of the hold (default: until released)")
    cmd = command("release", "Lift a legal hold; retention applies again.", _release_command)
    recording_id(cmd)
    cmd = command("erase", "Destroy one recording now (GDPR Art. 17); refused while on hold.", _erase_command)
    recording_id(cmd)
    cmd.add_argument("--reason", required=True, help="why, e.g. the request's reference (kept in the log)")
