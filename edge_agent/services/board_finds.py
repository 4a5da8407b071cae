"""Lock boards a bus scan found at a number no `[[lockers.boards]]` names, and the technician's decision to adopt them.

The agent builds its boards from the configuration file, so a find is only a record (table `lock_board_finds`,
migration 10): one row per (bus, number), first seen at the first scan that heard it, its last answer updated by
every later scan, and, once adopted, when, by whom and under which board id. Adopting never builds a board: the
board is used from the next start, once its entry is in the configuration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from cloud_link.ports import DurableStore
from devices.lockers.kerong import LOCKS_PER_BOARD

_SELECT = (
    "SELECT bus, number, first_seen_ms, last_answer_ms, adopted_ms, adopted_by, board_id FROM lock_board_finds"
)
_ALL = _SELECT + " ORDER BY bus, number"
_ONE = _SELECT + " WHERE bus = ? AND number = ?"


@dataclass
class BoardFind:
    bus: str
    number: int
    first_seen_ms: int
    last_answer_ms: int
    adopted_ms: int | None
    adopted_by: str | None
    board_id: str | None

    @property
    def key(self) -> str:
        return f"{self.bus}:{self.number}"

    def snippet(self, board_id: str) -> str:
        """The `[[lockers.boards]]` entry that makes this board the store's under `board_id`."""
        return (f'[[lockers.boards]]\nid = "{board_id}"\nbus = "{self.bus}"\nnumber = {self.number}\n'
                f"locks = {LOCKS_PER_BOARD}\n")


class BoardFinds:
    """The `lock_board_finds` table's one owner."""

    def __init__(self, db: DurableStore) -> None:
        self._db = db

    def all(self) -> list[BoardFind]:
        """Every find, by bus and number."""
        return [BoardFind(*row) for row in self._db.read(lambda c: c.execute(_ALL).fetchall())]

    def get(self, bus: str, number: int) -> BoardFind | None:
        row = self._db.read(lambda c: c.execute(_ONE, (bus, number)).fetchone())
        return BoardFind(*row) if row else None

    async def record_answers(self, found: Iterable[tuple[str, int]], at_ms: int) -> None:
        """Boards (bus, number) that answered a scan at `at_ms`: new ones are recorded as first seen then, known
        ones keep their first sighting and adoption and get their last answer moved on."""
        rows = [(bus, number, at_ms, at_ms) for bus, number in found]

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO lock_board_finds(bus, number, first_seen_ms, last_answer_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(bus, number) DO UPDATE SET last_answer_ms = excluded.last_answer_ms",
                rows,
            )

        if rows:
            await self._db.write(job)

    async def mark_adopted(self, bus: str, number: int, *, board_id: str, by: str, at_ms: int) -> None:
        """Record the decision to adopt the find (bus, number) as `board_id`; a find not recorded is left alone."""
        await self._db.write(
            lambda c: c.execute(
                "UPDATE lock_board_finds SET adopted_ms = ?, adopted_by = ?, board_id = ? WHERE bus = ? AND number = ?",
                (at_ms, by, board_id, bus, number),
            )
        )
