"""What the recorder knows of one recording in progress (recording/recorder.py): its facts,
where it is in its lifecycle (recording/lifecycle.py), and what its task waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from callrec.recording.facts import StartRecording
from callrec.recording.file_close import PendingClose
from callrec.recording.lifecycle import Lifecycle
from callrec.recording.mixmonitor import Attach
from callrec.recording.tracker import FinishRecording


@dataclass(eq=False)
class InFlight:
    """One recording the recorder is walking through its lifecycle."""

    facts: StartRecording
    life: Lifecycle = field(default_factory=Lifecycle)
    stop_at: float | None = None
    """When the recorded channel began to hang up (StopRecording)."""
    finish: FinishRecording | None = None
    """Set once the recorded channel is gone (FinishRecording)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever ``stop_at`` or ``finish`` is: one Event per recording (5,000 calls up hold
    5,000 of them; an Event is ~0.9 KB), never a task per thing waited for."""
    attach: Attach | None = None
    """AGI mode: how MixMonitor is started instead of the AMI action."""
    attached: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """True once MixMonitor runs (or may run); False if it surely does not."""
    close: PendingClose | None = None
    journaled: asyncio.Future[None] | None = None
    """The journal entry being written (event mode: MixMonitor does not wait for it)."""
    sent: Awaitable[object] | None = None
    """Event mode: the answer to a MixMonitor action already written (Recorder._send_early)."""

    def settle(self, running: bool) -> None:
        if not self.attached.done():
            self.attached.set_result(running)

    async def until_finished(self) -> None:
        while self.finish is None:
            self.changed.clear()
            await self.changed.wait()
