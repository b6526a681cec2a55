"""The call tracker's commands (recording/tracker.py): what the recorder is told to do.

``StartRecording`` is also the journal's entry, so it lives with the row in facts.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from callrec.recording.facts import Parties, StartRecording


@dataclass(frozen=True, slots=True)
class StopRecording:
    """The recorded channel is hanging up: stop MixMonitor so the file closes now."""

    recording_id: uuid.UUID
    channel_name: str
    at: float


@dataclass(frozen=True, slots=True)
class FinishRecording:
    """The recorded channel is gone: once the file is closed, write the row."""

    recording_id: uuid.UUID
    ended_at: float
    parties: Parties
    """Who was on the call at its end (the row holds these, not those of the answer)."""
    missed_end: bool = False
    """The channel vanished while we were not watching (found out by reconciliation)."""
    interrupted: bool = False
    """... because Asterisk itself restarted: no closing marker will come."""


@dataclass(frozen=True, slots=True)
class PauseRecording:
    """The dialplan set CALLREC_PAUSE on a channel of a recorded call: mute (``paused``) or
    unmute the recording (docs/dialplan.md#pause-for-card-numbers)."""

    recording_id: uuid.UUID
    paused: bool
    at: float


@dataclass(frozen=True, slots=True)
class Problem:
    """Something worth a log line and a counter; ``kind`` is a fixed code, never caller data."""

    kind: str
    call_id: str | None = None
    register: str | None = None


Command = StartRecording | StopRecording | FinishRecording | PauseRecording | Problem
