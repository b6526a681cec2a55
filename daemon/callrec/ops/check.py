"""``callrec check``: is this host ready to record? One line per check, exit 1 on any failure.

Each check answers one question an operator would otherwise find out from the first lost call:
can we reach ARI and AMI with these credentials, may the AMI user run MixMonitor, does
``ari.conf`` carry the variables we group calls by, is the schema current, and can Asterisk
write the recordings that callrec must then read and delete.

Run it as the service user while the unit runs, so the secrets in /run/credentials are there
and the file probe tests that user's rights (docs/operations.md, "callrec check")::

    runuser -u callrec -- /opt/callrec/bin/callrec check --config /etc/callrec/callrec.toml
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from callrec import config
from callrec.archive import check as archive_check
from callrec.asterisk.ami_session import AmiSession
from callrec.asterisk.ari_events import (
    LINKEDID,
    VAR_AGENT,
    VAR_CUSTOMER_NUMBER,
    VAR_MIXMONITOR_FILENAME,
    VAR_REGISTER,
    VAR_SERVICE_NUMBER,
)
from callrec.config import Settings
from callrec.db import grants, migrations
from callrec.db.pool import Db, Store, StoreUnavailable
from callrec.ops import check_dirs
from callrec.ops.check_result import Result, error_text
from callrec.retention import node_check

EXIT_FAILED = 1

# What ari.conf's channelvars must carry: linkedid groups the channels of a call (ARI's channel
# JSON lacks it), the contract variables let a restarted daemon rebuild its state from
# GET /channels (docs/asterisk.md, "No linkedid in ARI channel JSON"). The order is the one of
# dialplan/ari.conf, for the hint.
REQUIRED_CHANNELVARS = (
    LINKEDID,
    VAR_REGISTER,
    VAR_SERVICE_NUMBER,
    VAR_AGENT,
    VAR_CUSTOMER_NUMBER,
    VAR_MIXMONITOR_FILENAME,
)
# The actions the recorder sends. Asterisk 22 checks an action's privilege before it looks for
# the channel, so a channel that cannot exist (no technology prefix) tells "allowed" ("No such
# channel") from "not allowed" ("Permission denied") without touching any call. Verified on
# Asterisk 22.10: MixMonitor needs write = system, StopMixMonitor call or system.
AMI_ACTIONS = ("MixMonitor", "StopMixMonitor")
_NO_SUCH_CHANNEL = "No such channel"
_PERMISSION_DENIED = "Permission denied"


class Checker:
    """Runs the checks in order; later ones use what earlier ones learnt (ARI info, AMI session)."""

    def __init__(self, settings: Settings, config_path: Path, timeout: float = 3.0) -> None:
        self.settings = settings
        self.config_path = config_path
        self.timeout = timeout
        self._ari_info: dict[str, Any] | None = None
        self._ari_channels: list[Any] | None = None
        self._ami: AmiSession | None = None
        self._schema_ok = False

    async def results(self) -> AsyncIterator[Result]:
        yield Result("ok", "config", str(self.config_path))
        try:
            yield await self._guard("ari", self.check_ari)
            yield await self._guard("ami", self.check_ami_login)
            yield await self._guard("ami actions", self.check_ami_actions)
            yield await self._guard("ari channelvars", self.check_channelvars)
            async for result in self._database():
                yield result
            yield await self._guard("recordings_dir writable by asterisk", self.check_dir_for_asterisk)
            yield await self._guard("recordings_dir usable by callrec", self.check_dir_for_daemon)
            async for result in self._archive():
                yield result
        finally:
            if self._ami is not None:
                await self._ami.close()

    async def _guard(self, name: str, check: Callable[[str], Awaitable[Result]]) -> Result:
        # A check that breaks in a way nobody foresaw is one FAIL line, not a traceback that
        # hides the other checks.
        try:
            return await check(name)
        except Exception as exc:
            return Result("FAIL", name, f"unexpected error: {error_text(exc)[:300]}")

    # -- ARI ----------------------------------------------------------------------------------

    async def _ari_get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
        ast = self.settings.asterisk
        url = f"{ast.ari_url}/ari/{path}"
        headers = {"Authorization": aiohttp.encode_basic_auth(ast.ari_username, ast.ari_password)}
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                return resp.status, None
            return resp.status, await resp.json(content_type=None)

    async def check_ari(self, name: str) -> Result:
        ast = self.settings.asterisk
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                status, info = await self._ari_get(session, "asterisk/info")
                if status == 200:
                    _, self._ari_channels = await self._ari_get(session, "channels")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Result(
                "FAIL",
                name,
                f"cannot reach {ast.ari_url} ({error_text(exc)}): is Asterisk running, and do http.conf "
                "(enabled = yes, bindaddr, bindport) and asterisk.ari_url agree?",
            )
        if status == 401:
            return Result(
                "FAIL",
                name,
                f"Asterisk refused ARI user {ast.ari_username!r}: set asterisk.ari_username and "
                "ari_password (or ari_password_file) to a user of ari.conf (type = user)",
            )
        if status == 404:
            return Result(
                "FAIL",
                name,
                f"{ast.ari_url} serves no ARI: set enabled = yes in ari.conf and load res_ari.so",
            )
        if status != 200 or not isinstance(info, dict):
            return Result("FAIL", name, f"GET /ari/asterisk/info answered HTTP {status}")
        self._ari_info = info
        system = info.get("system")
        version = system.get("version", "?") if isinstance(system, dict) else "?"
        return Result("ok", name, f"Asterisk {version} at {ast.ari_url}")

    async def check_channelvars(self, name: str) -> Result:
        if self._ari_info is None:
            return Result("skip", name, "needs a working ARI login")
        channels = [c for c in self._ari_channels or [] if isinstance(c, dict)]
        if channels:
            # Every snapshot carries every configured channelvar, empty or not (Asterisk 22):
            # one live channel shows what the running Asterisk has loaded.
            cvars = channels[0].get("channelvars")
            present = set(cvars) if isinstance(cvars, dict) else set()
            return self._channelvars_result(name, present, "seen on a live channel")
        if self._ami is not None:
            # No channel to look at: read ari.conf through AMI GetConfig instead, which the
            # "system" write class allows. It shows the file, not necessarily what is loaded.
            answer = await self._ami.action("GetConfig", {"Filename": "ari.conf"})
            if answer.get("Response") == "Success":
                present = set(_channelvars_in_getconfig(answer))
                return self._channelvars_result(
                    name, present, "read from ari.conf; no live channel to confirm"
                )
        return Result(
            "warn",
            name,
            "not verified: no live channel to inspect and ari.conf not readable over AMI; "
            f"make sure ari.conf [general] has channelvars = {','.join(REQUIRED_CHANNELVARS)}",
        )

    @staticmethod
    def _channelvars_result(name: str, present: set[str], source: str) -> Result:
        missing = [v for v in REQUIRED_CHANNELVARS if v not in present]
        if not missing:
            return Result("ok", name, source)
        return Result(
            "FAIL",
            name,
            f"ari.conf [general] channelvars lacks {', '.join(missing)} ({source}): set "
            f"channelvars = {','.join(REQUIRED_CHANNELVARS)} (see dialplan/ari.conf), then "
            "asterisk -rx 'module reload res_ari.so'",
        )

    # -- AMI ----------------------------------------------------------------------------------

    async def check_ami_login(self, name: str) -> Result:
        ast = self.settings.asterisk
        where = f"{ast.ami_host}:{ast.ami_port}"
        try:
            session = await AmiSession.connect(ast.ami_host, ast.ami_port, self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return Result(
                "FAIL",
                name,
                f"cannot reach AMI at {where} ({error_text(exc)}): is Asterisk running, and do "
                "manager.conf (enabled = yes, bindaddr, port) and asterisk.ami_host/ami_port agree?",
            )
        try:
            # Events: off, as the daemon logs in: a check has no use for the event stream.
            login = {"Username": ast.ami_username, "Secret": ast.ami_secret, "Events": "off"}
            answer = await session.action("Login", login)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            await session.close()
            return Result("FAIL", name, f"AMI login at {where}: {error_text(exc)}")
        if answer.get("Response") != "Success":
            await session.close()
            return Result(
                "FAIL",
                name,
                f"Asterisk refused AMI user {ast.ami_username!r} ({answer.get('Message', '')}): set "
                "asterisk.ami_username and ami_secret (or ami_secret_file) to a manager.conf user "
                "whose permit/deny lets this host in",
            )
        self._ami = session
        return Result("ok", name, f"logged in at {where} as {ast.ami_username}")

    async def check_ami_actions(self, name: str) -> Result:
        if self._ami is None:
            return Result("skip", name, "needs a working AMI login")
        # No File and no Command: on a channel that cannot exist nothing is ever recorded or run.
        channel = f"callrec-check-{uuid.uuid4().hex}"
        refused = []
        for action in AMI_ACTIONS:
            message = (await self._ami.action(action, {"Channel": channel})).get("Message", "")
            if message == _PERMISSION_DENIED:
                refused.append(action)
            elif message != _NO_SUCH_CHANNEL:
                return Result(
                    "FAIL", name, f"{action} on a channel that cannot exist answered {message!r:.100}"
                )
        if refused:
            return Result(
                "FAIL",
                name,
                f"AMI user {self.settings.asterisk.ami_username!r} may not run {' and '.join(refused)}: "
                "set write = call,system for it in manager.conf, then asterisk -rx 'manager reload'",
            )
        return Result("ok", name, " and ".join(AMI_ACTIONS) + " allowed")

    # -- database -----------------------------------------------------------------------------

    async def _database(self) -> AsyncIterator[Result]:
        try:
            store = await Store.connect(self.settings.database_dsn, timeout=self.timeout)
        except StoreUnavailable as exc:
            yield Result(
                "FAIL",
                "database",
                f"cannot reach PostgreSQL ({str(exc)[:200]}): is it running, and is [database] dsn right?",
            )
            yield Result("skip", "database schema", "needs a working database connection")
            yield Result("skip", "database roles", "needs a working database connection")
            return
        except asyncpg.PostgresError as exc:
            # Wrong password, unknown role or database: the server answered, so say what it said.
            yield Result("FAIL", "database", f"PostgreSQL refused: {str(exc)[:200]}; check [database] dsn")
            yield Result("skip", "database schema", "needs a working database connection")
            yield Result("skip", "database roles", "needs a working database connection")
            return
        except Exception as exc:
            yield Result("FAIL", "database", f"unexpected error: {error_text(exc)[:300]}")
            yield Result("skip", "database schema", "needs a working database connection")
            yield Result("skip", "database roles", "needs a working database connection")
            return
        try:
            yield Result("ok", "database")
            try:
                async with asyncio.timeout(self.timeout):
                    pending = [m.name for m in await migrations.pending(store.pool)]
            except Exception as exc:
                yield Result("FAIL", "database schema", f"cannot read schema_migrations: {error_text(exc)}")
                yield Result("skip", "database roles", "needs the schema")
                return
            if pending:
                yield Result(
                    "FAIL",
                    "database schema",
                    f"{len(pending)} migration(s) not applied ({', '.join(pending)}): "
                    f"run callrec migrate --config {self.config_path}",
                )
            else:
                yield Result("ok", "database schema", "every migration applied")
                self._schema_ok = True
            yield await database_roles(self.settings, store.pool)
        finally:
            await store.close()

    async def _archive(self) -> AsyncIterator[Result]:
        store = None
        if self._schema_ok:
            with contextlib.suppress(Exception):  # said by the database lines already
                store = await Store.connect(self.settings.database_dsn, timeout=self.timeout)
        try:
            db = store.pool if store else None
            async for result in archive_check.results(self.settings, db):
                yield result
            async for result in node_check.results(self.settings, db):
                yield result
        finally:
            if store is not None:
                await store.close()

    # -- recordings_dir (ops/check_dirs.py) ------------------------------------------------------

    async def check_dir_for_asterisk(self, name: str) -> Result:
        return await check_dirs.check_dir_for_asterisk(self.settings, self._ari_info, name)

    async def check_dir_for_daemon(self, name: str) -> Result:
        return await check_dirs.check_dir_for_daemon(self.settings, name)


async def database_roles(settings: Settings, db: Db) -> Result:
    """The runtime role must not own the evidence logs (docs/privacy.md#two-database-roles)."""
    name = "database roles"
    try:
        owned = await grants.logs_owned_by_current_role(db)
    except Exception as exc:
        return Result("FAIL", name, f"cannot read the tables' owners: {error_text(exc)}")
    if owned:
        return Result(
            "FAIL",
            name,
            f"the role of [database] dsn owns {', '.join(owned)} and could alter the evidence: "
            "give the schema to an owner role (docs/operations.md#database-roles), set "
            "[database] owner_dsn, and run callrec migrate",
        )
    if settings.database_owner_dsn is None:
        return Result("warn", name, "[database] owner_dsn unset: callrec migrate runs as the runtime role")
    return Result("ok", name, "the runtime role owns none of the logs")


def _channelvars_in_getconfig(answer: Mapping[str, str]) -> Iterable[str]:
    """The variable names of ``channelvars`` in ari.conf [general], from a GetConfig answer
    (``Category-000000: general``, ``Line-000000-000002: channelvars=A,B``)."""
    general = {k.partition("-")[2] for k, v in answer.items() if k.startswith("Category-") and v == "general"}
    value = ""
    for key, line in answer.items():
        if key.startswith("Line-") and key.split("-")[1] in general:
            option, _, rest = line.partition("=")
            if option.strip() == "channelvars":
                value = rest  # the last one wins, as when Asterisk loads the file
    return [v.strip() for v in value.split(",") if v.strip()]


async def run_checks(checker: Checker) -> bool:
    """Print one line per check as it finishes; True if none failed."""
    ok = True
    async for result in checker.results():
        print(result.line(), flush=True)
        ok = ok and result.status != "FAIL"
    return ok


def _check(settings: Settings, args: argparse.Namespace) -> int:
    path = args.config or config.default_path()
    checker = Checker(settings, path, timeout=args.timeout)
    try:
        passed = asyncio.run(run_checks(checker))
    except KeyboardInterrupt:
        return 130
    if not passed:
        print("callrec check: some checks failed; fix them and run it again", file=sys.stderr)
        return EXIT_FAILED
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    help = "Check that ARI, AMI, the database and recordings_dir are ready; exit 1 if not."
    cmd = sub.add_parser("check", help=help, description=help, parents=[common])
    cmd.add_argument(
        "--timeout", type=float, default=3.0, help="seconds allowed for each network step (default 3)"
    )
    cmd.set_defaults(handler=_check)
