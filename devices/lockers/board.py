"""What every lock controller offers the locker service, whatever drives it (docs/lock-boards.md).

A board has `lock_count` locks numbered from 1. For each lock it reports whether the lock is latched
(door closed and locked) and, where the compartment has an item sensor, whether something is inside.
An unlock is never retried blindly: a driver that gets no answer reads the status to learn whether the
door opened, and reports what it found.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LockState:
    locked: bool  # door closed and latched (Kerong: hook bit 1)
    item: bool | None  # something inside (Kerong: IR bit 1); None without an item sensor


class UnlockResult(enum.StrEnum):
    OPENED = "opened"  # the board confirmed the lock released (or the status read after shows it open)
    NOT_OPENED = "not_opened"  # the board answered but the lock is still latched (jam, power)
    UNKNOWN = "unknown"  # no answer and no status: the service must read again before doing anything


@dataclass(frozen=True)
class UnlockOutcome:
    result: UnlockResult
    state: LockState | None  # the lock's state as last read, when known


class LockBoardError(Exception):
    """The board did not answer correctly within the bounded retries (timeout, checksum, address)."""


class LockBoard(Protocol):
    board_id: str
    lock_count: int

    async def read(self, lock: int) -> LockState:
        """One lock's state; raises LockBoardError after bounded retries."""
        ...

    async def read_all(self) -> list[LockState]:
        """Every lock's state, index 0 is lock 1."""
        ...

    async def unlock(self, lock: int) -> UnlockOutcome:
        """Release one lock, at most once per call (never retried blindly)."""
        ...
