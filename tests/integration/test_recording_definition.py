"""The one definition of a recording (recording/facts.py) agrees with the real table, the
insert and read derived from it, the API's JSON and its OpenAPI schema."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from callrec.db import recordings
from callrec.recording.facts import COLUMNS, AgentStint, Parties, Recording, StartRecording, json_schema

# Columns of `recordings` that no Recording field carries: the legal hold's explanation (read
# through retention/holds), the row's own creation time, and `callrec verify`'s last result.
NOT_IN_THE_RECORD = {
    *("hold_reason", "hold_by", "hold_at", "hold_until", "created_at"),
    *("verified_at", "verify_error"),
}


def a_recording(n: int = 1) -> Recording:
    start = StartRecording(
        recording_id=uuid.UUID(int=n),
        call_id=f"L{n}",
        register="customer-service",
        direction="inbound",
        channel_id="c",
        channel_name="PJSIP/trunk-1",
        file_path=f"2026/12/01/{uuid.UUID(int=n)}.wav",
        answered_at=1_764_590_000.0,
    )
    return Recording.finished(
        start,
        started_at=1_764_590_000.25,
        ended_at=1_764_590_042.5,
        file_size=123,
        sha256="ab" * 32,
        node="pbx1",
        recovered=False,
        interrupted=True,
        parties=Parties(
            "0300",
            "+358401234***",
            "cd" * 32,
            "alice",
            # alice answered before MixMonitor ran and transferred to bob, who stayed to the end.
            (AgentStint("alice", 1_764_590_000.0, 1_764_590_010.0), AgentStint("bob", 1_764_590_010.0)),
        ),
    )


@pytest.fixture
async def pool(db_dsn: str) -> asyncpg.Pool:
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    yield p
    await p.close()


async def test_every_field_is_a_column_and_every_column_a_field(pool: asyncpg.Pool) -> None:
    table = {
        r["column_name"]
        for r in await pool.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'recordings'"
        )
    }
    own = {name for name, c in COLUMNS.items() if c.select is None or c.select.startswith("r.")}
    assert own <= table
    assert table - own == NOT_IN_THE_RECORD


async def test_a_row_written_reads_back_whole(pool: asyncpg.Pool) -> None:
    row = a_recording()
    assert await recordings.insert(pool, row, "6 months") is True
    assert await recordings.insert(pool, row, "6 months") is False  # a replay is a no-op
    record = await pool.fetchrow(recordings.SELECT + " WHERE r.id = $1", row.id)
    got = recordings.from_record(record)
    assert got.duration_seconds == 42.25
    assert got.retain_until == await pool.fetchval(
        "SELECT $1::timestamptz + interval '6 months'", row.ended_at
    )
    written = {name for name, c in COLUMNS.items() if c.written}
    assert {n: getattr(got, n) for n in written} == {n: getattr(row, n) for n in written}
    assert (got.legal_hold, got.agent_user) == (False, None)


def test_the_json_is_what_the_schema_describes() -> None:
    row = a_recording()
    props = json_schema()["properties"]
    full = row.to_json("full", audio=True)
    assert set(full) == set(props)
    operational = row.to_json("operational", audio=False)
    assert set(operational) < set(full)
    hidden = set(full) - set(operational)
    assert hidden == {
        "customer_number_masked",
        "agent",
        "agents",
        "agent_user",
        "agent_display_name",
        "audio_url",
    }
    # The HMAC and the call id never leave the server.
    assert "customer_number_hmac" not in full and "call_id" not in full
    assert not any("cdcd" in str(v) for v in full.values())


async def test_each_schema_type_matches_the_json_value_of_a_stored_row(pool: asyncpg.Pool) -> None:
    kinds = {
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
        "null": type(None),
        "array": (list, tuple),
    }
    await recordings.insert(pool, a_recording(), "1 month")
    row = recordings.from_record(await pool.fetchrow(recordings.SELECT))
    full = row.to_json("full", audio=True)
    for key, schema in json_schema()["properties"].items():
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        value = full[key]
        if schema.get("format") in ("uuid", "date-time") and value is not None:
            continue  # encoded to strings by orjson on the wire
        assert any(isinstance(value, kinds[t]) for t in types), (key, value, types)
        if "items" in schema:
            for item in value:
                assert set(item) == set(schema["items"]["properties"]), (key, item)


def test_agents_are_clamped_to_the_recording() -> None:
    alice, bob = a_recording().agents
    assert alice == {
        "agent": "alice",
        "joined_at": "2025-12-01T11:53:20.250000+00:00",  # answered before MixMonitor started
        "left_at": "2025-12-01T11:53:30+00:00",
    }
    assert bob["joined_at"] == alice["left_at"] and bob["left_at"] == "2025-12-01T11:54:02.500000+00:00"
