"""`./dev demo` (make demo): the main job for real on a throwaway Asterisk 22 and PostgreSQL.

Stands both up, applies the migrations with `callrec migrate`, starts `callrec run`, places
an inbound customer-service call, an outbound telesales call and an internal (unrecorded)
call with real audio, waits for the rows, prints them, and tears everything down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.e2e.conftest import start_daemon, wait_no_channels, wait_rows, write_config
from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk, ensure_root, free_port
from tests.harness.driver import Driver
from tests.harness.postgres import Cluster


def main() -> int:
    if os.geteuid() != 0:
        print("./dev demo needs root: it builds a Debian sid chroot for Asterisk and bind-mounts into it")
        return 1
    ensure_root()
    work = Path(tempfile.mkdtemp(prefix="callrec-demo-"))
    cluster = Cluster()
    asterisk = Asterisk(recordings_dir=work / "recordings")
    daemon = None
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.runtime_dsn("callrec")  # the daemon's role; migrate runs as the owner
        asterisk.start()
        print(f"asterisk 22 up: ARI {asterisk.ari_url}, AMI {asterisk.ami_port}, postgresql {cluster.port}")
        cfg = work / "callrec.toml"
        write_config(cfg, asterisk, dsn, free_port())
        env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
        subprocess.run(
            [sys.executable, "-m", "callrec.cli", "migrate", "--config", str(cfg)], check=True, env=env
        )
        daemon = start_daemon(work, asterisk, dsn)
        print(f"callrec running (log: {daemon.log_path}); placing three calls...")
        driver = Driver(asterisk.ami_port, TEST_AMI_USER, asterisk.ami_secret)
        driver.inbound("0300", "+358 40 123 4567", talk=5)
        driver.outbound("0401234567", agent="bob", ring=2, talk=4)
        driver.originate(
            "Local/alice@callrec-internal", context="test-customer-talk", variables={"__TALK": "3"}
        )
        t0 = time.monotonic()
        rows = wait_rows(dsn, 2, timeout=60)
        wait_no_channels(asterisk)
        driver.close()
        # The archive step follows the row: Opus, sealed, the WAV deleted (docs/archive.md).
        archived = wait_rows(dsn, 2, timeout=60, where="archived_at IS NOT NULL")
        print(
            f"\n{len(rows)} rows in {time.monotonic() - t0:.1f}s, {len(archived)} archived"
            " (the internal call is not recorded):\n"
        )
        with psycopg.connect(dsn) as conn:
            cur = conn.execute(
                "SELECT register_name, direction, to_char(started_at, 'HH24:MI:SS') AS started,"
                " duration_seconds AS secs, service_number, customer_number_masked, agent_name,"
                " audio_format AS format, encrypted, file_size, left(sha256, 12) AS sha256,"
                " retain_until::date FROM recordings ORDER BY started_at"
            )
            cols = [c.name for c in cur.description or []]
            table = [cols] + [[str(v) for v in r] for r in cur.fetchall()]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        for r in table:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        objects = sorted(
            p for p in (work / "archive").rglob("*") if p.is_file() and ".staging" not in p.parts
        )
        print(f"\narchived objects under {work / 'archive'} (sealed: not Ogg without the key):")
        for p in objects:
            head = p.read_bytes()[:8]
            print(f"  {p.relative_to(work / 'archive')}  {p.stat().st_size} bytes, starts {head!r}")
        return 0 if len(rows) == 2 and len(archived) == 2 else 1
    finally:
        if daemon is not None:
            daemon.stop()
        asterisk.destroy()
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
