"""A small company for the access tests: a supervisor tree, one recording per agent (real WAV
files), tokens for everyone, and the API app on a test server over real PostgreSQL.

    sue (supervisor) ── sam (supervisor, takes calls) ── alice, bob (agents)
                     └─ carol (agent)
    sid (supervisor) ── dave (agent)
    dana (dpo), adam (admin)
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiohttp.test_utils import TestClient, TestServer

from callrec.access import people
from callrec.archive.crypto import new_kek_file
from callrec.archive.reading import open_archive
from callrec.archive.settings import ArchiveSettings, StorageSettings
from callrec.config import AsteriskSettings, Register, Retention, Settings
from callrec.db import recordings
from callrec.http.api import build_api
from callrec.ops import logs
from callrec.privacy import mask_number, number_hmac
from callrec.recording.facts import Recording
from tests.harness.postgres import owner_of

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEY = b"a-test-key-of-32-bytes-----------"

# name -> (role, supervisor, agent_id)
PEOPLE: dict[str, tuple[people.Role, str | None, str | None]] = {
    "sue": ("supervisor", None, None),
    "sid": ("supervisor", None, None),
    "sam": ("supervisor", "sue", "sam-7"),
    "alice": ("agent", "sam", None),  # agent id defaults to the name
    "bob": ("agent", "sam", "bob"),
    "carol": ("agent", "sue", "carol"),
    "dave": ("agent", "sid", "dave"),
    "dana": ("dpo", None, None),
    "adam": ("admin", None, None),
}
# recording key -> agent_name as the dialplan set it
CALLS: dict[str, str | None] = {
    "alice": "alice",
    "bob": "bob",
    "carol": "carol",
    "dave": "dave",
    "sam": "sam-7",
    "nobody": None,  # no CALLREC_AGENT on the call
    "ghost": "ghost-agent",  # a value that no user carries
}
# Who hears which recording (R5): own, and a supervisor all direct and indirect subordinates'.
REACH: dict[str, set[str]] = {
    "alice": {"alice"},
    "bob": {"bob"},
    "carol": {"carol"},
    "dave": {"dave"},
    "sam": {"sam", "alice", "bob"},
    "sue": {"sam", "alice", "bob", "carol"},
    "sid": {"dave"},
    "dana": set(CALLS),
    "adam": set(),
}


async def as_owner(dsn: str, sql: str) -> None:
    """Run ``sql`` as the schema owner: what a test does to the schema itself (break it, or
    show that even the owner is refused)."""
    conn = await asyncpg.connect(owner_of(dsn))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def restored_logging(stream: io.StringIO | None = None) -> Iterator[None]:
    """``logs.configure`` is global (structlog and the root logger): put both back afterwards,
    so no later test writes to a stream pytest has closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if stream is not None:
        logs.configure("debug", stream)
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def settings(recordings_dir: Path, dsn: str, key: bytes | None = None) -> Settings:
    return Settings(
        asterisk=AsteriskSettings(
            ari_url="http://127.0.0.1:8088",
            ari_username="callrec",
            ari_password="x",
            ari_app="callrec",
            ami_host="127.0.0.1",
            ami_port=5038,
            ami_username="callrec",
            ami_secret="x",
            recordings_dir=recordings_dir,
        ),
        database_dsn=dsn,
        metrics_listen=("127.0.0.1", 9870),
        registers={
            "customer-service": Register(
                "customer-service",
                "inbound",
                Retention(6, "month"),
                {"": "Customer service", "fi": "Asiakaspalvelu", "sv": "Kundtjänst"},
            ),
            "telesales": Register("telesales", "outbound", Retention(1, "month"), {"": "Telesales"}),
        },
        drain_timeout=5,
        file_wait_timeout=5,
        log_level="info",
        node="test-node",
        number_hmac_key=key,
        archive=ArchiveSettings(key_file=_kek(recordings_dir.parent / "archive.key")),
        storage=StorageSettings(path=recordings_dir.parent / "archive"),
    )


def _kek(path: Path) -> Path:
    if not path.exists():
        new_kek_file(path)
    return path


def write_wav(path: Path, seconds: float = 1.0, seed: int = 0) -> tuple[int, str]:
    """A real 8 kHz mono WAV whose bytes differ per seed; returns size and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytes((i * 7 + seed * 13) % 256 for i in range(int(8000 * seconds) * 2))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


@dataclass
class World:
    pool: Any
    settings: Settings
    client: TestClient[Any, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    recs: dict[str, uuid.UUID] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def audit_rows(self) -> list[asyncpg.Record]:
        return list(await self.pool.fetch("SELECT * FROM audit_log ORDER BY id"))

    async def sign_in(self, who: str) -> str:
        """Sign in on the page as ``who``; the session cookie's value."""
        origin = {"Origin": str(self.client.make_url("")).rstrip("/")}
        data = {"token": self.tokens[who]}
        async with self.client.post("/signin", data=data, headers=origin, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            return r.cookies["callrec_session"].value

    def with_key(self, key: bytes | None) -> Settings:
        return replace(self.settings, number_hmac_key=key)


async def add_recording(
    pool: Any,
    recordings_dir: Path,
    *,
    agent: str | None,
    started_at: datetime = T0,
    seconds: float = 60,
    number: str | None = "+358 40 123 4567",
    key: bytes | None = None,
    seed: int = 0,
    register: str = "customer-service",
    agents: tuple[str, ...] = (),
) -> uuid.UUID:
    """``agents``: the call's agents list (a transfer's); by default only ``agent``."""
    rid = uuid.uuid4()
    rel = f"{started_at:%Y/%m/%d}/{rid}.wav"
    size, digest = write_wav(recordings_dir / rel, seconds=0.5, seed=seed)
    ended_at = started_at + timedelta(seconds=seconds)
    row = Recording(
        id=rid,
        call_id=f"{seed}.0",
        register_name=register,
        direction="inbound",
        started_at=started_at,
        ended_at=ended_at,
        duration_seconds=(ended_at - started_at).total_seconds(),
        service_number="0300",
        customer_number_masked=mask_number(number),
        customer_number_hmac=number_hmac(number, key),
        agent_name=agent,
        file_path=rel,
        file_size=size,
        sha256=digest,
        node="test-node",
        recovered=False,
        interrupted=False,
        agents=tuple(
            {"agent": a, "joined_at": started_at.isoformat(), "left_at": ended_at.isoformat()}
            for a in agents or ((agent,) if agent else ())
        ),
    )
    assert await recordings.insert(pool, row, "6 months")
    return rid


@asynccontextmanager
async def world(
    db_dsn: str, tmp_path: Path, *, key: bytes | None = None, **overrides: Any
) -> AsyncIterator[World]:
    """``overrides``: Settings fields to change (a limit, trusted proxies)."""
    recordings_dir = tmp_path / "recordings"
    recordings_dir.mkdir()
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
    try:
        for name, (role, sup, agent_id) in PEOPLE.items():
            await people.add_user(pool, name, role, supervisor=sup, agent_id=agent_id)
        s = replace(settings(recordings_dir, db_dsn, key), **overrides)
        server = TestServer(build_api(pool, s, open_archive(s)))
        client = TestClient(server)
        await client.start_server()
        try:
            w = World(pool, s, client)
            for name in PEOPLE:
                w.tokens[name] = await people.issue_token(pool, name)
            for i, (key_name, agent) in enumerate(CALLS.items()):
                w.recs[key_name] = await add_recording(
                    pool, recordings_dir, agent=agent, started_at=T0 + timedelta(hours=i), seed=i
                )
            yield w
        finally:
            await client.close()
    finally:
        await pool.close()
