"""Locker compartments: where each door is (bank, board, lock, row, column), its size, and whether it is in service.

The `compartments` table is written only here (`add`, `set_in_service`), so the copy kept in memory is dropped by
those two writers and is otherwise exact: it is read on every alarm poll (4 times a second) and every request.
Re-adding a compartment updates its place and size but keeps an out-of-service mark.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from cloud_link.ports import DurableStore

SIZES = ("S", "M", "L")


@dataclass(frozen=True)
class CompartmentSpec:
    id: str
    bank: str
    board_id: str
    lock: int
    size: str
    row: int  # 1 = top row
    column: int  # 1 = leftmost
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"compartment {self.id}: size must be one of {SIZES}, got {self.size!r}")
        if self.lock < 1 or self.row < 1 or self.column < 1:
            raise ValueError(f"compartment {self.id}: lock, row and column count from 1")


@dataclass(frozen=True)
class CompartmentInfo:
    spec: CompartmentSpec
    enabled: bool
    oos_reason: str | None


class CompartmentStore:
    def __init__(self, db: DurableStore) -> None:
        self._db = db
        self._cache: list[CompartmentInfo] | None = None

    async def add(self, specs: Iterable[CompartmentSpec]) -> None:
        """Insert or update compartments (their place and size); out-of-service marks are kept."""
        rows = [(s.id, s.bank, s.board_id, s.lock, s.size, s.row, s.column, int(s.enabled)) for s in specs]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO compartments(id, bank, board_id, lock, size, row, col, enabled) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET bank = excluded.bank, "
                "board_id = excluded.board_id, lock = excluded.lock, size = excluded.size, row = excluded.row, "
                "col = excluded.col",
                rows,
            )

        await self._db.write(job)
        self._cache = None

    def all(self) -> list[CompartmentInfo]:
        if self._cache is None:
            self._cache = self._read()
        return list(self._cache)

    def _read(self) -> list[CompartmentInfo]:
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT id, bank, board_id, lock, size, row, col, enabled, oos_reason FROM compartments ORDER BY id"
            ).fetchall()
        )
        return [
            CompartmentInfo(
                CompartmentSpec(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), int(r[5]), int(r[6])),
                bool(r[7]),
                None if r[8] is None else str(r[8]),
            )
            for r in rows
        ]

    def get(self, compartment_id: str) -> CompartmentInfo | None:
        for info in self.all():  # a few hundred at most
            if info.spec.id == compartment_id:
                return info
        return None

    def by_board(self) -> dict[str, list[CompartmentInfo]]:
        """The compartments of each board, in id order (the alarm poll and the reconciliation read by board)."""
        by_board: dict[str, list[CompartmentInfo]] = {}
        for info in self.all():
            by_board.setdefault(info.spec.board_id, []).append(info)
        return by_board

    async def set_in_service(self, compartment_id: str, enabled: bool, reason: str | None = None) -> None:
        await self._db.write(
            lambda c: c.execute(
                "UPDATE compartments SET enabled = ?, oos_reason = ? WHERE id = ?",
                (int(enabled), None if enabled else (reason or "staff"), compartment_id),
            )
        )
        self._cache = None
