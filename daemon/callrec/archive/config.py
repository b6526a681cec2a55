"""``[archive]`` and ``[storage]`` of callrec.toml -> ``ArchiveSettings``, ``StorageSettings``
(docs/archive.md#configuration, docs/archive.md#stores)."""

from __future__ import annotations

import re
from pathlib import Path

from callrec.archive.settings import FORMATS, ArchiveSettings, StorageSettings
from callrec.config_tables import ConfigError, Section


def parse_archive(arc: Section, sto: Section) -> tuple[ArchiveSettings, StorageSettings]:
    fmt = arc.get("format", str, "opus")
    if fmt not in FORMATS:
        raise ConfigError(f"archive.format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    bitrate = arc.get("bitrate", int, 12000)
    if not 6000 <= bitrate <= 64000:
        raise ConfigError("archive.bitrate: expected bits per second from 6000 to 64000")
    complexity = arc.get("complexity", int, 3)
    if not 0 <= complexity <= 10:
        raise ConfigError("archive.complexity: expected 0 to 10 (libopus)")
    key_file = arc.get("key_file", str, "") or None
    retired = arc.get("retired_key_files", list, [])
    if not all(isinstance(p, str) and p for p in retired):
        raise ConfigError("archive.retired_key_files: expected a list of file paths")
    for name, path in [("key_file", key_file), *(("retired_key_files", p) for p in retired)]:
        if path is not None and not Path(path).is_absolute():
            raise ConfigError(f"archive.{name}: must be an absolute path")
    archive = ArchiveSettings(
        enabled=arc.get("enabled", bool, True),
        format=fmt,
        bitrate=bitrate,
        complexity=complexity,
        key_file=Path(key_file) if key_file else None,
        retired_key_files=tuple(Path(p) for p in retired),
    )
    arc.refuse_unknown()
    return archive, _storage(sto)


def _storage(sto: Section) -> StorageSettings:
    backend = sto.get("backend", str, "filesystem")
    path = Path(sto.get("path", str, "/var/lib/callrec/archive"))
    if not path.is_absolute():
        raise ConfigError("storage.path: must be an absolute path")
    if backend == "filesystem":
        sto.refuse_unknown()
        return StorageSettings("filesystem", path)
    if backend != "s3":
        raise ConfigError(f'storage.backend: expected "filesystem" or "s3", got {backend!r}')
    endpoint = sto.get("endpoint", str).rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError('storage.endpoint: expected an http(s) URL such as "https://s3.example.com"')
    bucket = sto.get("bucket", str)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError("storage.bucket: 3-63 lower-case letters, digits, '.' and '-'")
    prefix = sto.get("prefix", str, "")
    if prefix and (prefix.startswith("/") or ".." in prefix or not prefix.endswith("/")):
        raise ConfigError('storage.prefix: a relative folder ending in "/", e.g. "callrec/"')
    lock = sto.get("object_lock", str, "")
    if lock not in ("", "GOVERNANCE", "COMPLIANCE"):
        raise ConfigError('storage.object_lock: expected "", "GOVERNANCE" or "COMPLIANCE"')
    settings = StorageSettings(
        "s3",
        path,
        endpoint=endpoint,
        bucket=bucket,
        region=sto.get("region", str, "us-east-1"),
        prefix=prefix,
        access_key=sto.secret("access_key"),
        secret_key=sto.secret("secret_key"),
        object_lock=lock,  # type: ignore[arg-type]
    )
    sto.refuse_unknown()
    return settings
