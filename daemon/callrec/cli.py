"""The ``callrec`` command: parse arguments, load the config, set up logging, run.

Each feature module that has commands exposes ``add_commands(sub, common)``; every command
sets ``handler=`` to a function ``(settings, args) -> exit code``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from callrec import __version__, config
from callrec.access import cli as access_cli
from callrec.archive import cli as archive_cli
from callrec.config import Settings
from callrec.db import cli as db_cli
from callrec.db import migrations
from callrec.ops import check, logs
from callrec.retention import cli as retention_cli

EXIT_CONFIG = 2

Handler = Callable[[Settings, argparse.Namespace], int]
# What add_subparsers() returns. argparse has no public name for it; typeshed declares the
# private class, so naming it lets mypy check every add_parser() call.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from callrec.app import App

    app = App(settings)
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:  # a second Ctrl-C before the loop took over
        return 130
    # A task died: a non-zero exit, so systemd's Restart=on-failure starts a clean daemon.
    return 1 if app.failed else 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    """As the schema owner ([database] owner_dsn, else dsn), then the runtime role's grants."""

    async def work() -> int:
        applied = await migrations.migrate(
            settings.database_owner_dsn or settings.database_dsn,
            runtime_dsn=settings.database_dsn,
            audit_log_retention=settings.audit_log_retention,
        )
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0

    return db_cli.run_plain(settings, work)


def _show_config(settings: Settings, args: argparse.Namespace) -> int:
    print(settings)
    return 0


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    def command(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(handler=handler)
        return cmd

    command("run", "Watch Asterisk and record every answered call of a register, until SIGTERM.", _run)
    command("migrate", "Create or update the database schema (idempotent).", _migrate)
    command("config", "Check the config file and print it without secrets.", _show_config)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callrec", description="Call-recording register for Asterisk.")
    p.add_argument("--version", action="version", version=f"callrec {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: $CALLREC_CONFIG or {config.DEFAULT_PATH})",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, common)
    check.add_commands(sub, common)
    access_cli.add_commands(sub, common)  # users, audit
    retention_cli.add_commands(sub, common)  # retention, hold, release, erase
    archive_cli.add_commands(sub, common)  # keys, archive, verify
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = args.config or config.default_path()
    try:
        settings = config.load(path)
    except config.ConfigError as exc:
        print(f"callrec: config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level)
    handler: Handler = args.handler
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
