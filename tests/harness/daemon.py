"""``callrec run`` as a process of its own (its CPU, memory and log are its own), for the
end-to-end tests and the benchmarks alike."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout: ClassVar[float] = 60.0
    """Seconds a SIGTERM may take (the drain) before the process is killed."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float | None = None) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
