"""callrec.toml for tests that need settings but no Asterisk: the required keys with inert
values, this test's folders, one register, and whatever tables the test adds."""

from __future__ import annotations

from pathlib import Path


def offline_toml(tmp_path: Path, dsn: str, tables: str = "", *, node: str | None = None) -> str:
    node_line = f'node = "{node}"' if node is not None else ""
    return f"""
[asterisk]
ari_username = "callrec"
ari_password = "x"
ami_username = "callrec"
ami_secret = "x"
recordings_dir = "{tmp_path / "recordings"}"
[database]
dsn = "{dsn}"
[daemon]
{node_line}
state_dir = "{tmp_path / "state"}"
{tables}
[registers.customer-service]
direction = "inbound"
retention = "6 months"
"""
