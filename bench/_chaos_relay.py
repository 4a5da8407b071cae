"""The relay under the chaos benchmark (our agent, or a peer such as ThingsBoard IoT Gateway) as a process of
its own: started, killed with SIGKILL and started again, its output kept in one log, its RSS sampled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._procs import stop_processes

AGENT_SETTLE_S = 3.0  # the agent's first start: connected and subscribed by then (no log line to wait for)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a zombie has no VmRSS


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, found by the parent field of /proc/<n>/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may hold spaces: the parent comes after the last ")".
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RelayRuns:
    """A relay as a process, killed and started again; its log, its RSS sampled every 0.5 s.

    Each run is the leader of a session of its own, so that a kill takes whatever it started with it (a
    process that spawns helpers, as a gateway may). `whole_tree` sums the RSS of the process and all its
    descendants at each sample (shared pages counted once per process); without it, the main process's only.
    `ready_log`: log lines that say the first run is connected and subscribed (its session on the store broker
    exists before the devices publish); without them, the benchmark waits AGENT_SETTLE_S.
    """

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        whole_tree: bool = False,
        ready_log: tuple[str, ...] = (),
    ) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.whole_tree = whole_tree
        self.ready_log = ready_log
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.peak_rss_kb = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"=== run {self.runs + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.runs += 1

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """After the first start: until the ready lines are in this run's log (or AGENT_SETTLE_S)."""
        if not self.ready_log:
            time.sleep(AGENT_SETTLE_S)
            return
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace").rsplit("=== run ", 1)[-1]
            if all(line in text for line in self.ready_log):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(text.splitlines()[-20:])
        status = self.proc.poll() if self.proc is not None else None
        why = f"exited with status {status}" if status is not None else f"was not ready within {timeout_s:.0f} s"
        raise RuntimeError(f"{self.command[0]} {why} (waiting for {self.ready_log} in {self.log_path}); "
                           f"its log ends:\n{tail}")

    def kill(self) -> None:
        if self.proc is not None:
            self._kill_group()
            self.proc.wait(10)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            stop_processes([self.proc])
            self._kill_group()  # what it started and left behind

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # nothing of the group is left
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                pids = [proc.pid, *_descendants(proc.pid)] if self.whole_tree else [proc.pid]
                total = 0
                for pid in pids:
                    try:
                        total += _rss_kb(pid)
                    except (OSError, ValueError):
                        continue  # a helper that just exited
                self.peak_rss_kb = max(self.peak_rss_kb, total)
                self.peak_processes = max(self.peak_processes, len(pids))
            except (OSError, ValueError):
                continue
