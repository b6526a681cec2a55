"""callrec.toml -> frozen, typed settings.

Every mistake a user can make in the file becomes one ``ConfigError`` line that names the
key and says what to change; nothing here raises anything else.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from callrec.access.directory_settings import DirectorySettings, parse_ldap
from callrec.archive.config import parse_archive
from callrec.archive.settings import ArchiveSettings, StorageSettings
from callrec.config_tables import ConfigError as ConfigError  # the one error of loading a config
from callrec.config_tables import Section, duration, listen, positive
from callrec.ops.node import default_node
from callrec.web.settings import WebSettings, parse_web

DEFAULT_PATH = Path("/etc/callrec/callrec.toml")
_RETENTION = re.compile(r"^\s*([1-9][0-9]{0,4})\s+(day|week|month)s?\s*$")
# Register names become metric labels, log fields and dialplan values: keep them tame.
_REGISTER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class Retention:
    """How long a register keeps a recording: ``<n> days|weeks|months``."""

    count: int
    unit: Literal["day", "week", "month"]

    @property
    def interval(self) -> str:
        """As a PostgreSQL interval, which adds calendar months correctly (31 Jan + 1 month)."""
        return f"{self.count} {self.unit}s"

    @property
    def approx_days(self) -> int:
        """Upper bound in days, for comparisons between registers."""
        return self.count * {"day": 1, "week": 7, "month": 31}[self.unit]

    @classmethod
    def parse(cls, text: str) -> Retention:
        m = _RETENTION.match(text)
        if not m:
            raise ValueError(text)
        unit: Literal["day", "week", "month"] = m.group(2)  # type: ignore[assignment]
        return cls(int(m.group(1)), unit)


@dataclass(frozen=True)
class Register:
    """One register of the privacy notice: which calls, and how long they are kept."""

    name: str
    direction: Direction
    retention: Retention
    titles: Mapping[str, str] = field(default_factory=dict)
    """What the web page calls it, by language ("" for any language); the name if none."""

    def title(self, language: str) -> str:
        return self.titles.get(language) or self.titles.get("") or self.name


@dataclass(frozen=True)
class AsteriskSettings:
    """How to reach Asterisk: ARI for watching channels, AMI for MixMonitor."""

    ari_url: str
    ari_username: str
    ari_password: str = field(repr=False)
    ari_app: str
    ami_host: str
    ami_port: int
    ami_username: str
    ami_secret: str = field(repr=False)
    recordings_dir: Path
    """Where recordings go; the same path for Asterisk and for the daemon."""


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    asterisk: AsteriskSettings
    database_dsn: str = field(repr=False)
    metrics_listen: tuple[str, int]
    registers: Mapping[str, Register]
    drain_timeout: float
    """Seconds a SIGTERM waits for recordings in progress to get their rows."""
    file_wait_timeout: float
    """Seconds to wait, after a recorded channel is gone, for MixMonitor to close the file."""
    log_level: str
    node: str = ""
    """This callrec's name in the rows it writes (default: the host name)."""
    unclaimed_register: str | None = None
    """The register of a file found without journal entry or row whose name gives none
    (recording/strays.py); ``None``: such a file is left to the orphan sweep."""
    state_dir: Path = Path("/var/lib/callrec")
    """The daemon's own durable state (the outbox journal)."""
    disk_low_bytes: int = 1 << 30
    """Below this many free bytes in recordings_dir the daemon logs loudly."""
    retention_interval: float = 600.0
    """Seconds between two retention sweeps inside ``callrec run``."""
    orphan_grace: float = 7 * 86400.0
    """Seconds past the longest retention before an unreferenced audio file is destroyed."""
    retention_batch: int = 500
    """Rows per sweep transaction: keeps every transaction short."""
    api_listen: tuple[str, int] | None = ("127.0.0.1", 9871)
    """The access API and web page; ``None`` disables them."""
    max_pause: float = 300.0
    """Seconds a paused recording stays muted before it resumes by itself (a forgotten resume)."""
    number_hmac_key: bytes | None = field(default=None, repr=False)
    """Keyed HMAC of the full customer number for exact data-subject matches; never stored."""
    agi_listen: tuple[str, int] | None = None
    """FastAGI endpoint for AGI mode (recording starts before the call goes on); ``None``: off."""
    database_owner_dsn: str | None = field(default=None, repr=False)
    """The schema owner, for ``callrec migrate`` only (docs/privacy.md#two-database-roles)."""
    audit_log_retention: str = "2 years"
    """How long audit rows are kept, as a PostgreSQL interval."""
    dsar_searches_per_hour: int = 30
    """Data-subject searches one person may run in an hour (429 beyond)."""
    trusted_proxies: frozenset[str] = frozenset()
    """Peers whose X-Forwarded-For is believed (docs/api.md#behind-a-reverse-proxy)."""
    session_lifetime: float = 12 * 3600.0
    session_idle_timeout: float = 30 * 60.0
    refused_per_minute: int = 30
    """Refused (401) requests per client and minute that get a row each; 429 beyond."""
    mode: str = "event"
    """``event``: watch every channel (subscribeAll); ``lean``: the dialplan asks over AGI and
    only the recorded channels are watched (docs/dialplan.md#lean-mode)."""
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    web: WebSettings = field(default_factory=WebSettings)
    ldap: DirectorySettings | None = None
    """The directory of people with ``sign_in = directory`` (access/directory_settings.py)."""


_AUDIT_KEEP = re.compile(r"^[1-9][0-9]{0,3} (day|month|year)s?$")


def _parse(data: Mapping[str, Any]) -> Settings:
    top = Section(data, "")
    ast = top.table("asterisk")
    asterisk = AsteriskSettings(
        ari_url=ast.get("ari_url", str, "http://127.0.0.1:8088").rstrip("/"),
        ari_username=ast.get("ari_username", str),
        ari_password=ast.secret("ari_password"),
        ari_app=ast.get("ari_app", str, "callrec"),
        ami_host=ast.get("ami_host", str, "127.0.0.1"),
        ami_port=ast.get("ami_port", int, 5038),
        ami_username=ast.get("ami_username", str),
        ami_secret=ast.secret("ami_secret"),
        recordings_dir=Path(ast.get("recordings_dir", str)),
    )
    if not asterisk.recordings_dir.is_absolute():
        raise ConfigError("asterisk.recordings_dir: must be an absolute path (Asterisk and callrec share it)")
    if not _SAFE_PATH.match(str(asterisk.recordings_dir)):
        # MixMonitor joins its arguments with commas and runs its command through a shell.
        raise ConfigError("asterisk.recordings_dir: use only letters, digits and . _ - / in the path")
    if not asterisk.ari_url.startswith(("http://", "https://")):
        raise ConfigError('asterisk.ari_url: expected an http(s) URL such as "http://127.0.0.1:8088"')
    if not 0 < asterisk.ami_port < 65536:
        raise ConfigError("asterisk.ami_port: expected a TCP port between 1 and 65535")
    ast.refuse_unknown()

    db = top.table("database")
    dsn = db.get("dsn", str)
    if "password" in db.data or "password_file" in db.data:
        dsn = _with_password(dsn, db.secret("password"))
    owner_dsn: str | None = db.get("owner_dsn", str, "") or None
    if owner_dsn is not None and ("owner_password" in db.data or "owner_password_file" in db.data):
        owner_dsn = _with_password(owner_dsn, db.secret("owner_password"))
    db.refuse_unknown()

    met = top.table("metrics")
    metrics_listen = listen(met, "listen", "127.0.0.1:9870")
    met.refuse_unknown()

    dmn = top.table("daemon")
    drain_timeout = positive(dmn, "drain_timeout", 30.0)
    file_wait_timeout = positive(dmn, "file_wait_timeout", 30.0)
    max_pause = positive(dmn, "max_pause", 300.0)
    log_level = dmn.get("log_level", str, "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("daemon.log_level: expected one of debug, info, warning, error")
    state_dir = Path(dmn.get("state_dir", str, "/var/lib/callrec"))
    if not state_dir.is_absolute():
        raise ConfigError("daemon.state_dir: must be an absolute path")
    node = dmn.get("node", str, "")[:64] or default_node(state_dir)
    disk_low_bytes = dmn.get("disk_low_bytes", int, 1 << 30)
    if disk_low_bytes < 0:
        raise ConfigError("daemon.disk_low_bytes: must be zero or more")
    mode = dmn.get("mode", str, "event")
    if mode not in ("event", "lean"):
        raise ConfigError('daemon.mode: expected "event" or "lean"')
    unclaimed_register = dmn.get("unclaimed_register", str, "") or None
    dmn.refuse_unknown()

    ret = top.table("retention")
    retention_interval = duration(ret, "interval", "10 minutes")
    orphan_grace = duration(ret, "orphan_grace", "7 days")
    retention_batch = ret.get("batch_size", int, 500)
    if not 1 <= retention_batch <= 100_000:
        raise ConfigError("retention.batch_size: expected a whole number from 1 to 100000")
    audit_log_retention = ret.get("audit_log", str, "2 years").strip()
    if not _AUDIT_KEEP.match(audit_log_retention):
        raise ConfigError(f'retention.audit_log: {audit_log_retention!r} is not "<n> days|months|years"')
    ret.refuse_unknown()

    api = top.table("api")
    api_listen: tuple[str, int] | None = listen(api, "listen", "127.0.0.1:9871")
    if not api.get("enabled", bool, True):
        api_listen = None
    proxies = api.get("trusted_proxies", list, [])
    try:
        trusted_proxies = frozenset(str(ipaddress.ip_address(str(p))) for p in proxies)
    except ValueError as exc:
        raise ConfigError(f"api.trusted_proxies: {exc}") from None
    session_lifetime = duration(api, "session_lifetime", "12 hours")
    session_idle_timeout = duration(api, "session_idle_timeout", "30 minutes")
    refused_per_minute = api.get("refused_per_minute", int, 30)
    if refused_per_minute < 1:
        raise ConfigError("api.refused_per_minute: expected a whole number of 1 or more")
    api.refuse_unknown()

    agi = top.table("agi")
    # Off unless asked for: FastAGI has no authentication, so bind it to loopback.
    agi_listen = listen(agi, "listen", "127.0.0.1:4573") if "listen" in agi.data else None
    agi.refuse_unknown()
    if mode == "lean" and agi_listen is None:
        raise ConfigError('daemon.mode = "lean" needs [agi] listen: the dialplan asks over AGI')

    priv = top.table("privacy")
    number_hmac_key: bytes | None = None
    if "number_hmac_key_file" in priv.data:
        number_hmac_key = priv.secret("number_hmac_key").encode()
        if len(number_hmac_key) < 16:
            raise ConfigError("privacy.number_hmac_key_file: the key must be at least 16 characters")
    dsar_searches_per_hour = priv.get("dsar_searches_per_hour", int, 30)
    if not 1 <= dsar_searches_per_hour <= 10_000:
        raise ConfigError("privacy.dsar_searches_per_hour: expected a whole number from 1 to 10000")
    priv.refuse_unknown()

    archive, storage = parse_archive(top.table("archive"), top.table("storage"))
    web = parse_web(top.table("web"))
    ldap = parse_ldap(top.table("ldap"))

    regs = top.table("registers")
    registers: dict[str, Register] = {}
    for name in regs.data:
        if not _REGISTER_NAME.match(name):
            raise ConfigError(
                f"registers.{name!r}: a register name is lower-case letters, digits, '-' and '_' "
                "(it is also the value of CALLREC_REGISTER in the dialplan)"
            )
        reg = regs.table(name)
        direction = reg.get("direction", str)
        if direction not in ("inbound", "outbound"):
            raise ConfigError(f'{reg.key("direction")}: expected "inbound" or "outbound", got {direction!r}')
        text = reg.get("retention", str)
        try:
            retention = Retention.parse(text)
        except ValueError:
            raise ConfigError(
                f'{reg.key("retention")}: {text!r} is not "<n> days|weeks|months", e.g. "6 months"'
            ) from None
        titles = _titles(reg)
        reg.refuse_unknown()
        registers[name] = Register(name, direction, retention, titles)  # type: ignore[arg-type]
    if not registers:
        raise ConfigError(
            'registers: none configured; add e.g. [registers.customer-service] direction = "inbound"'
        )
    if unclaimed_register is not None and unclaimed_register not in registers:
        raise ConfigError(
            f"daemon.unclaimed_register: {unclaimed_register!r} is not a configured register"
            f" (one of {', '.join(sorted(registers))})"
        )
    top.refuse_unknown()
    return Settings(
        asterisk=asterisk,
        database_dsn=dsn,
        metrics_listen=metrics_listen,
        registers=registers,
        drain_timeout=drain_timeout,
        file_wait_timeout=file_wait_timeout,
        max_pause=max_pause,
        log_level=log_level,
        node=node,
        unclaimed_register=unclaimed_register,
        state_dir=state_dir,
        disk_low_bytes=disk_low_bytes,
        retention_interval=retention_interval,
        orphan_grace=orphan_grace,
        retention_batch=retention_batch,
        api_listen=api_listen,
        number_hmac_key=number_hmac_key,
        agi_listen=agi_listen,
        database_owner_dsn=owner_dsn,
        audit_log_retention=audit_log_retention,
        dsar_searches_per_hour=dsar_searches_per_hour,
        trusted_proxies=trusted_proxies,
        session_lifetime=session_lifetime,
        session_idle_timeout=session_idle_timeout,
        refused_per_minute=refused_per_minute,
        mode=mode,
        archive=archive,
        storage=storage,
        web=web,
        ldap=ldap,
    )


def _titles(reg: Section) -> dict[str, str]:
    """``title = "Customer service"``, or one per language: ``title = {en = "...", fi = "..."}``."""
    if "title" not in reg.data:
        return {}
    value = reg.data["title"]
    reg.used.add("title")
    titles = {"": value} if isinstance(value, str) else value
    if not isinstance(titles, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(v) <= 80 for k, v in titles.items()
    ):
        raise ConfigError(
            f'{reg.key("title")}: expected a text of 1-80 characters, or {{en = "...", fi = "..."}}'
        )
    return dict(titles)


def _with_password(dsn: str, password: str) -> str:
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def default_path() -> Path:
    return Path(os.environ.get("CALLREC_CONFIG", str(DEFAULT_PATH)))


def load(path: Path, reader: Callable[[Path], bytes] = Path.read_bytes) -> Settings:
    """Read and check the file; every failure is a ``ConfigError`` with one line of text."""
    try:
        raw = reader(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if not data:
        # The packaged /etc/callrec/callrec.toml until someone fills it in (docs/install.md).
        raise ConfigError(
            f"{path}: nothing is configured yet (every setting is commented out); fill in "
            "[asterisk], [database] and one [registers.NAME] (docs/operations.md#configuration)"
        )
    return _parse(data)
