"""What the daemon's runtime role may do, granted by ``callrec migrate`` as the schema owner
(docs/privacy.md#two-database-roles).

The grants are generic so a table added by any later migration is covered the next time
``callrec migrate`` runs: DML on every table of the schema, except the evidence logs (only
SELECT and INSERT: no UPDATE, DELETE, TRUNCATE) and the owner's own tables (only SELECT).
"""

from __future__ import annotations

from callrec.db.pool import Db, DbConnection

APPEND_ONLY = ("audit_log", "disposal_log", "legal_hold_log", "audit_purge_log")
"""Evidence: the runtime role inserts and reads, never changes or removes."""
READ_ONLY = ("schema_migrations", "callrec_settings")
"""The owner's: which migrations ran, settings the runtime role must not change."""
FUNCTIONS = ("callrec_purge_audit_log()",)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _existing(conn: DbConnection, names: tuple[str, ...]) -> list[str]:
    rows = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND relname = ANY($1::text[])",
        list(names),
    )
    return sorted(r["relname"] for r in rows)


async def grant_runtime(conn: DbConnection, role: str) -> None:
    """Grant ``role`` exactly what the daemon needs, on a connection of the schema owner."""
    who = _ident(role)
    async with conn.transaction():
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {who}")
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}")
        logs = ", ".join(_ident(t) for t in await _existing(conn, APPEND_ONLY))
        if logs:
            await conn.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {logs} FROM {who}")
        owned = ", ".join(_ident(t) for t in await _existing(conn, READ_ONLY))
        if owned:
            await conn.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {owned} FROM {who}")
        for function in FUNCTIONS:
            if await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL", function):
                await conn.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {who}")


async def logs_owned_by_current_role(db: Db) -> list[str]:
    """The evidence logs the connected role owns: it could alter them (``callrec check``)."""
    rows = await db.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
        " AND c.relname = ANY($1::text[]) AND pg_has_role(current_user, c.relowner, 'USAGE')",
        list(APPEND_ONLY),
    )
    return sorted(r["relname"] for r in rows)


async def set_setting(conn: DbConnection, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO callrec_settings (key, value) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        key,
        value,
    )
