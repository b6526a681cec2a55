"""`make demo-cluster`: one register for two PBXs, for real. Two throwaway Asterisk 22s, a
callrec node beside each, one PostgreSQL and one S3 store (SeaweedFS); a call on each PBX,
the rows of both nodes, and node A playing node B's recording through its API
(docs/archive.md#stores, docs/retention.md#several-nodes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import psycopg

from tests.e2e.conftest import archive_key, settings_of, start_daemon, wait_no_channels, wait_rows
from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk, ensure_root
from tests.harness.audio import decoded_pcm
from tests.harness.driver import Driver
from tests.harness.postgres import Cluster
from tests.harness.seaweed import Seaweed


def main() -> int:
    if os.geteuid() != 0:
        print("make demo-cluster needs root: it runs Asterisk in a chroot with bind mounts")
        return 1
    ensure_root()
    work = Path(tempfile.mkdtemp(prefix="callrec-demo-cluster-"))
    cluster, weed = Cluster(), Seaweed()
    pbx = {name: Asterisk(recordings_dir=work / name / "recordings") for name in ("pbx-a", "pbx-b")}
    daemons = []
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.dsn("callrec")
        weed.start()
        key = archive_key(work / "shared" / "state")
        for ast in pbx.values():
            ast.start()
        env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
        for name, ast in pbx.items():
            d = start_daemon(work / name, ast, dsn, node=name, key_file=key, storage=weed.toml("demo/"))
            if not daemons:
                subprocess.run(
                    [sys.executable, "-m", "callrec.cli", "migrate", "--config", str(d.config_path)],
                    check=True,
                    env=env,
                    capture_output=True,
                )
            daemons.append(d)
        print(f"two nodes up beside two Asterisks; PostgreSQL {cluster.port}; S3 {weed.endpoint}")
        for ast, number in zip(pbx.values(), ("+358 40 123 4567", "+358 50 765 4321"), strict=True):
            with Driver(ast.ami_port, TEST_AMI_USER, ast.ami_secret) as driver:
                driver.inbound("0300", number, talk=4)
        rows = wait_rows(dsn, 2, timeout=60, where="archived_at IS NOT NULL")
        for ast in pbx.values():
            wait_no_channels(ast)
        with psycopg.connect(dsn) as conn:
            table = conn.execute(
                "SELECT node, register_name, to_char(started_at, 'HH24:MI:SS'), duration_seconds,"
                " customer_number_masked, agent_name, audio_format, encrypted, file_size FROM recordings"
                " ORDER BY node"
            ).fetchall()
        print("\nrows of both nodes (one register):")
        for r in table:
            print("  " + "  ".join(str(v) for v in r))
        row_b = next(r for r in rows if r["node"] == "pbx-b")
        a = daemons[0]
        run = [sys.executable, "-m", "callrec.cli"]
        cfg = ["--config", str(a.config_path)]
        subprocess.run(
            [*run, "users", "add", "dana", "--role", "dpo", *cfg], check=True, env=env, capture_output=True
        )
        out = subprocess.run(
            [*run, "users", "token", "dana", *cfg], check=True, env=env, capture_output=True, text=True
        )
        token = out.stdout.strip().splitlines()[-1]
        host, port = settings_of(a).api_listen or ("", 0)
        req = urllib.request.Request(
            f"http://{host}:{port}/api/recordings/{row_b['id']}/audio",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            kind = resp.headers["Content-Type"]
        seconds = len(decoded_pcm(body)) / 8000
        print(f"\nnode pbx-a played node pbx-b's recording {row_b['id']}:")
        print(f"  {kind}, {len(body)} bytes, {seconds:.1f} s of audio")
        return 0
    finally:
        for d in daemons:
            d.stop()
        for ast in pbx.values():
            ast.destroy()
        weed.destroy()
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
