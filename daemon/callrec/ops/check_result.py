"""What one check of ``callrec check`` reports: a status, the check's name, what to fix."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

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


def error_text(exc: BaseException) -> str:
    """An error as a hint may quote it: short, and never an empty string."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the peer"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
