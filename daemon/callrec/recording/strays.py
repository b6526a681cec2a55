"""Recordings in ``recordings_dir`` that no journal entry and no row know: a ``recovered`` row
each, written from the file at start (docs/architecture.md#files-without-a-journal-entry-or-row).

The journal covers every recording callrec starts, and MIXMONITOR_FILENAME covers the few
milliseconds of event mode in which MixMonitor runs before its journal entry is written. What
is left: that window with a call that also ended before the next start, a lost or restored
``state_dir``, an Asterisk restart that took the channel and its variables. Then only the file
is left, and its name says whose it is: ``<uuid>.<register>.<node>.wav`` (recording/layout.py).

Rules, in this order (tests/unit/test_strays.py, tests/integration/test_strays.py,
tests/e2e/test_unjournaled.py):

* Only this node's files: a name that carries another node's tag is that node's to recover
  (several PBXs on shared storage, docs/retention.md#several-nodes).
* Only files the orphan sweep will not take: written after the longest retention plus
  ``orphan_grace`` less one day. Older files are the sweep's; the day between keeps the two
  from ever taking the same file, and the daemon's sweep starts after the first scan.
* Known: an entry of the journal (pending, outbox, rejected, archive), a recording of this run,
  a row, or a disposal (pending or logged: an erased recording never comes back).
* Live: the file of a channel that is up (its MIXMONITOR_FILENAME), or written less than
  ``file_wait_timeout`` ago (MixMonitor may still be closing it). Looked at again later.
* The register: the one its name gives, if configured; else ``[daemon] unclaimed_register``;
  else none, and the file is left alone (counted ``unclaimed``, logged once) for the orphan
  sweep: choosing a register decides who may hear the call, so it is never guessed.

What the file cannot tell is NULL: call id, service number, customer, agent. ``started_at`` is
the file's last write less the length of its audio.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import asyncpg
import structlog

from callrec import wav
from callrec.asterisk.ari_events import ChannelEvent
from callrec.config import Register, Settings
from callrec.db.pool import Db, StoreUnavailable
from callrec.ops import metrics
from callrec.recording.facts import StartRecording
from callrec.recording.layout import Named, named_by_callrec, node_tag, parse
from callrec.recording.recorder import Recorder
from callrec.recording.tracker import CallTracker
from callrec.retention.files import day_dirs, orphan_age

log = structlog.get_logger("callrec.strays")

SWEEP_MARGIN = 86400.0
"""Files this close to the orphan sweep's cutoff are left to the sweep (half the orphan age
when that is under two days)."""


@dataclass(frozen=True, slots=True)
class Found:
    named: Named
    size: int
    mtime: float


def find(root: Path, since: float, tag: str) -> list[Found]:
    """Audio files callrec named for this node (or for none), last written at ``since`` or
    later (runs in a worker thread)."""
    first = datetime.fromtimestamp(since, UTC).date() - timedelta(days=1)  # a call over midnight
    last = datetime.now(UTC).date() + timedelta(days=1)
    found: list[Found] = []
    for rel in day_dirs(root, first, last):
        try:
            it = os.scandir(root / rel)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                named = parse(f"{rel}/{entry.name}")
                if named is None or named.node not in (None, tag):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mtime >= since:
                    found.append(Found(named, st.st_size, st.st_mtime))
    return found


def restat(root: Path, files: Iterable[Found]) -> list[Found]:
    """``files`` as they are now; those gone or no longer regular files are left out."""
    now: list[Found] = []
    for f in files:
        try:
            st = os.lstat(root / f.named.path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            now.append(Found(f.named, st.st_size, st.st_mtime))
    return now


def audio_seconds(path: Path) -> float:
    """The length of the WAV's audio (0 for a file that is not one)."""
    return wav.seconds_of(path) or 0.0


_BATCH = 10_000
"""Files looked up in PostgreSQL per statement (a folder of WAVs kept unarchived is large)."""

# Known to PostgreSQL: a row (by id or path), a disposal begun, or one done.
_KNOWN = """
SELECT c.id FROM unnest($1::uuid[], $2::text[]) AS c(id, path)
WHERE EXISTS (SELECT 1 FROM recordings r WHERE r.id = c.id OR r.file_path = c.path)
   OR EXISTS (SELECT 1 FROM disposal_pending p WHERE p.recording_id = c.id OR p.file_path = c.path)
   OR EXISTS (SELECT 1 FROM disposal_log l WHERE l.recording_id = c.id)
"""


class JournalIds(Protocol):
    async def known_ids(self) -> set[uuid.UUID]: ...


class Recovering(Protocol):
    def state_of(self, recording_id: uuid.UUID) -> object | None: ...
    def recover(self, facts: StartRecording, *, interrupted: bool) -> None: ...


@dataclass(frozen=True)
class Rules:
    root: Path
    node: str
    registers: Mapping[str, Register]
    unclaimed_register: str | None
    window: float
    """Seconds back from now that the scan looks (the orphan sweep has what is older)."""
    quiet: float
    """A file written less than this long ago may still be open."""

    @classmethod
    def of(cls, s: Settings) -> Rules:
        """Looks back to a day short of the orphan sweep's cutoff; quiet for as long as
        MixMonitor may take to close a file after its call (``file_wait_timeout``)."""
        days = (r.retention.approx_days for r in s.registers.values())
        return cls(
            s.asterisk.recordings_dir,
            s.node,
            s.registers,
            s.unclaimed_register,
            window=(age := orphan_age(days, s.orphan_grace)) - min(SWEEP_MARGIN, age / 2),
            quiet=s.file_wait_timeout,
        )

    def register_of(self, named: Named) -> Register | None:
        if named.register is not None and named.register in self.registers:
            return self.registers[named.register]
        return self.registers.get(self.unclaimed_register or "")


class StrayScan:
    """``run()`` once, at the first connect to Asterisk (the channels are known then)."""

    def __init__(
        self,
        rules: Rules,
        journal: JournalIds,
        db: Db,
        recorder: Recovering,
        playing: Callable[[], Awaitable[set[str]]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._journal = journal
        self._db = db
        self._recorder = recorder
        self._playing = playing
        self._clock = clock
        self._unclaimed: set[uuid.UUID] = set()
        self._passes = 0
        self.first_pass = asyncio.Event()
        """Set once the first pass is over (the retention sweep waits for it)."""

    async def run(self, playing: set[str]) -> None:
        """A pass over recordings_dir now; the files that were live (or could not be looked up)
        are looked at again, alone, every ``quiet`` seconds until none is left."""
        rules = self._rules
        try:
            since = self._clock() - rules.window
            found = await asyncio.to_thread(find, rules.root, since, node_tag(rules.node))
            waiting = await self.scan(playing, found)
        except OSError as exc:  # recordings_dir unreadable: recording itself says so loudly
            log.error("cannot read recordings_dir for the file scan; next start", error=str(exc)[:200])
            return
        finally:
            self.first_pass.set()
        while waiting:
            await asyncio.sleep(rules.quiet)
            try:
                playing = await self._playing()
            except Exception as exc:  # Asterisk away: its channels are not known, try later
                log.warning("cannot list channels for the file scan; retrying", error=str(exc)[:200])
                continue
            waiting = await self.scan(playing, await asyncio.to_thread(restat, rules.root, waiting))

    async def scan(self, playing: set[str], found: list[Found]) -> list[Found]:
        """One pass over ``found``; returns the files to look at again."""
        rules, now = self._rules, self._clock()
        if not found:
            return []
        try:
            known = await self._journal.known_ids()
            for i in range(0, len(found), _BATCH):
                batch = found[i : i + _BATCH]
                rows = await self._db.fetch(
                    _KNOWN, [f.named.recording_id for f in batch], [f.named.path for f in batch]
                )
                known |= {r["id"] for r in rows}
        except (StoreUnavailable, OSError, asyncpg.PostgresError) as exc:
            log.warning("file scan could not read what is known; retrying", error=str(exc)[:200])
            return found
        live: list[Found] = []
        recovered = unclaimed = 0
        for f in self._unknown(found, known):
            if str(rules.root / f.named.path) in playing or f.mtime > now - rules.quiet:
                live.append(f)
                continue
            register = rules.register_of(f.named)
            if register is None:
                self._leave(f)
                unclaimed += 1
                continue
            seconds = await asyncio.to_thread(audio_seconds, rules.root / f.named.path)
            if self._recorder.state_of(f.named.recording_id) is not None:
                continue  # taken by this run meanwhile
            self._recorder.recover(_facts(f, register, seconds), interrupted=False)
            recovered += 1
            metrics.STRAY_FILES.labels(outcome="recovered").inc()
            log.info(
                "recording recovered from a file without journal entry or row",
                recording_id=str(f.named.recording_id),
                register=register.name,
                file=f.named.path,
            )
        self._passes += 1
        if self._passes == 1 or recovered or unclaimed:
            log.info(
                "files without journal entry or row looked at",
                files=len(found),
                recovered=recovered,
                live=len(live),
                unclaimed=unclaimed,
            )
        return live

    def _unknown(self, found: Iterable[Found], known: set[uuid.UUID]) -> Iterable[Found]:
        for f in found:
            rid = f.named.recording_id
            if rid not in known and rid not in self._unclaimed and self._recorder.state_of(rid) is None:
                yield f

    def _leave(self, f: Found) -> None:
        self._unclaimed.add(f.named.recording_id)
        metrics.STRAY_FILES.labels(outcome="unclaimed").inc()
        log.warning(
            "file without journal entry or row names no configured register; left to the orphan"
            " sweep (set [daemon] unclaimed_register to recover such files)",
            recording_id=str(f.named.recording_id),
            named_register=f.named.register,
            file=f.named.path,
        )


def _facts(f: Found, register: Register, seconds: float) -> StartRecording:
    return StartRecording(
        recording_id=f.named.recording_id,
        call_id=None,
        register=register.name,
        direction=register.direction,
        channel_id="",
        channel_name="",
        file_path=f.named.path,
        answered_at=f.mtime - seconds,
    )


def adopt_unjournaled(
    tracker: CallTracker,
    recorder: Recorder,
    live: list[ChannelEvent],
    journaled: set[uuid.UUID],
    recordings_dir: Path,
) -> None:
    """The other recordings no journal entry knows: live ones. Event mode sends MixMonitor
    without waiting for the journal's fsync, so a kill -9 in between leaves a live recording
    the journal never saw. MixMonitor's own MIXMONITOR_FILENAME names it
    (docs/architecture.md#adoption-after-a-crash)."""
    for event in live:
        file = event.channel.mixmonitor_file
        found = named_by_callrec(file, recordings_dir) if file else None
        if found is None or found[0] in journaled:
            continue
        facts = tracker.adopt_unjournaled(event, found[0], found[1], time.time())
        if facts is not None:
            log.info("recording found on its channel without a journal entry", call_id=facts.call_id)
            recorder.adopt(facts)
