"""Deleting the audio of recordings being destroyed: MixMonitor's WAV on this node, or the
archive object (whose data key went with the row, docs/archive.md#destruction-crypto-shredding).
Used by the sweep and by a single erasure alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from callrec.archive.store import ObjectStore, StoreError, object_name
from callrec.retention import files as spool
from callrec.retention.queries import Disposal

WAITING = "waiting for its node"
"""The row and key are gone; only the node that holds the file can delete it."""


async def delete_audio(
    root: Path,
    store: ObjectStore | None,
    batch: Sequence[Disposal],
    keep_from: date,
    reachable: Callable[[Disposal], bool],
    deleters: ThreadPoolExecutor | None = None,
) -> list[str]:
    """Per disposal: destroyed, missing, ``WAITING``, or why not. An archived recording's WAV
    is normally gone already (a crash can leave it, so it is deleted too); what counts for it
    is the object, whose data key went with the row (docs/archive.md#destruction)."""
    loop = asyncio.get_running_loop()
    mine = [i for i, d in enumerate(batch) if reachable(d)]
    outcomes = [WAITING] * len(batch)
    local = [i for i in mine if not batch[i].archived or store is None or not store.shared]
    if local:
        done = await loop.run_in_executor(
            deleters, spool.delete_files, root, [batch[i] for i in local], keep_from
        )
        for i, outcome in zip(local, done, strict=True):
            outcomes[i] = outcome
    archived = [i for i in mine if batch[i].archived]
    if not archived:
        return outcomes
    if store is None:
        for i in archived:
            outcomes[i] = "archived, but no archive store is configured"
        return outcomes
    names = [object_name(batch[i].recording_id) for i in archived]
    try:
        gone = await store.delete_many(names)
        error = "the store did not delete it"
    except StoreError as exc:
        gone, error = [False] * len(names), str(exc)[:200]
    for i, ok in zip(archived, gone, strict=True):
        outcomes[i] = spool.DESTROYED if ok else error
    return outcomes
