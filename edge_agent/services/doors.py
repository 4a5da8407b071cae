"""Opening locker doors: at most once per attempt, whatever crashes in between, and always audited.

Every opening (a customer's code, staff loading or retrieving, a remote command, a technician's test)
is an *attempt* with its own id. Before the unlock frame is sent, an intent row keyed by the attempt id
is committed (fsync'd); the unique key means a second opening for the same attempt is refused, also
after a restart. After the board answered, the outcome is recorded and the opening goes into the
hash-chained audit log, in one transaction with the operation's `audited_ms`. An intent found without
an outcome at start-up (the agent died between the two) is marked `unknown` and never sent again.

Every opening is audited, also across a crash: at start-up every operation that may have opened a door
(`opened`, `unknown`, or an interrupted intent) and has no audit row gets one, with what is known: who,
which door, the attempt, `interrupted` when the agent died after the intent (the unlock frame may or may
not have gone out) and the door as its sensor reads at that moment (`door_at_restart`). The locker
service then reconciles the door with its pickup as for any restart.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from devices.lockers.board import LockBoard, LockBoardError, UnlockOutcome, UnlockResult
from edge_agent.services.audit import AuditSink

log = logging.getLogger(__name__)

PURPOSES = ("code", "staff", "remote", "test")


class DoorAlreadyOpenedError(Exception):
    """This attempt already opened (or tried to open) its door once."""

    def __init__(self, attempt: str) -> None:
        super().__init__(f"attempt {attempt} already opened its door once; a new attempt is needed")
        self.attempt = attempt


DoorSensor = Callable[[str], Awaitable[str]]  # compartment id -> "open", "closed" or "unreadable"


def _mark_audited(op_id: str) -> Callable[[sqlite3.Connection], None]:
    def mark(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE door_ops SET audited_ms = ? WHERE op_id = ?", (now_ms(), op_id))

    return mark


@dataclass(frozen=True)
class Compartment:
    id: str
    board: str
    lock: int


@dataclass(frozen=True)
class DoorOpening:
    op_id: str
    attempt: str
    compartment: str
    outcome: UnlockOutcome


class DoorOpener:
    def __init__(self, store: DurableStore, boards: Mapping[str, LockBoard], audit: AuditSink) -> None:
        self._store = store
        self._boards = boards
        self._audit = audit

    async def recover(self, door: DoorSensor | None = None) -> list[str]:
        """At start-up: intents without an outcome become `unknown` (never re-sent), and every operation that
        may have opened a door without being audited is audited now (`door` reads its sensor for the record).
        Returns the interrupted intents' ids."""

        def job(conn: sqlite3.Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
            interrupted = [r[0] for r in conn.execute("SELECT op_id FROM door_ops WHERE state = 'intent'")]
            conn.execute(
                "UPDATE door_ops SET state = 'unknown', finished_ms = ? WHERE state = 'intent'", (now_ms(),)
            )
            unaudited = conn.execute(
                "SELECT op_id, compartment, purpose, attempt, order_id, actor, state FROM door_ops "
                "WHERE state IN ('opened', 'unknown') AND audited_ms IS NULL ORDER BY created_ms"
            ).fetchall()
            return interrupted, unaudited

        interrupted, unaudited = await self._store.write(job)
        for op_id in interrupted:
            log.warning("door operation %s was interrupted by a restart: not repeated; sensors decide", op_id)
        for op_id, compartment, purpose, attempt, order_id, actor, state in unaudited:
            detail: dict[str, Any] = {"op_id": op_id, "attempt": attempt, "result": state, "recovered": True}
            if op_id in interrupted:
                detail["interrupted"] = True  # the agent died after the intent: the frame may have gone out
            if door is not None:
                detail["door_at_restart"] = await door(compartment)
            log.warning("door operation %s on %s (%s) was not audited before the restart: audited now (%s)",
                        op_id, compartment, purpose, detail.get("door_at_restart", "door not read"))
            await self._audit.append(purpose, compartment=compartment, actor=actor, order_id=order_id, detail=detail,
                                     also=_mark_audited(op_id))
        return interrupted

    async def open(
        self,
        compartment: Compartment,
        *,
        purpose: str,
        attempt: str,
        actor: str | None,
        order_id: str | None = None,
        reason: str | None = None,
    ) -> DoorOpening:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}")
        board = self._boards.get(compartment.board)
        if board is None:
            raise LockBoardError(f"compartment {compartment.id}: no board {compartment.board!r}")
        op_id = str(uuid.uuid4())
        created = now_ms()

        def intent(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO door_ops(op_id, compartment, purpose, attempt, order_id, actor, state, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'intent', ?)",
                    (op_id, compartment.id, purpose, attempt, order_id, actor, created),
                )
            except sqlite3.IntegrityError:
                raise DoorAlreadyOpenedError(attempt) from None

        # Durable before the frame goes out: after a crash from here on, this attempt never opens again.
        await self._store.write(intent)
        try:
            outcome = await board.unlock(compartment.lock)
        except LockBoardError as exc:
            log.error("unlocking %s failed: %s", compartment.id, exc)
            outcome = UnlockOutcome(UnlockResult.UNKNOWN, None)
        state = {"opened": "opened", "not_opened": "not_opened", "unknown": "unknown"}[outcome.result.value]
        await self._store.write(
            lambda c: c.execute(
                "UPDATE door_ops SET state = ?, finished_ms = ? WHERE op_id = ?", (state, now_ms(), op_id)
            )
        )
        if outcome.result is not UnlockResult.NOT_OPENED:
            # Opened, or perhaps opened: either way it is an opening to account for.
            detail: dict[str, Any] = {"op_id": op_id, "attempt": attempt, "result": outcome.result.value}
            if reason is not None:
                detail["reason"] = reason  # a technician's test says why
            await self._audit.append(
                purpose,
                compartment=compartment.id,
                actor=actor,
                order_id=order_id,
                detail=detail,
                also=_mark_audited(op_id),
            )
        return DoorOpening(op_id, attempt, compartment.id, outcome)

    def attempts(self, compartment: str) -> list[tuple[str, str, str]]:
        """(attempt, purpose, state) of a compartment's door operations, oldest first."""
        return self._store.read(
            lambda c: [
                (str(r[0]), str(r[1]), str(r[2]))
                for r in c.execute(
                    "SELECT attempt, purpose, state FROM door_ops WHERE compartment = ? ORDER BY created_ms",
                    (compartment,),
                )
            ]
        )

    def code_opened(self, order_id: str) -> bool:
        """Whether a customer's code opened (or may have opened) this order's door."""
        row = self._store.read(
            lambda c: c.execute(
                "SELECT 1 FROM door_ops WHERE order_id = ? AND purpose = 'code' AND state IN ('opened', 'unknown') "
                "LIMIT 1",
                (order_id,),
            ).fetchone()
        )
        return row is not None
