"""The data keys in PostgreSQL and the key-encryption keys that wrap them (docs/archive.md#keys).

``[archive] key_file`` is the current key-encryption key: new data keys are wrapped by it.
``[archive] retired_key_files`` still unwrap the keys made before a rotation, until
``callrec keys rotate`` has re-wrapped every one of them; then the retired file can go.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from callrec.archive.crypto import CorruptObject, Kek, load_kek
from callrec.archive.settings import ArchiveSettings
from callrec.db.pool import Db

_ROTATE_BATCH = 500


class MissingKey(Exception):
    """An encrypted recording whose data key or key-encryption key is not available."""


@dataclass(frozen=True)
class KeyRing:
    current: Kek | None
    """``None``: encryption is off ([archive] key_file unset); new archives are not sealed."""
    retired: Mapping[str, Kek] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: ArchiveSettings) -> KeyRing:
        """Raises ``crypto.KeyFileError`` with a one-line message for a bad file."""
        current = load_kek(settings.key_file) if settings.key_file else None
        retired = {}
        for n, path in enumerate(settings.retired_key_files):
            kek = load_kek(path, f"archive.retired_key_files[{n}]")
            retired[kek.key_id] = kek
        return cls(current, retired)

    def by_id(self, key_id: str) -> Kek:
        if self.current is not None and self.current.key_id == key_id:
            return self.current
        kek = self.retired.get(key_id)
        if kek is None:
            raise MissingKey(f"key-encryption key {key_id} is neither key_file nor a retired_key_file")
        return kek


async def store_key(db: Db, recording_id: uuid.UUID, kek: Kek, data_key: bytes) -> None:
    await db.execute(
        "INSERT INTO recording_keys (recording_id, key_id, wrapped_key) VALUES ($1, $2, $3)"
        " ON CONFLICT (recording_id) DO UPDATE SET key_id = $2, wrapped_key = $3, created_at = now(),"
        " rotated_at = NULL",
        recording_id,
        kek.key_id,
        kek.wrap(data_key),
    )


async def data_key(db: Db, ring: KeyRing, recording_id: uuid.UUID) -> bytes:
    """The unwrapped data key of an encrypted recording; ``MissingKey`` when it is destroyed
    (erased, expired) or its key-encryption key is not configured."""
    row = await db.fetchrow(
        "SELECT key_id, wrapped_key FROM recording_keys WHERE recording_id = $1", recording_id
    )
    if row is None:
        raise MissingKey(f"recording {recording_id}: no data key (destroyed or never made)")
    try:
        return ring.by_id(row["key_id"]).unwrap(bytes(row["wrapped_key"]))
    except CorruptObject as exc:
        raise MissingKey(f"recording {recording_id}: {exc}") from None


@dataclass
class RotationReport:
    rewrapped: int = 0
    remaining: dict[str, int] = field(default_factory=dict)
    """Keys still wrapped by a key-encryption key that is not configured, per key id."""


async def rotate(db: Db, ring: KeyRing) -> RotationReport:
    """Re-wrap every data key under ``ring.current``, a batch per transaction; the audio is
    not touched. Resumable: a killed run leaves each key wrapped by one key or the other."""
    if ring.current is None:
        raise MissingKey("archive.key_file: not set; rotation needs the new key as key_file")
    current = ring.current
    report = RotationReport()
    for key_id, old in ring.retired.items():
        if key_id == current.key_id:
            continue
        while True:
            rows = await db.fetch(
                "SELECT recording_id, wrapped_key FROM recording_keys WHERE key_id = $1 LIMIT $2",
                key_id,
                _ROTATE_BATCH,
            )
            if not rows:
                break
            ids = [r["recording_id"] for r in rows]
            wrapped = [current.wrap(old.unwrap(bytes(r["wrapped_key"]))) for r in rows]
            # key_id in the WHERE: a key erased or rotated meanwhile is left as it is.
            await db.execute(
                "UPDATE recording_keys k SET key_id = $1, wrapped_key = w.wrapped, rotated_at = now()"
                " FROM unnest($2::uuid[], $3::bytea[]) AS w(id, wrapped)"
                " WHERE k.recording_id = w.id AND k.key_id = $4",
                current.key_id,
                ids,
                wrapped,
                key_id,
            )
            report.rewrapped += len(rows)
    for r in await db.fetch(
        "SELECT key_id, count(*) AS n FROM recording_keys WHERE key_id <> $1 GROUP BY key_id", current.key_id
    ):
        report.remaining[r["key_id"]] = r["n"]
    return report


async def key_counts(db: Db) -> dict[str, int]:
    rows = await db.fetch("SELECT key_id, count(*) AS n FROM recording_keys GROUP BY key_id")
    return {r["key_id"]: r["n"] for r in rows}
