"""A one-shot AMI session: log in, send a few actions, leave (``callrec check``).

Not :class:`callrec.asterisk.ami.AmiClient`, which reconnects forever: a check must fail fast
and say why. It speaks the same frames (``encode_action``, ``parse_frame``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from callrec.asterisk.ami import BANNER, FRAME_END, encode_action, parse_frame


class AmiSession:
    """One connection; every step is bounded by ``timeout``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self._reader, self._writer, self._timeout = reader, writer, timeout
        self._next_id = 0

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float) -> AmiSession:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            session = cls(reader, writer, timeout)
            try:
                banner = await reader.readline()
            except Exception:
                await session.close()
                raise
        if not banner.startswith(BANNER):
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
                frame = await self._reader.readuntil(FRAME_END)
                answer = parse_frame(frame[: -len(FRAME_END)]).fields
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
