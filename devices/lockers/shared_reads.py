"""One reading of a board's sensors, shared by everyone who asks for it at about the same time.

The alarm poll and every watched door of a board want the same hook and item bits several times a
second. On RS485 each read holds the bus for about 30 ms (request, 9-byte reply, inter-frame gap), and a
customer's unlock waits for whatever is on the line; a read per watcher per poll would queue the unlocks
behind a train of identical reads. So a board is read once for all askers:

- a reading younger than the asker's `max_age_s` is returned as it is;
- a read already on its way is joined instead of starting another;
- `not_before` (monotonic time) refuses readings whose request left before that moment: a watcher that
  just unlocked a door must not be told "closed" by a reading taken before the unlock.

A failed read (LockBoardError) reaches everyone who joined it; the next ask tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from devices.lockers.board import LockBoard, LockState


class SharedReads:
    def __init__(self, board: LockBoard, clock: Callable[[], float] = time.monotonic) -> None:
        self.board = board
        self._clock = clock
        self._last: list[LockState] | None = None
        self._last_started = float("-inf")
        self._inflight: asyncio.Task[list[LockState]] | None = None
        self._inflight_started = float("-inf")
        self.reads = 0  # reads actually sent to the board (the rest were shared)

    @property
    def last_reading(self) -> tuple[float, list[LockState]] | None:
        """The latest successful reading and the monotonic time its request left; None before the first.
        For health views: looking at it costs the bus nothing."""
        return None if self._last is None else (self._last_started, self._last)

    async def read_all(self, *, max_age_s: float, not_before: float = float("-inf")) -> list[LockState]:
        while True:
            now = self._clock()
            if self._last is not None and self._last_started >= max(not_before, now - max_age_s):
                return self._last
            inflight = self._inflight
            if inflight is None:
                inflight = self._start(now)
            elif self._inflight_started < not_before:
                # On its way, but it left too early for this asker: let it land, then read afresh.
                await asyncio.wait([inflight])
                continue
            # shield: one asker giving up (a cancelled watcher) must not cancel the read for the others.
            return await asyncio.shield(inflight)

    async def read(self, lock: int, *, max_age_s: float, not_before: float = float("-inf")) -> LockState:
        states = await self.read_all(max_age_s=max_age_s, not_before=not_before)
        if not 1 <= lock <= len(states):
            raise ValueError(f"{self.board.board_id}: no lock {lock}")
        return states[lock - 1]

    def _start(self, now: float) -> asyncio.Task[list[LockState]]:
        task = asyncio.get_running_loop().create_task(self._read(now), name=f"read-{self.board.board_id}")
        # Every asker may have given up (cancelled) by the time it fails: retrieve the error regardless.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._inflight, self._inflight_started = task, now
        return task

    async def _read(self, started: float) -> list[LockState]:
        try:
            self.reads += 1
            states = await self.board.read_all()
            if started >= self._last_started:
                self._last, self._last_started = states, started
            return states
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None
