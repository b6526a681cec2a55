"""The lifecycle of one recording, as explicit states and pure transitions (after h11's
``_state.py``). The recorder moves a recording through these states and nothing else; an
impossible move is a bug and raises at once instead of writing a wrong row.

::

    ANSWERED --journal fsync--> JOURNALED --MixMonitor asked--> STARTING --accepted--> RECORDING
    RECORDING --hangup seen (StopMixMonitor)--> STOPPING --channel gone--> ENDED
    RECORDING --channel gone--> ENDED --file closed (or not confirmed)--> CLOSED --row--> STORED

    adopted after a restart: enters at RECORDING;  recovered from its file: enters at ENDED
    failures: ANSWERED -> FAILED(shutting_down); STARTING -> FAILED(ami_down | mixmonitor_refused);
              CLOSED -> FAILED(no_file)

A failed recording leaves no row; each failure reason is one value of the metric
``callrec_recordings_failed_total{reason}`` (docs/operations.md#metrics). ``close_unconfirmed``
is not an end: the file is hashed as it is and the row still written. ``row_rejected`` happens
later, in the outbox, when PostgreSQL refuses a row for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal


class State(Enum):
    ANSWERED = "answered"
    """The tracker asked for a recording; nothing is on disk yet."""
    JOURNALED = "journaled"
    """The journal holds the facts (fsync'd): from here a crash leaves a call to adopt or a
    file to recover a row from."""
    STARTING = "starting"
    """MixMonitor was asked for (AMI action, or the call's AGI session)."""
    RECORDING = "recording"
    """MixMonitor runs, or may run (its answer was lost: the file decides at the end)."""
    STOPPING = "stopping"
    """The recorded channel is hanging up; StopMixMonitor closes the file now."""
    ENDED = "ended"
    """The recorded channel is gone; Asterisk closes the file on its own thread."""
    CLOSED = "closed"
    """The file is closed (or its close could not be confirmed in time)."""
    STORED = "stored"
    """The row is in the outbox, which delivers it to PostgreSQL through any outage."""
    FAILED = "failed"
    """No row: see ``Failure``."""


Failure = Literal["shutting_down", "ami_down", "mixmonitor_refused", "no_file"]
"""Why a recording ended without a row (a fixed code, never caller data)."""

_ALLOWED: frozenset[tuple[State, State]] = frozenset(
    {
        (State.ANSWERED, State.JOURNALED),
        (State.ANSWERED, State.FAILED),
        (State.JOURNALED, State.STARTING),
        (State.STARTING, State.RECORDING),
        (State.STARTING, State.FAILED),
        (State.RECORDING, State.STOPPING),
        (State.RECORDING, State.ENDED),
        (State.STOPPING, State.ENDED),
        (State.ENDED, State.CLOSED),
        (State.CLOSED, State.STORED),
        (State.CLOSED, State.FAILED),
    }
)

_FAILS_FROM: dict[Failure, State] = {
    "shutting_down": State.ANSWERED,
    "ami_down": State.STARTING,
    "mixmonitor_refused": State.STARTING,
    "no_file": State.CLOSED,
}

FINAL = frozenset({State.STORED, State.FAILED})


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in the recorder, never caller input."""


@dataclass(slots=True)
class Lifecycle:
    """Where one recording is; ``to()`` and ``fail()`` are the only ways to move it."""

    state: State = State.ANSWERED
    failure: Failure | None = None

    @classmethod
    def adopted(cls) -> Lifecycle:
        """A recording a previous run started on a channel that is still up."""
        return cls(State.RECORDING)

    @classmethod
    def recovered(cls) -> Lifecycle:
        """A recording whose call ended while no daemon watched: only its file is left."""
        return cls(State.ENDED)

    @property
    def done(self) -> bool:
        return self.state in FINAL

    def to(self, new: State) -> State:
        if new is State.FAILED:
            raise IllegalTransition("use fail(reason) to fail a recording")
        if (self.state, new) not in _ALLOWED:
            raise IllegalTransition(f"{self.state.value} -> {new.value}")
        self.state = new
        return new

    def fail(self, reason: Failure) -> None:
        if _FAILS_FROM[reason] is not self.state:
            raise IllegalTransition(f"{self.state.value} cannot fail with {reason}")
        self.state, self.failure = State.FAILED, reason
