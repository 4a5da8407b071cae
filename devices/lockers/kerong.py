"""A Kerong KR-CU16 board as a LockBoard (docs/lock-boards.md): one board number on a shared KerongBus.

Every read is a 0x32 status read of the whole board (one 9-byte answer carries all 16 locks, and its
format is the one the vendor documents); an unlock is sent once and its outcome read from the status
that follows it (firmware_bridge.kerong.bus).
"""

from __future__ import annotations

from devices.lockers.board import LockBoardError, LockState, UnlockOutcome, UnlockResult
from firmware_bridge.kerong.bus import KerongBus, KerongBusError
from firmware_bridge.kerong.frames import BOARDS, LOCKS_PER_BOARD, StatusReply

# The bus and the board limits are re-exported: the rest of the agent reaches the lock boards' lower layer here.
__all__ = ["BOARDS", "LOCKS_PER_BOARD", "KerongBoard", "KerongBus", "KerongBusError"]


class KerongBoard:
    def __init__(self, bus: KerongBus, board_number: int, lock_count: int = LOCKS_PER_BOARD) -> None:
        if not 0 <= board_number < BOARDS:
            raise ValueError(f"Kerong board number must be within 0..{BOARDS - 1}, got {board_number}")
        if not 1 <= lock_count <= LOCKS_PER_BOARD:
            raise ValueError(f"a Kerong board has 1..{LOCKS_PER_BOARD} locks, got {lock_count}")
        self.bus = bus
        self.board_number = board_number
        self.lock_count = lock_count
        self.board_id = f"kerong-{board_number}"

    def _check(self, lock: int) -> None:
        if not 1 <= lock <= self.lock_count:
            raise ValueError(f"{self.board_id}: lock number must be within 1..{self.lock_count}, got {lock}")

    @staticmethod
    def _state(status: StatusReply, lock: int) -> LockState:
        return LockState(locked=status.locked(lock), item=status.item(lock))

    async def _status(self) -> StatusReply:
        try:
            return await self.bus.read_status(self.board_number)
        except KerongBusError as exc:
            raise LockBoardError(f"{self.board_id}: {exc.reason}") from exc

    async def read(self, lock: int) -> LockState:
        self._check(lock)
        return self._state(await self._status(), lock)

    async def read_all(self) -> list[LockState]:
        status = await self._status()
        return [self._state(status, lock) for lock in range(1, self.lock_count + 1)]

    async def unlock(self, lock: int) -> UnlockOutcome:
        self._check(lock)
        report = await self.bus.unlock(self.board_number, lock)
        if report.status is None:
            return UnlockOutcome(UnlockResult.UNKNOWN, None)
        state = self._state(report.status, lock)
        return UnlockOutcome(UnlockResult.NOT_OPENED if state.locked else UnlockResult.OPENED, state)
