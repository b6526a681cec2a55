"""``[archive]`` and ``[storage]`` of callrec.toml, parsed by config.py (docs/archive.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Format = Literal["opus", "flac", "wav"]
FORMATS: tuple[Format, ...] = ("opus", "flac", "wav")
CONTENT_TYPES: dict[str, str] = {"opus": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav"}
EXTENSIONS: dict[str, str] = {"opus": ".ogg", "flac": ".flac", "wav": ".wav"}


@dataclass(frozen=True)
class ArchiveSettings:
    enabled: bool = True
    """Off: recordings stay as MixMonitor's WAV in recordings_dir (the behaviour before 0.2)."""
    format: Format = "opus"
    bitrate: int = 12000
    """Opus bits per second (bench/archive.py: 12 kbit/s gives PESQ-NB 4.3 on speech)."""
    complexity: int = 3
    """libopus 0-10; 3 costs a third of 10's CPU for no audible loss on 8 kHz speech."""
    key_file: Path | None = None
    """The key-encryption key (32 random bytes); unset: archives are not encrypted."""
    retired_key_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class StorageSettings:
    backend: Literal["filesystem", "s3"] = "filesystem"
    path: Path = Path("/var/lib/callrec/archive")
    """Where the filesystem backend keeps its objects."""
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    """Prepended to every object name, e.g. ``callrec/``."""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    object_lock: Literal["", "GOVERNANCE", "COMPLIANCE"] = ""
    """S3 Object Lock mode for new objects, retained until the row's retain_until; "" off."""
