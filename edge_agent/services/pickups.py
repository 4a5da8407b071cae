"""Pickup orders: the one owner of the `pickups` table, shared by the lockers and the pickup shelves.

An order waits either in a locker compartment (`compartment`) or in a pickup-shelf slot (`slot`), never both.
Its state is a `PickupState`, stored as the enum's value (the strings stored since migration 5), and moves only
along `TRANSITIONS`, written once here:

    created   -> loading (a compartment opens for it), ready (put in a shelf slot), cancelled, expired
    loading   -> ready (closed with the item inside), created (the load failed: the compartment is free again)
    ready     -> collected, retrieval (expired or cancelled while loaded: staff must take it out)
    retrieval -> expired, cancelled (staff took it out; which one depends on the hold)

collected, cancelled and expired are final. Every change is one conditional UPDATE (`... AND state = <from>`), so
two writers racing for one order cannot both move it; the callers publish their event only after it committed.
A compartment is taken while an order in `HOLDING_STATES` holds it; a slot while one in `SLOT_HOLDING_STATES` does.

The store runs SQL and nothing else: no events, no codes, no clock of its own (callers pass `now`, in epoch ms).
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cloud_link.ports import DurableStore
from edge_agent.services.locker_compartments import SIZES


class PickupState(enum.StrEnum):
    CREATED = "created"
    LOADING = "loading"
    READY = "ready"
    COLLECTED = "collected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    RETRIEVAL = "retrieval"


S = PickupState
TRANSITIONS: Mapping[PickupState, frozenset[PickupState]] = {
    S.CREATED: frozenset({S.LOADING, S.READY, S.CANCELLED, S.EXPIRED}),
    S.LOADING: frozenset({S.READY, S.CREATED}),
    S.READY: frozenset({S.COLLECTED, S.RETRIEVAL}),
    S.RETRIEVAL: frozenset({S.EXPIRED, S.CANCELLED}),
    S.COLLECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}
# A compartment is taken while a pickup in one of these states holds it.
HOLDING_STATES = (S.LOADING, S.READY, S.RETRIEVAL)
# A shelf slot is taken while a pickup in one of these states holds it.
SLOT_HOLDING_STATES = (S.READY, S.RETRIEVAL)


class PickupTransitionError(Exception):
    """A change of state that TRANSITIONS does not allow: a bug in the caller, never a customer's mistake."""

    def __init__(self, order_id: str, from_state: PickupState, to_state: PickupState) -> None:
        super().__init__(f"order {order_id}: {from_state} -> {to_state} is not a pickup transition")
        self.order_id = order_id
        self.from_state = from_state
        self.to_state = to_state


@dataclass(frozen=True)
class Pickup:
    order_id: str
    size: str
    state: PickupState
    compartment: str | None
    code_issued_by: str
    hold_until_ms: int
    reminder_sent: bool
    created_ms: int
    updated_ms: int
    slot: str | None = None  # a pickup-shelf slot ("B-7") instead of a compartment (edge_agent.services.pickup_shelves)


class Reminder(NamedTuple):
    order_id: str
    compartment: str | None
    slot: str | None
    hold_until_ms: int


@dataclass(frozen=True)
class CompartmentClaim:
    """What `load_into_compartment` found: the order's state and size (None: no such order) and the compartment
    it now holds, loading (None: nothing changed, because the order is not `created` or none is free)."""

    state: PickupState | None
    size: str | None
    compartment: str | None


@dataclass(frozen=True)
class SlotClaim:
    """What `load_into_slot` found: the order's state (None: no such order), the order already in the slot, and
    whether the order is now ready in the slot."""

    state: PickupState | None
    taken_by: str | None
    loaded: bool


@dataclass(frozen=True)
class SlotHolding:
    """The order in a taken shelf slot, as the slot's label and the shelves' views show it."""

    order_id: str
    state: PickupState
    customer: str | None  # masked
    hold_until_ms: int
    released_ms: int | None
    released_by: str | None


_COLUMNS = (
    "order_id, size, state, compartment, code_issued_by, hold_until_ms, reminder_sent, created_ms, updated_ms, slot"
)
_HOLDING = "('loading', 'ready', 'retrieval')"  # HOLDING_STATES, for SQL
_IN_SLOT = "('ready', 'retrieval')"  # SLOT_HOLDING_STATES, for SQL


def _pickup(row: tuple[Any, ...]) -> Pickup:
    return Pickup(
        str(row[0]), str(row[1]), PickupState(row[2]), None if row[3] is None else str(row[3]), str(row[4]),
        int(row[5]), bool(row[6]), int(row[7]), int(row[8]), None if row[9] is None else str(row[9]),
    )


def _check(order_id: str, from_state: PickupState, to_state: PickupState) -> None:
    if to_state not in TRANSITIONS[from_state]:
        raise PickupTransitionError(order_id, from_state, to_state)


class PickupStore:
    def __init__(self, db: DurableStore) -> None:
        self._db = db

    # -- reads ----------------------------------------------------------------------------------

    def get(self, order_id: str) -> Pickup | None:
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM pickups WHERE order_id = ?",  # noqa: S608 - constant columns
                (order_id,),
            ).fetchone()
        )
        return None if row is None else _pickup(row)

    def in_compartment(self, compartment_id: str) -> Pickup | None:
        """The pickup holding `compartment_id` (loading, ready or waiting for retrieval), if any."""
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM pickups WHERE compartment = ? AND state IN {_HOLDING} LIMIT 1",  # noqa: S608
                (compartment_id,),
            ).fetchone()
        )
        return None if row is None else _pickup(row)

    def by_compartment(self) -> dict[str, Pickup]:
        """The pickup holding each taken compartment, by compartment."""
        rows = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM pickups WHERE state IN {_HOLDING} AND compartment IS NOT NULL"  # noqa: S608
            ).fetchall()
        )
        return {p.compartment: p for p in map(_pickup, rows) if p.compartment is not None}

    def retrievals(self, bank: str | None = None) -> list[Pickup]:
        """Loaded compartments' pickups waiting for staff (expired or cancelled), in `bank` if given, oldest first."""
        rows = self._db.read(
            lambda c: c.execute(
                f"SELECT {', '.join('p.' + n for n in _COLUMNS.split(', '))} FROM pickups p "  # noqa: S608
                "JOIN compartments c ON c.id = p.compartment WHERE p.state = 'retrieval' AND (? IS NULL OR c.bank = ?) "
                "ORDER BY p.updated_ms, p.order_id",
                (bank, bank),
            ).fetchall()
        )
        return [_pickup(r) for r in rows]

    def due_for_expiry(self, now: int) -> list[Pickup]:
        """Created or ready pickups whose hold ended, oldest hold first (at most 500 per call)."""
        rows = self._db.read(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM pickups WHERE state IN ('created', 'ready') AND hold_until_ms <= ? "  # noqa: S608
                "ORDER BY hold_until_ms LIMIT 500",
                (now,),
            ).fetchall()
        )
        return [_pickup(r) for r in rows]

    def slot_holdings(self, slot_id: str | None = None) -> dict[str, SlotHolding]:
        """The order in each taken shelf slot (or only in `slot_id`), by slot."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT slot, order_id, state, customer, hold_until_ms, released_ms, released_by FROM pickups "  # noqa: S608
                f"WHERE slot IS NOT NULL AND state IN {_IN_SLOT} AND (? IS NULL OR slot = ?)",
                (slot_id, slot_id),
            ).fetchall()
        )
        return {
            str(r[0]): SlotHolding(
                str(r[1]), PickupState(r[2]), None if r[3] is None else str(r[3]), int(r[4]),
                None if r[5] is None else int(r[5]), None if r[6] is None else str(r[6]),
            )
            for r in rows
        }

    def released_ms(self, order_id: str) -> int | None:
        """When a right code last made this order's slot label flash (None: never, or no such order)."""
        row = self._db.read(
            lambda c: c.execute("SELECT released_ms FROM pickups WHERE order_id = ?", (order_id,)).fetchone()
        )
        return None if row is None or row[0] is None else int(row[0])

    @staticmethod
    def order_on_shelf(conn: sqlite3.Connection, shelf_id: str) -> str | None:
        """An order held in one of the shelf's slots, inside the caller's transaction (removing the shelf)."""
        row = conn.execute(
            "SELECT p.order_id FROM pickups p JOIN shelf_slots s ON s.slot_id = p.slot "  # noqa: S608
            f"WHERE s.shelf_id = ? AND p.state IN {_IN_SLOT} LIMIT 1",
            (shelf_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    # -- writes ---------------------------------------------------------------------------------

    async def create(
        self, order_id: str, size: str, *, code_issued_by: str, hold_until_ms: int, customer: str | None, now: int
    ) -> None:
        await self._db.write(
            lambda c: c.execute(
                f"INSERT INTO pickups({_COLUMNS}, customer) "  # noqa: S608
                "VALUES (?, ?, 'created', NULL, ?, ?, 0, ?, ?, NULL, ?)",
                (order_id, size, code_issued_by, hold_until_ms, now, now, customer),
            )
        )

    async def transition(
        self, order_id: str, to_state: PickupState, *, only_from: PickupState, compartment: str | None, now: int
    ) -> bool:
        """`only_from` -> `to_state`, with the compartment it holds afterwards; False when the order is not (any
        more) in `only_from`. Raises PickupTransitionError for a move TRANSITIONS does not allow."""
        _check(order_id, only_from, to_state)
        return await self._db.write(
            lambda c: c.execute(
                "UPDATE pickups SET state = ?, compartment = ?, updated_ms = ? WHERE order_id = ? AND state = ?",
                (to_state.value, compartment, now, order_id, only_from.value),
            ).rowcount
            == 1
        )

    async def take_due_reminders(self, now: int, before_ms: int) -> list[Reminder]:
        """Ready pickups whose hold ends within `before_ms` and that had no reminder: marked as reminded, and
        returned in order (the caller announces them)."""

        def job(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "UPDATE pickups SET reminder_sent = 1, updated_ms = ? WHERE state = 'ready' AND reminder_sent = 0 "
                "AND hold_until_ms - ? <= ? AND hold_until_ms > ? RETURNING order_id, compartment, slot, hold_until_ms",
                (now, before_ms, now, now),
            ).fetchall()

        rows = await self._db.write(job)
        return sorted(Reminder(str(r[0]), r[1], r[2], int(r[3])) for r in rows)

    async def load_into_compartment(
        self, order_id: str, *, bank: str | None, busy: tuple[str, ...], now: int
    ) -> CompartmentClaim:
        """A `created` order takes the first free, enabled compartment of its size or the next larger ones (in
        `bank` if given, none of `busy`), smallest first, and becomes `loading`: one transaction."""
        _check(order_id, S.CREATED, S.LOADING)

        def pick(conn: sqlite3.Connection) -> CompartmentClaim:
            row = conn.execute("SELECT state, size FROM pickups WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                return CompartmentClaim(None, None, None)
            state, size = PickupState(row[0]), str(row[1])
            if state is not S.CREATED:
                return CompartmentClaim(state, size, None)
            sizes = SIZES[SIZES.index(size) :]
            marks = ", ".join("?" for _ in sizes)
            skip = ", ".join("?" for _ in busy) or "''"
            in_bank = "" if bank is None else "AND c.bank = ? "
            free = conn.execute(
                # Only placeholders are formatted in.
                f"SELECT c.id FROM compartments c WHERE c.enabled = 1 AND c.size IN ({marks}) {in_bank}"  # noqa: S608
                f"AND c.id NOT IN ({skip}) AND NOT EXISTS (SELECT 1 FROM pickups p WHERE p.compartment = c.id "
                f"AND p.state IN {_HOLDING}) "
                "ORDER BY CASE c.size WHEN 'S' THEN 0 WHEN 'M' THEN 1 ELSE 2 END, c.id LIMIT 1",
                (*sizes, *(() if bank is None else (bank,)), *busy),
            ).fetchone()
            if free is None:
                return CompartmentClaim(state, size, None)
            conn.execute(
                "UPDATE pickups SET state = 'loading', compartment = ?, updated_ms = ? WHERE order_id = ?",
                (free[0], now, order_id),
            )
            return CompartmentClaim(state, size, str(free[0]))

        return await self._db.write(pick)

    async def load_into_slot(self, order_id: str, slot_id: str, *, now: int) -> SlotClaim:
        """A `created` order becomes `ready` in the shelf slot `slot_id` if no order holds it: one transaction."""
        _check(order_id, S.CREATED, S.READY)

        def job(conn: sqlite3.Connection) -> SlotClaim:
            row = conn.execute("SELECT state FROM pickups WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                return SlotClaim(None, None, False)
            state = PickupState(row[0])
            if state is not S.CREATED:
                return SlotClaim(state, None, False)
            taken = conn.execute(
                f"SELECT order_id FROM pickups WHERE slot = ? AND state IN {_IN_SLOT} LIMIT 1",  # noqa: S608
                (slot_id,),
            ).fetchone()
            if taken is not None:
                return SlotClaim(state, str(taken[0]), False)
            conn.execute(
                "UPDATE pickups SET state = 'ready', slot = ?, compartment = NULL, released_ms = NULL, "
                "released_by = NULL, updated_ms = ? WHERE order_id = ? AND state = 'created'",
                (slot_id, now, order_id),
            )
            return SlotClaim(state, None, True)

        return await self._db.write(job)

    async def mark_released(self, order_id: str, terminal: str, *, now: int) -> None:
        """A right code for a ready order in a slot: when and at which screen (its label flashes)."""
        await self._db.write(
            lambda c: c.execute(
                "UPDATE pickups SET released_ms = ?, released_by = ?, updated_ms = ? WHERE order_id = ? "
                "AND state = 'ready'",
                (now, terminal, now, order_id),
            )
        )
