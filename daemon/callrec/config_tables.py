"""Reading callrec.toml's tables: typed values, secrets from files, and unknown keys refused,
each mistake one ``ConfigError`` line that names the key (config.py builds the settings)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration mistake, phrased as one line a user can act on."""


_DURATION = re.compile(r"^\s*([1-9][0-9]{0,6})\s+(second|minute|hour|day|week)s?\s*$")
_DURATION_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def duration(section: Section, name: str, default: str) -> float:
    text = section.get(name, str, default)
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(
            f'{section.key(name)}: {text!r} is not "<n> seconds|minutes|hours|days|weeks", e.g. "{default}"'
        )
    return int(m.group(1)) * _DURATION_SECONDS[m.group(2)] * 1.0


class Section:
    """Reads one TOML table, remembering which keys were used so the rest can be refused."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data, self.path, self.used = data, path, set[str]()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type[T], default: T | None = None) -> T:
        self.used.add(name)
        if name not in self.data:
            if default is None:
                raise ConfigError(f"{self.key(name)}: missing; add it to [{self.path}]")
            return default
        value = self.data[name]
        # bool is an int in Python; a port of `true` is still a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return value  # type: ignore[return-value]
            raise ConfigError(
                f"{self.key(name)}: expected {kind_name(kind)}, got {kind_name(type(value))} {value!r:.40}"
            )
        return value

    def secret(self, name: str) -> str:
        """A secret given inline or, better, as ``<name>_file`` (systemd LoadCredential)."""
        file_key = f"{name}_file"
        self.used.update({name, file_key})
        if name in self.data and file_key in self.data:
            raise ConfigError(f"{self.key(name)}: give either {name} or {file_key}, not both")
        if file_key in self.data:
            path = Path(self.get(file_key, str))
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise ConfigError(f"{self.key(file_key)}: cannot read {path}: {reason}") from None
            if not value:
                raise ConfigError(f"{self.key(file_key)}: {path} is empty")
            return value
        if name not in self.data:
            raise ConfigError(f"{self.key(name)}: missing; set {name} or {file_key} in [{self.path}]")
        return self.get(name, str)

    def table(self, name: str) -> Section:
        return Section(self.get(name, dict, {}), self.key(name))

    def refuse_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.key(unknown[0])}: unknown key; check the spelling"
                " (see docs/operations.md#configuration)"
            )


def kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "a table"}.get(
        kind, kind.__name__
    )


def listen(section: Section, name: str, default: str) -> tuple[str, int]:
    text = section.get(name, str, default)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'{section.key(name)}: expected "host:port", e.g. "127.0.0.1:9870", got {text!r}')
    return host.strip("[]"), int(port)


def positive(section: Section, name: str, default: float) -> float:
    value = float(section.get(name, float, default))
    if value <= 0:
        raise ConfigError(f"{section.key(name)}: must be a positive number of seconds")
    return value
