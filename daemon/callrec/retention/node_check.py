"""The node lines of ``callrec check``: is this host still the node its rows name, and do
destroyed recordings' files wait for a node that is gone (docs/retention.md#several-nodes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from callrec.archive.reading import open_store
from callrec.config import Settings
from callrec.db.pool import Db
from callrec.ops.check_result import Result
from callrec.ops.node import machine_id, pinned

NAMES = ("node", "other nodes")
_SILENT = "1 day"


async def results(settings: Settings, db: Db | None) -> AsyncIterator[Result]:
    node, first = settings.node, pinned(settings.state_dir)
    others: list[str] = []
    if db is not None:
        rows = await db.fetch(
            "SELECT name FROM nodes WHERE machine_id = $1 AND name <> $2 ORDER BY name", machine_id(), node
        )
        others = [r["name"] for r in rows]
    if first is not None and first != node:
        others.insert(0, first)
    if others:
        yield Result(
            "warn",
            "node",
            f"this host wrote rows as {', '.join(repr(o) for o in others)} but [daemon] node is {node!r}: "
            f"files of those rows can only be deleted by a node of that name; "
            f"set [daemon] node = {others[0]!r} unless that host lives on elsewhere",
        )
    else:
        yield Result("ok", "node", repr(node))
    if db is None:
        yield Result("skip", "other nodes", "needs the database with every migration applied")
        return
    shared = settings.archive.enabled and open_store(settings).shared
    rows = await db.fetch(
        "SELECT p.node, count(*) AS n, max(n.last_seen_at) AS seen FROM disposal_pending p"
        " LEFT JOIN nodes n ON n.name = p.node"
        " WHERE p.node <> $1 AND NOT (p.archived AND $2::boolean)"
        " GROUP BY p.node"
        f" HAVING max(n.last_seen_at) IS NULL OR max(n.last_seen_at) < now() - interval '{_SILENT}'",
        node,
        shared,
    )
    if rows:
        listed = ", ".join(f"{r['n']} for {r['node']!r} ({_seen(r['seen'])})" for r in rows)
        yield Result(
            "warn",
            "other nodes",
            f"destroyed recordings (rows and keys gone) whose files wait for a node that has not run for "
            f"over {_SILENT}: {listed}; start callrec there once, or delete those files by hand",
        )
    else:
        yield Result("ok", "other nodes", "no destroyed recording waits for a silent node")


def _seen(when: datetime | None) -> str:
    return "never seen" if when is None else f"last seen {when:%Y-%m-%d}"
