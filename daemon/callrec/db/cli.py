"""How a one-shot command (``callrec migrate | users | audit | retention | hold | ...``) uses
the database: one pool, one set of exit codes, one line on stderr for anything that goes wrong.

Exit codes (docs/operations.md, "Exit codes"): 0 done; 1 refused or not found, one line naming
why; 2 config or usage (``cli.main`` and argparse); 3 the database is unreachable, refused us,
or has an older schema than this callrec.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg

from callrec.config import Settings
from callrec.db.pool import TRANSIENT_ERRORS, DbPool, StoreUnavailable, close_pool, describe, open_pool
from callrec.ops import logs

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 3

Work = Callable[[DbPool], Awaitable[int]]
"""The command itself: prints its output, returns its exit code (``refuse()`` for 1)."""


def refuse(message: object) -> int:
    """Print why the command did nothing, as one line on stderr; exit code 1."""
    print(f"callrec: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _unavailable(message: str) -> int:
    print(f"callrec: database: {message}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def run(
    settings: Settings,
    work: Work,
    *,
    refusals: tuple[type[Exception], ...] = (),
    command_timeout: float | None = 30.0,
) -> int:
    """Open a small pool, await ``work(pool)``, close the pool; the exit code.

    An exception of a ``refusals`` type is the command saying no: its message becomes the one
    line of exit code 1. ``command_timeout`` bounds each statement (``None``: a migration may
    rewrite a large table for minutes)."""

    async def main() -> int:
        pool = await open_pool(settings.database_dsn, max_size=2, command_timeout=command_timeout)
        try:
            return await work(pool)
        finally:
            await close_pool(pool)

    return run_plain(settings, main, refusals=refusals)


def run_plain(
    settings: Settings,
    main: Callable[[], Coroutine[Any, Any, int]],
    *,
    refusals: tuple[type[Exception], ...] = (),
) -> int:
    """``run`` for a command that opens its own connections (``callrec migrate``)."""
    # The command's output goes to stdout; log lines of a one-shot command go to stderr, so
    # `callrec users token alice > file` captures the token alone.
    logs.configure(settings.log_level, sys.stderr)
    try:
        return asyncio.run(main())
    except refusals as exc:
        return refuse(exc)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return _unavailable("the schema is older than this callrec; run `callrec migrate`")
    except StoreUnavailable as exc:
        return _unavailable(str(exc))
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        # Lost mid-command, or refused (a missing right): one line, never a traceback.
        return _unavailable(describe(exc))
