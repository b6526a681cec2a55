"""The archive step's costs and quality on real speech (Asterisk's own prompts), as JSON lines.

Issue targets: >= 10x smaller than the WAV, PESQ-NB >= 4.0, >= 300x real time on one core for
transcode + encrypt + write, a Range seek into a 1-hour recording p99 <= 20 ms, and memory flat
in call length (a 2-hour call must not be held).

Phases that are compared (Opus complexity 3 and 0, FLAC, WAV) alternate within one run, each
repeated ``--rounds`` times; the figures are medians, and the spread (max - min) is printed
beside them as the noise. The seek goes through the real path: PostgreSQL for the wrapped key
(a throwaway cluster), the filesystem store, the chunk decryption (archive/reading.py).

    .venv/bin/python bench/archive.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from _common import REPO, percentile, say
from tests.harness.audio import decoded_pcm, speech_pcm, wav_header
from tests.harness.postgres import Cluster
from tests.harness.seaweed import Seaweed

from callrec import config
from callrec.archive import crypto, keys, reading
from callrec.archive.pipeline import build
from callrec.archive.settings import ArchiveSettings
from callrec.archive.store import object_name
from callrec.db import recordings
from callrec.db.migrations import migrate
from callrec.retention.sweep import Sweeper

WAV_BYTES_PER_MINUTE = 8000 * 2 * 60


def emit(**fields: object) -> None:
    print(json.dumps({"bench": "archive", **fields}), flush=True)


def make_wav(path: Path, seconds: float, speech: bytes) -> Path:
    """``seconds`` of speech, the minute of prompts repeated, written as MixMonitor does."""
    n = int(seconds * 8000) * 2
    with path.open("wb") as f:
        f.write(wav_header(n))
        left = n
        while left > 0:
            f.write(speech[: min(left, len(speech))])
            left -= min(left, len(speech))
    return path


def run_build(wav: Path, out: Path, fmt: str, complexity: int, key: bytes | None) -> tuple[float, int]:
    """CPU seconds of one archive build in this process, and the plaintext size."""
    t0 = time.process_time()
    built = build(str(wav), str(out), str(uuid.uuid4()), key, fmt, 12000, complexity)  # type: ignore[arg-type]
    return time.process_time() - t0, built.size


def pesq_nb(reference: bytes, archived: bytes) -> float:
    import numpy as np
    from pesq import pesq

    ref = np.frombuffer(reference, dtype=np.int16).astype(np.float32)
    deg = np.frombuffer(decoded_pcm(archived).tobytes(), dtype=np.int16).astype(np.float32)
    n = min(len(ref), len(deg))
    return float(pesq(8000, ref[:n], deg[:n], "nb"))


def sizes_speed_quality(work: Path, speech: bytes, seconds: float, rounds: int) -> None:
    wav = make_wav(work / "speech.wav", seconds, speech)
    phases = [("opus", 3), ("opus", 0), ("flac", 0), ("wav", 0)]
    cpu: dict[tuple[str, int], list[float]] = {p: [] for p in phases}
    size: dict[tuple[str, int], int] = {}
    key = crypto.new_data_key()
    for r in range(rounds):
        for fmt, complexity in phases:  # alternated, so drift in machine load hits every phase
            out = work / f"{fmt}-{complexity}.obj"
            spent, size[(fmt, complexity)] = run_build(wav, out, fmt, complexity, key)
            cpu[(fmt, complexity)].append(spent)
            say(f"round {r + 1}/{rounds} {fmt} c{complexity}: {seconds / spent:.0f}x real time")
    reference = speech[: int(seconds * 8000) * 2]
    for fmt, complexity in phases:
        spent = cpu[(fmt, complexity)]
        med = statistics.median(spent)
        per_minute = size[(fmt, complexity)] / (seconds / 60)
        quality = None
        if fmt == "opus":
            plain = work / "plain.ogg"
            build(str(wav), str(plain), str(uuid.uuid4()), None, fmt, 12000, complexity)
            quality = round(pesq_nb(reference, plain.read_bytes()), 2)
        emit(
            phase="encode",
            format=fmt,
            complexity=complexity,
            encrypted=True,
            audio_seconds=seconds,
            bytes_per_minute=round(per_minute),
            smaller_than_wav=round(WAV_BYTES_PER_MINUTE / per_minute, 1),
            pesq_nb=quality,
            cpu_seconds_per_audio_hour=round(med * 3600 / seconds, 2),
            realtime_factor=round(seconds / med),
            realtime_factor_spread=round(
                seconds / min(cpu[(fmt, complexity)]) - seconds / max(cpu[(fmt, complexity)])
            ),
            rounds=rounds,
        )


def peak_memory(work: Path, speech: bytes, seconds_list: list[float]) -> None:
    """Peak RSS of a fresh process that archives one call of each length: flat means the
    2-hour call costs what the short one does."""
    for seconds in seconds_list:
        wav = make_wav(work / f"mem-{seconds}.wav", seconds, speech)
        code = (
            "import resource, sys, uuid;"
            "from callrec.archive.pipeline import build;"
            f"build({str(wav)!r}, {str(work / 'mem.obj')!r}, str(uuid.uuid4()), b'k' * 32, 'opus', 12000, 3);"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        env = {"PYTHONPATH": f"{REPO / 'daemon'}:{REPO}", "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        emit(
            phase="memory", format="opus", audio_seconds=seconds, peak_rss_mb=round(int(out.stdout) / 1024, 1)
        )
        wav.unlink()


def _settings(work: Path, dsn: str, storage: str) -> config.Settings:
    path = work / f"callrec-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(f"""
[asterisk]
ari_username = "x"
ari_password = "x"
ami_username = "x"
ami_secret = "x"
recordings_dir = "{work / "recordings"}"
[database]
dsn = "{dsn}"
[daemon]
node = "bench"
state_dir = "{work / "state"}"
{storage}
[registers.r]
direction = "inbound"
retention = "1 month"
""")
    return config.load(path)


async def _insert(pool: asyncpg.Pool, rid: uuid.UUID, size: int, sha: str, *, due: bool) -> None:
    await pool.execute(
        "INSERT INTO recordings (id, call_id, register_name, direction, started_at, ended_at,"
        " duration_seconds, file_path, file_size, sha256, retain_until, archived_at, audio_format,"
        " encrypted, node) VALUES ($1, 'x', 'r', 'inbound', now(), now(), 1, $2, $3, $4,"
        " now() + CASE WHEN $5 THEN interval '-1 day' ELSE interval '1 month' END, now(), 'opus',"
        " true, 'bench')",
        rid,
        f"2026/01/01/{rid}.wav",
        size,
        sha,
        due,
    )


async def stores(work: Path, speech: bytes, seek_seconds: float, seeks: int, uploads: int, rows: int) -> None:
    """The filesystem store and SeaweedFS side by side: seeks and uploads alternate between
    them, sweeps alternate by round."""
    cluster, weed = Cluster(), Seaweed()
    cluster.start()
    weed.start()
    try:
        cluster.createdb("bench")
        dsn = cluster.dsn("bench")
        await migrate(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        by_name = {
            "filesystem": _settings(work, dsn, f'[storage]\npath = "{work / "store"}"'),
            "s3": _settings(work, dsn, weed.toml("bench/")),
        }
        backends = {name: reading.open_store(s) for name, s in by_name.items()}
        kek = crypto.Kek(crypto.new_data_key())
        key = crypto.new_data_key()

        # A 1-hour recording in both stores; random 64 KiB reads through the real path.
        rid = uuid.uuid4()
        wav = make_wav(work / "hour.wav", seek_seconds, speech)
        built = build(str(wav), str(work / "hour.part"), str(rid), key, "opus", 12000, 3)
        for store in backends.values():
            shutil.copy(work / "hour.part", work / "copy.part")
            await store.put_file(object_name(rid), work / "copy.part")
        await _insert(pool, rid, built.size, built.sha256, due=False)
        await keys.store_key(pool, rid, kek, key)
        rec = recordings.from_record(await pool.fetchrow(recordings.SELECT + " WHERE r.id = $1", rid))
        times: dict[str, list[float]] = {n: [] for n in backends}
        rng = random.Random(7)
        for _ in range(seeks):
            start = rng.randrange(0, built.size - 1)
            end = min(start + 65535, built.size - 1)
            for name, store in backends.items():
                archive = reading.Archive(ArchiveSettings(), store, keys.KeyRing(kek))
                t0 = time.perf_counter()
                with await reading.open_audio(pool, rec, archive, work) as sound:
                    data = b"".join([b async for b in sound.read(start, end)])
                times[name].append((time.perf_counter() - t0) * 1000)
                assert len(data) == end - start + 1
        for name, t in times.items():
            emit(
                phase="seek",
                backend=name,
                audio_seconds=seek_seconds,
                object_bytes=built.size,
                seeks=seeks,
                read_bytes=65536,
                seek_ms_p50=round(percentile(t, 50), 2),
                seek_ms_p99=round(percentile(t, 99), 2),
                seek_ms_max=round(max(t), 2),
            )

        # Uploads of 5-minute calls (one sealed object each), alternating between the stores.
        call = make_wav(work / "call.wav", 300, speech)
        built = build(str(call), str(work / "call.part"), str(uuid.uuid4()), key, "opus", 12000, 3)
        spent = {n: 0.0 for n in backends}
        for _ in range(uploads):
            for name, store in backends.items():
                shutil.copy(work / "call.part", work / "up.part")
                t0 = time.perf_counter()
                await store.put_file(object_name(uuid.uuid4()), work / "up.part")
                spent[name] += time.perf_counter() - t0
        for name, seconds in spent.items():
            emit(
                phase="upload",
                backend=name,
                call_seconds=300,
                object_bytes=built.size,
                uploads=uploads,
                recordings_per_second=round(uploads / seconds, 1),
            )

        # The sweep: `rows` due archived recordings per pass, destroyed from each store in turn.
        rates: dict[str, list[float]] = {n: [] for n in backends}
        for _ in range(2):
            for name, store in backends.items():
                for _ in range(rows):
                    r = uuid.uuid4()
                    (work / "tiny.part").write_bytes(b"x" * 1000)
                    await store.put_file(object_name(r), work / "tiny.part")
                    await _insert(pool, r, 1000, "0" * 64, due=True)
                report = await Sweeper(pool, by_name[name], store).run_pass()
                assert report.total.count == rows, report
                rates[name].append(rows / report.seconds)
        for name, r in rates.items():
            emit(
                phase="sweep",
                backend=name,
                rows=rows,
                passes=len(r),
                recordings_per_second=round(statistics.median(r)),
                spread=round(max(r) - min(r)),
            )
        for store in backends.values():
            await store.close()
        await pool.close()
    finally:
        weed.destroy()
        cluster.destroy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter audio, fewer rounds (make bench)")
    p.add_argument("--full", action="store_true", help="the default lengths (summary.py passes it)")
    args = p.parse_args()
    speech = speech_pcm(60)
    with tempfile.TemporaryDirectory(prefix="callrec-bench-archive-") as tmp:
        work = Path(tmp)
        if args.quick:
            sizes_speed_quality(work, speech, 300, rounds=3)
            peak_memory(work, speech, [60, 1800])
            asyncio.run(stores(work, speech, 3600, 200, 10, 300))
        else:
            sizes_speed_quality(work, speech, 3600, rounds=3)
            peak_memory(work, speech, [60, 600, 7200])
            asyncio.run(stores(work, speech, 3600, 1000, 50, 2000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
