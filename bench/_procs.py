"""Helper processes of a benchmark (emulators, servers), stopped however the measurement ends."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], wait_s: float = 10) -> None:
    """SIGTERM each process still running, then SIGKILL the ones that did not exit within `wait_s`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
