"""Where the event loop stalls: a watchdog thread samples the loop thread's stack whenever the loop has not
ticked for `threshold_s`, and counts the innermost frames of our own code (diagnostics, `--stalls`)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import Counter


def _short(filename: str) -> str:
    return "/".join(filename.split("/")[-2:])


class StallSampler:
    def __init__(self, threshold_s: float = 0.03, tick_s: float = 0.005) -> None:
        self.threshold_s = threshold_s
        self.tick_s = tick_s
        self.samples: Counter[str] = Counter()
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="stall-sampler")

    async def heartbeat(self) -> None:
        self._loop_thread = threading.get_ident()
        self._thread.start()
        try:
            while True:
                self._beat = time.monotonic()
                await asyncio.sleep(self.tick_s)
        finally:
            self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.tick_s):
            if time.monotonic() - self._beat < self.threshold_s:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [
                f for f in stack
                if "/site-packages/" not in f.filename and "/lib/python3" not in f.filename and "<" not in f.filename
            ]
            where = " <- ".join(f"{_short(f.filename)}:{f.name}:{f.lineno}" for f in reversed(ours[-4:]))
            leaf = stack[-1]
            self.samples[f"{_short(leaf.filename)}:{leaf.name}:{leaf.lineno} | {where}"] += 1

    def report(self, top: int = 15) -> str:
        total = sum(self.samples.values())
        every, late = self.tick_s * 1000, self.threshold_s * 1000
        lines = [f"stall samples ({every:.0f} ms each, loop late > {late:.0f} ms): {total}"]
        lines += [f"{n:5d}  {key}" for key, n in self.samples.most_common(top)]
        return "\n".join(lines)
