"""``callrec check``: is this host ready to record? One line per check, exit 1 on any failure.

Each check answers one question an operator would otherwise find out from the first lost call:
can we reach ARI and AMI with these credentials, may the AMI user run MixMonitor, does
``ari.conf`` carry the variables we group calls by, is the schema current, and can Asterisk
write the recordings that callrec must then read and delete.

Run it as the service user while the unit runs, so the secrets in /run/credentials are there
and the file probe tests that user's rights (README.md, "Operations")::

    runuser -u callrec -- /opt/callrec/bin/callrec check --config /etc/callrec/callrec.toml
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg

from callrec import config
from callrec.asterisk.ami import encode_action, parse_frame
from callrec.asterisk.ari_events import (
    LINKEDID,
    VAR_AGENT,
    VAR_CUSTOMER_NUMBER,
    VAR_REGISTER,
    VAR_SERVICE_NUMBER,
)
from callrec.config import Settings
from callrec.db import migrations
from callrec.db.pool import Store, StoreUnavailable
from callrec.ops.file_rights import (
    Identity,
    cannot_create_in,
    describe,
    identity_of_uid,
    identity_of_user,
    is_loopback,
    listener_uid,
    newest_day_folder,
    user_name,
)

EXIT_FAILED = 1

# What ari.conf's channelvars must carry: linkedid groups the channels of a call (ARI's channel
# JSON lacks it), the contract variables let a restarted daemon rebuild its state from
# GET /channels (DESIGN.md). The order is the one of dialplan/ari.conf, for the hint.
REQUIRED_CHANNELVARS = (LINKEDID, VAR_REGISTER, VAR_SERVICE_NUMBER, VAR_AGENT, VAR_CUSTOMER_NUMBER)
# The actions the recorder sends. Asterisk 22 checks an action's privilege before it looks for
# the channel, so a channel that cannot exist (no technology prefix) tells "allowed" ("No such
# channel") from "not allowed" ("Permission denied") without touching any call. Verified on
# Asterisk 22.10: MixMonitor needs write = system, StopMixMonitor call or system.
AMI_ACTIONS = ("MixMonitor", "StopMixMonitor")
_NO_SUCH_CHANNEL = "No such channel"
_PERMISSION_DENIED = "Permission denied"
_AMI_BANNER = b"Asterisk Call Manager/"
_PROBE_BYTES = b"callrec check probe\n"

Status = Literal["ok", "FAIL", "warn", "skip"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check; ``detail`` says what to fix when it is not ok."""

    status: Status
    name: str
    detail: str = ""

    def line(self) -> str:
        if self.status == "ok":
            return f"ok   {self.name}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.status:<4} {self.name}: {self.detail}"


# --- the checks -------------------------------------------------------------------------------


class _Ami:
    """A one-shot AMI session for the checks: log in, send a few actions, leave.

    Not :class:`callrec.asterisk.ami.AmiClient`, which reconnects forever: a check must fail
    fast and say why."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self._reader, self._writer, self._timeout = reader, writer, timeout
        self._next_id = 0

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float) -> _Ami:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            session = cls(reader, writer, timeout)
            try:
                banner = await reader.readline()
            except Exception:
                await session.close()
                raise
        if not banner.startswith(_AMI_BANNER):
            await session.close()
            raise ConnectionError("the peer did not greet with an AMI banner")
        return session

    async def action(self, name: str, fields: Mapping[str, str]) -> dict[str, str]:
        self._next_id += 1
        action_id = f"callrec-check-{self._next_id}"
        self._writer.write(encode_action(name, fields, action_id))
        async with asyncio.timeout(self._timeout):
            await self._writer.drain()
            while True:
                frame = await self._reader.readuntil(b"\r\n\r\n")
                answer = parse_frame(frame[:-4]).fields
                # Even with Events: off a few events (FullyBooted) arrive; skip anything not ours.
                if answer.get("ActionID") == action_id and "Response" in answer:
                    return answer

    async def close(self) -> None:
        self._writer.close()
        try:
            async with asyncio.timeout(self._timeout):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            pass


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the peer"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Checker:
    """Runs the checks in order; later ones use what earlier ones learnt (ARI info, AMI session)."""

    def __init__(self, settings: Settings, config_path: Path, timeout: float = 3.0) -> None:
        self.settings = settings
        self.config_path = config_path
        self.timeout = timeout
        self._ari_info: dict[str, Any] | None = None
        self._ari_channels: list[Any] | None = None
        self._ami: _Ami | None = None

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
        finally:
            if self._ami is not None:
                await self._ami.close()

    async def _guard(self, name: str, check: Callable[[str], Awaitable[Result]]) -> Result:
        # A check that breaks in a way nobody foresaw is one FAIL line, not a traceback that
        # hides the other checks.
        try:
            return await check(name)
        except Exception as exc:
            return Result("FAIL", name, f"unexpected error: {_error_text(exc)[:300]}")

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
                f"cannot reach {ast.ari_url} ({_error_text(exc)}): is Asterisk running, and do http.conf "
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
            session = await _Ami.connect(ast.ami_host, ast.ami_port, self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            return Result(
                "FAIL",
                name,
                f"cannot reach AMI at {where} ({_error_text(exc)}): is Asterisk running, and do "
                "manager.conf (enabled = yes, bindaddr, port) and asterisk.ami_host/ami_port agree?",
            )
        try:
            # Events: off, as the daemon logs in: a check has no use for the event stream.
            login = {"Username": ast.ami_username, "Secret": ast.ami_secret, "Events": "off"}
            answer = await session.action("Login", login)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            await session.close()
            return Result("FAIL", name, f"AMI login at {where}: {_error_text(exc)}")
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
            return
        except asyncpg.PostgresError as exc:
            # Wrong password, unknown role or database: the server answered, so say what it said.
            yield Result("FAIL", "database", f"PostgreSQL refused: {str(exc)[:200]}; check [database] dsn")
            yield Result("skip", "database schema", "needs a working database connection")
            return
        except Exception as exc:
            yield Result("FAIL", "database", f"unexpected error: {_error_text(exc)[:300]}")
            yield Result("skip", "database schema", "needs a working database connection")
            return
        try:
            yield Result("ok", "database")
            try:
                async with asyncio.timeout(self.timeout):
                    pending = [m.name for m in await migrations.pending(store.pool)]
            except Exception as exc:
                yield Result("FAIL", "database schema", f"cannot read schema_migrations: {_error_text(exc)}")
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
        finally:
            await store.close()

    # -- recordings_dir -----------------------------------------------------------------------

    def _asterisk_identity(self) -> Identity | str:
        """Who Asterisk runs as, or why that is unknown."""
        config_section = (self._ari_info or {}).get("config")
        setid = config_section.get("setid") if isinstance(config_section, dict) else None
        user = str(setid.get("user") or "") if isinstance(setid, dict) else ""
        group = str(setid.get("group") or "") if isinstance(setid, dict) else ""
        if user:
            who = identity_of_user(user, group)
            if who is None:
                return (
                    f"Asterisk runs as {user!r}, which this host does not know: callrec must run on "
                    "Asterisk's host and see recordings_dir at the same path"
                )
            return who
        ast = self.settings.asterisk
        uid = listener_uid(ast.ami_port) if is_loopback(ast.ami_host) else None
        if uid is None:
            return "Asterisk reports no run user (no -U) and its AMI listener is not visible here"
        return identity_of_uid(uid)

    async def check_dir_for_asterisk(self, name: str) -> Result:
        directory = self.settings.asterisk.recordings_dir
        if self._ari_info is None:
            return Result("skip", name, "needs a working ARI login (Asterisk's run user comes from it)")
        if not directory.is_dir():
            return Result("FAIL", name, _missing_dir_hint(directory))
        who = self._asterisk_identity()
        if isinstance(who, str):
            return Result("warn", name, f"not verified: {who}")
        blocker = await asyncio.to_thread(cannot_create_in, directory, who)
        if blocker is not None:
            if blocker != directory:
                return Result(
                    "FAIL",
                    name,
                    f"Asterisk ({who.label}) cannot reach {directory}: {blocker} is {describe(blocker)}; "
                    "give it search permission (chmod o+x, or a group Asterisk is in)",
                )
            return Result(
                "FAIL",
                name,
                f"Asterisk ({who.label}) cannot create files in {directory} ({describe(directory)}): run "
                f"chown asterisk:asterisk {directory} && chmod 2770 {directory}",
            )
        day = await asyncio.to_thread(newest_day_folder, directory)
        if day is not None and await asyncio.to_thread(cannot_create_in, day, who) is not None:
            # callrec makes the day folders; a umask that drops group write (the unit's UMask=)
            # leaves Asterisk, which writes through the group, unable to create the next file.
            return Result(
                "FAIL",
                name,
                f"Asterisk ({who.label}) cannot create files in {day} ({describe(day)}), which callrec "
                f"made: set UMask=0007 in the unit, then chmod -R g+w {directory}",
            )
        return Result("ok", name, f"Asterisk runs as {who.label}" if who.uid else "Asterisk runs as root")

    async def check_dir_for_daemon(self, name: str) -> Result:
        directory = self.settings.asterisk.recordings_dir
        user = user_name(os.geteuid())
        probe = directory / f".callrec-check-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(_probe, probe)
        except OSError as exc:
            return Result("FAIL", name, _probe_hint(exc, directory, user))
        unreadable = await asyncio.to_thread(_unreadable_recording, directory)
        if unreadable is not None:
            return Result(
                "FAIL",
                name,
                f"{user} cannot read {unreadable} ({describe(unreadable)}): Asterisk writes files "
                "without group read; give it a umask that keeps it (UMask=0027 in an asterisk.service "
                "drop-in)",
            )
        detail = f"as {user}: created, read and deleted a probe file"
        if os.geteuid() == 0:
            detail += "; root passes every permission check, so run it as the service user"
        return Result("ok", name, detail)


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


def _probe(path: Path) -> None:
    """Create, read back and delete a file: what the daemon does to every recording."""
    try:
        path.write_bytes(_PROBE_BYTES)
        if path.read_bytes() != _PROBE_BYTES:
            raise OSError(errno.EIO, "the probe file read back differently", str(path))
    finally:
        # Not created at all: the write's error is the answer. Created but not deletable: this
        # unlink's error is, and it replaces the write's (there was none).
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _unreadable_recording(directory: Path) -> Path | None:
    """A file in the newest day folder that this process may not read, or ``None``."""
    day = newest_day_folder(directory)
    if day is None:
        return None
    for entry in day.iterdir():
        if entry.is_file() and not os.access(entry, os.R_OK):
            return entry
    return None


def _missing_dir_hint(directory: Path) -> str:
    return (
        f"{directory} does not exist or is not a folder: "
        f"install -d -o asterisk -g asterisk -m 2770 {directory}"
    )


def _probe_hint(exc: OSError, directory: Path, user: str) -> str:
    if exc.errno == errno.ENOENT:
        return _missing_dir_hint(directory)
    if exc.errno == errno.EROFS:
        return (
            f"{directory} is read-only here: under systemd list it in ReadWritePaths= of the unit "
            "(systemd/callrec.service)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{user} may not create and delete files in {directory} ({describe(directory)}): "
            f"adduser {user} asterisk and chmod 2770 {directory}"
        )
    return f"probe file in {directory}: {_error_text(exc)}"


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


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    help = "Check that ARI, AMI, the database and recordings_dir are ready; exit 1 if not."
    cmd: argparse.ArgumentParser = sub.add_parser("check", help=help, description=help, parents=[common])
    cmd.add_argument(
        "--timeout", type=float, default=3.0, help="seconds allowed for each network step (default 3)"
    )
    cmd.set_defaults(handler=_check)
