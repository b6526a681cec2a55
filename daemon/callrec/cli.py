"""The ``callrec`` command: parse arguments, load the config, set up logging, run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from callrec import __version__, config, logs

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callrec", description="Call-recording register for Asterisk.")
    p.add_argument("--version", action="version", version=f"callrec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.add_argument(
            "--config",
            type=Path,
            default=None,
            help=f"config file (default: $CALLREC_CONFIG or {config.DEFAULT_PATH})",
        )
        return cmd

    command("run", "Watch Asterisk and record every answered call of a register, until SIGTERM.")
    command("migrate", "Create or update the database schema (idempotent).")
    command("config", "Check the config file and print it without secrets.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = args.config or config.default_path()
    try:
        settings = config.load(path)
    except config.ConfigError as exc:
        print(f"callrec: config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level)

    if args.command == "run":
        from callrec.app import App

        try:
            asyncio.run(App(settings).run())
        except KeyboardInterrupt:  # a second Ctrl-C before the loop took over
            return 130
        return 0
    if args.command == "migrate":
        from callrec.store import StoreUnavailable, migrate

        try:
            applied = asyncio.run(migrate(settings.database_dsn))
        except StoreUnavailable as exc:
            print(f"callrec: database: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0
    if args.command == "config":
        print(settings)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
