"""A throwaway PostgreSQL cluster from the installed binaries (docs/testing.md#a-throwaway-postgresql).

PostgreSQL refuses to run as root, so when we are root the server runs as ``postgres``
through runuser; elsewhere it runs as the current user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.asterisk import free_port

OWNER = "callrec_owner"
"""Owns the schema; only `callrec migrate` connects as it."""
RUNTIME = "callrec"
"""The daemon's role: DML, and only SELECT and INSERT on the evidence logs."""


def owner_of(dsn: str) -> str:
    """The schema owner's DSN for the database of a RUNTIME ``dsn`` (any other: unchanged)."""
    return dsn.replace(f"//{RUNTIME}@", f"//{OWNER}@", 1)


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(found[-1]).parent


@dataclass
class Cluster:
    """A running cluster; ``dsn(db)`` connects over TCP on loopback as the superuser."""

    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    user: str = "postgres"
    password: str = ""
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None
    """None: the test template is built from template0, not from another template."""
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callrec-pg-")))

    def _as_owner(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self) -> None:
        bindir = pg_bindir()
        data = self.base / "data"
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        else:
            self.user = os.environ.get("USER", "postgres")
        subprocess.run(
            self._as_owner(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )
        self.resume()
        self._create_roles()

    def resume(self) -> None:
        """Start the server (again, after ``stop()``: an outage ends)."""
        # Durability is pointless for a throwaway cluster; speed is not.
        opts = f"-p {self.port} -h {self.host} -k {self.base}"
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(
            self._as_owner(
                str(pg_bindir() / "pg_ctl"),
                "-D",
                str(self.base / "data"),
                "-l",
                str(self.base / "log"),
                "-o",
                opts,
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            self._as_owner(
                str(pg_bindir() / "pg_ctl"), "-D", str(self.base / "data"), "-m", mode, "-w", "stop"
            ),
            check=False,
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str, user: str | None = None) -> str:
        """The superuser's DSN, or ``user``'s (OWNER, RUNTIME)."""
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{dbname}"

    def owner_dsn(self, dbname: str) -> str:
        return self.dsn(dbname, OWNER)

    def runtime_dsn(self, dbname: str) -> str:
        return self.dsn(dbname, RUNTIME)

    def _create_roles(self) -> None:
        # The two roles of README's install (docs/privacy.md#two-database-roles): the schema
        # owner, used by `callrec migrate`, and the runtime role the daemon connects as.
        for role in (OWNER, RUNTIME):
            self.psql("postgres", f"CREATE ROLE {role} LOGIN")

    def psql(self, dbname: str, sql: str) -> None:
        subprocess.run(
            [
                str(pg_bindir() / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
        )

    def createdb(self, dbname: str) -> None:
        """A database owned by OWNER, as README's install makes it."""
        subprocess.run(
            [
                str(pg_bindir() / "createdb"),
                *("-h", self.host, "-p", str(self.port), "-U", self.user, "-O", OWNER, dbname),
            ],
            check=True,
            capture_output=True,
        )
        self.psql(dbname, f"ALTER SCHEMA public OWNER TO {OWNER}")

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (
            subprocess.run(
                [str(pg_bindir() / "pg_isready"), "-h", self.host, "-p", str(self.port)], capture_output=True
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("postgresql did not come up")
            time.sleep(0.1)
