"""Pickup lockers: compartments, loading, collecting, expiry, alarms and reconciliation after a restart.

Issue 4, parts 3, 5 and 6 (DESIGN.md section 7):
- Compartments map a bank, a board and a lock to an id ("A-12"), a size (S, M, L) and a place in the bank
  (row and column, for "Door 12 is open: second row from the top, third from the left").
- Pickups: `create_pickup` (cloud `pickup.create`), `cancel_pickup`; `start_load` picks a free compartment of
  the size (or the next larger one), opens it and watches the door: closed with an item inside is
  `pickup.ready`, closed empty is `pickup.load_failed`. `collect` checks the code (PickupCodes: throttled per
  terminal, answers never tell whether a code exists), opens the door and watches it: closed empty is
  `pickup.collected` (the code is used up only then), closed with the item still inside is
  `pickup.not_collected` and the pickup stays ready with its code valid. `tick` sends `pickup.reminder`
  24 h before the hold ends and `pickup.expired` after it (the pickup then waits for staff: `retrieval`);
  `start_retrieval` opens it for staff, closed empty is `pickup.retrieved` and the compartment is free.
- Every door opening goes through DoorOpener (once per attempt, durable intent, audited).
- `alarm.code_guessing` when PickupCodes sees unusual failure rates store-wide (unless the caller set its own
  hook).
- Alarms (`run`, every `poll_s`): a door open with no opening in progress is `alarm.door_forced` and an
  `uncommanded` audit row, once per incident; a door open longer than `door_open_alarm_s` is
  `alarm.door_left_open`, once per incident; an opening whose lock is still latched after `jam_s` puts the
  compartment out of service with `alarm.lock_jammed`.
- `recover` (start-up): interrupted openings are never repeated (DoorOpener.recover); every door and item
  sensor is read and compared with the database, differences raise `alarm.state_mismatch`; a door found
  open for a load or collect in progress is watched to its end (without opening it again).
Every state change is committed (fsync'd) before its event is published.

Pickup shelves (edge_agent.services.pickup_shelves, `attach_shelves`) share this service's pickups: the same
codes and the one code check in `collect` (an order in a shelf slot is dispatched to the shelves' `release`),
the same expiry clock (`tick`) and `cancel_pickup`; their events carry `slot` and `shelf` instead of
`compartment` (`place_fields`). The service needs no board for them: a store with shelves only has none.

Doors: a lock board reports the hook ("locked": closed and latched). An unlatched lock reads as an open
door: the service cannot tell an unlatched closed door from an open one, and treats both as open.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore, EventSink
from devices.lockers.board import LockBoard, LockBoardError, LockState, UnlockResult
from devices.lockers.shared_reads import SharedReads
from edge_agent.services.doors import Compartment as DoorCompartment
from edge_agent.services.doors import DoorAlreadyOpenedError, DoorOpener, DoorOpening
from edge_agent.services.pickup_codes import GuessingAlarm, PickupCodeError, PickupCodes, VerifyStatus

log = logging.getLogger(__name__)

SIZES = ("S", "M", "L")
PICKUP_STATES = ("created", "loading", "ready", "collected", "cancelled", "expired", "retrieval")
# A compartment is taken while a pickup in one of these states holds it.
HOLDING_STATES = ("loading", "ready", "retrieval")
DAY_MS = 24 * 3600 * 1000
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")

MSG_WRONG = "This code does not open a door. Please check it and try again."
MSG_UNAVAILABLE = "This door cannot be opened right now. Please ask a member of staff."


class LockerError(Exception):
    """A locker request could not be carried out; the message says why (never contains a code)."""


class UncommandedAudit(Protocol):
    async def append(
        self, kind: Any, *, compartment: str | None, actor: str | None, order_id: str | None, detail: dict[str, Any]
    ) -> Any: ...


@dataclass(frozen=True)
class LockerTimings:
    poll_s: float = 0.25  # sensor polling: alarms within 2 s (issue 4 part 5)
    jam_s: float = 10.0  # an unlocked door still latched after this long: jammed
    load_timeout_s: float = 300.0  # how long a load may keep its door open
    collect_timeout_s: float = 300.0
    door_open_alarm_s: float = 60.0
    reminder_before_ms: int = DAY_MS

    def __post_init__(self) -> None:
        for name in ("poll_s", "jam_s", "load_timeout_s", "collect_timeout_s", "door_open_alarm_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LockerTimings.{name} must be positive")


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


@dataclass(frozen=True)
class Pickup:
    order_id: str
    size: str
    state: str
    compartment: str | None
    code_issued_by: str
    hold_until_ms: int
    reminder_sent: bool
    created_ms: int
    updated_ms: int
    slot: str | None = None  # a pickup-shelf slot ("B-7") instead of a compartment (edge_agent.services.pickup_shelves)


def place_fields(compartment: str | None, slot: str | None) -> dict[str, Any]:
    """Where an order waits, as pickup.* events say it: {"compartment": id} for a locker (None when not
    loaded), {"slot": "B-7", "shelf": "B"} for a pickup-shelf slot (slot ids are "<shelf_id>-<position>")."""
    if slot is not None:
        return {"slot": slot, "shelf": slot.rsplit("-", 1)[0]}
    return {"compartment": compartment}


class SlotRelease(Protocol):
    """The pickup shelves, as the shared code check needs them (edge_agent.services.pickup_shelves)."""

    async def release(self, pickup: Pickup, terminal: str) -> CollectResult: ...

    async def slot_changed(self, pickup: Pickup) -> None: ...


class CollectStatus(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED_OUT = "locked_out"
    UNAVAILABLE = "unavailable"  # a valid code, but its door is out of service: staff must help
    ELSEWHERE = "elsewhere"  # a valid code typed at another bank's screen: nothing opens here
    SHELF = "shelf"  # a valid code of an order on a pickup shelf: its slot's label flashes, staff hand it over


@dataclass(frozen=True)
class CollectResult:
    status: CollectStatus
    message: str
    compartment: str | None = None
    seconds_left: int = 0
    door: dict[str, Any] | None = None  # door_place(): the opened door, for the screen to say in its language
    bank: str | None = None  # ELSEWHERE: the bank the parcel is in
    slot: dict[str, Any] | None = None  # SHELF: {slot_id, shelf, shelf_name, position}, for each screen's language


@dataclass(frozen=True)
class OpenAlarm:
    kind: str  # out_of_service | door_forced | door_left_open | code_guessing
    compartment: str | None
    since_ms: int | None  # when the door was first seen open, where known
    message: str


@dataclass(frozen=True)
class LoadStarted:
    order_id: str
    compartment: str
    message: str
    door: dict[str, Any] | None = None  # door_place()


def _ordinal(n: int) -> str:
    return ORDINALS[n - 1] if 1 <= n <= len(ORDINALS) else f"number {n}"


def door_place(spec: CompartmentSpec) -> dict[str, Any]:
    """The door as people find it: its number on the door (the id's last digits) and its row and column,
    so each screen can say it in its own language."""
    digits = re.search(r"(\d+)$", spec.id)
    number = str(int(digits.group(1))) if digits else spec.id
    return {"compartment": spec.id, "number": number, "row": spec.row, "column": spec.column}


def door_message(spec: CompartmentSpec) -> str:
    """'Door 12 is open: second row from the top, third from the left'."""
    place = door_place(spec)
    return (
        f"Door {place['number']} is open: {_ordinal(spec.row)} row from the top, "
        f"{_ordinal(spec.column)} from the left"
    )


@dataclass
class _Opening:
    """A door the service opened (or found open for a flow in progress) and is watching."""

    kind: str  # load | collect | retrieval | test
    order_id: str
    spec: CompartmentSpec
    attempt: str
    resumed: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class _Incident:
    since: float  # monotonic time the door was first seen open
    commanded: bool
    left_open_raised: bool = False


_PICKUP_COLUMNS = (
    "order_id, size, state, compartment, code_issued_by, hold_until_ms, reminder_sent, created_ms, updated_ms, slot"
)


def _pickup(row: tuple[Any, ...]) -> Pickup:
    return Pickup(
        str(row[0]), str(row[1]), str(row[2]), None if row[3] is None else str(row[3]), str(row[4]), int(row[5]),
        bool(row[6]), int(row[7]), int(row[8]), None if row[9] is None else str(row[9]),
    )


class LockerService:
    def __init__(
        self,
        db: DurableStore,
        boards: Mapping[str, LockBoard],
        doors: DoorOpener,
        codes: PickupCodes,
        *,
        audit: UncommandedAudit,
        events: EventSink,
        timings: LockerTimings | None = None,
        clock: Callable[[], int] = now_ms,
        alarm_signal: Callable[[bool], None] | None = None,
    ) -> None:
        self._db = db
        self._boards = boards
        # Watchers and the alarm poll share one read per board per poll period (devices/lockers/shared_reads).
        self._reads = {board_id: SharedReads(board) for board_id, board in boards.items()}
        self._doors = doors
        self._codes = codes
        self._audit = audit
        self._events = events
        self.timings = timings or LockerTimings()
        self._clock = clock
        self._compartment_cache: list[CompartmentInfo] | None = None
        self._openings: dict[str, _Opening] = {}  # by compartment id
        self._incidents: dict[str, _Incident] = {}  # doors seen open by the alarm loop, by compartment id
        self._commanded: set[str] = set()  # opened by us; cleared once the alarm loop sees the door latched
        self._codes_to_send: dict[str, str] = {}  # agent-issued codes until pickup.ready carries them
        self._tasks: set[asyncio.Task[None]] = set()
        # The LED and buzzer (GPIO), told after every poll whether an alarm is open.
        self._alarm_signal = alarm_signal
        self._shelves: SlotRelease | None = None
        if codes.on_alarm is None:
            codes.on_alarm = self._guessing

    async def _guessing(self, alarm: GuessingAlarm) -> None:
        await self._publish(
            "alarm.code_guessing",
            {"failures": alarm.failures, "window_s": alarm.window_s, "terminals": list(alarm.terminals)},
        )

    def attach_shelves(self, shelves: SlotRelease) -> None:
        """Pickup shelves share this service's code check, expiry and cancel: a right code for an order in a
        slot goes to `shelves.release`; expiry and cancel of one tell `shelves.slot_changed`."""
        self._shelves = shelves

    async def _slot_changed(self, order_id: str) -> None:
        pickup = self.pickup(order_id)
        if self._shelves is not None and pickup is not None and pickup.slot is not None:
            try:
                await self._shelves.slot_changed(pickup)
            except Exception:  # the label is cosmetic next to the state already stored and announced
                log.exception("pickup shelf: updating the slot of order %s failed", order_id)

    # -- compartments ---------------------------------------------------------------------------

    async def add_compartments(self, specs: Iterable[CompartmentSpec]) -> None:
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
        self._compartment_cache = None

    def compartments(self) -> list[CompartmentInfo]:
        # Read on every poll (4 times a second) and every request: kept in memory, and only this service
        # writes the table, so its two writers drop the copy.
        if self._compartment_cache is None:
            self._compartment_cache = self._read_compartments()
        return list(self._compartment_cache)

    def _read_compartments(self) -> list[CompartmentInfo]:
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

    def compartment(self, compartment_id: str) -> CompartmentInfo:
        for info in self.compartments():  # a few hundred at most
            if info.spec.id == compartment_id:
                return info
        raise LockerError(f"no compartment {compartment_id!r}")

    async def set_in_service(self, compartment_id: str, enabled: bool, reason: str | None = None) -> None:
        await self._db.write(
            lambda c: c.execute(
                "UPDATE compartments SET enabled = ?, oos_reason = ? WHERE id = ?",
                (int(enabled), None if enabled else (reason or "staff"), compartment_id),
            )
        )
        self._compartment_cache = None

    def board_readings(self) -> dict[str, tuple[float, list[LockState]] | None]:
        """Each polled board's latest sensor reading (monotonic time its request left, lock states), as the
        alarm loop and the door watchers shared it: the dashboard shows these without a read of its own."""
        return {board_id: reads.last_reading for board_id, reads in self._reads.items()}

    def retrievals(self, bank: str | None = None) -> list[Pickup]:
        """Pickups waiting for staff to take them out (expired or cancelled while loaded), oldest first."""
        rows = self._db.read(
            lambda c: c.execute(
                f"SELECT {', '.join('p.' + n for n in _PICKUP_COLUMNS.split(', '))} FROM pickups p "  # noqa: S608
                "JOIN compartments c ON c.id = p.compartment WHERE p.state = 'retrieval' AND (? IS NULL OR c.bank = ?) "
                "ORDER BY p.updated_ms, p.order_id",
                (bank, bank),
            ).fetchall()
        )
        return [_pickup(r) for r in rows]

    def open_alarms(self, bank: str | None = None) -> list[OpenAlarm]:
        """What staff must look at now: compartments out of service, doors open without a command or
        open too long, and suspected code guessing (store-wide)."""
        infos = [i for i in self.compartments() if bank is None or i.spec.bank == bank]
        now_mono, now_ms = time.monotonic(), self._clock()
        alarms: list[OpenAlarm] = []
        for info in infos:
            cid = info.spec.id
            if not info.enabled:
                message = f"Door {cid} is out of service ({info.oos_reason})."
                alarms.append(OpenAlarm("out_of_service", cid, None, message))
            incident = self._incidents.get(cid)
            if incident is None:
                continue
            since = now_ms - int((now_mono - incident.since) * 1000)
            if not incident.commanded:
                alarms.append(OpenAlarm("door_forced", cid, since, f"Door {cid} was opened without a command."))
            elif incident.left_open_raised:
                alarms.append(OpenAlarm("door_left_open", cid, since, f"Door {cid} has been left open."))
        if self._codes.guessing_suspected:
            alarms.append(OpenAlarm("code_guessing", None, None, "Unusually many wrong pickup codes were typed."))
        return alarms

    # -- pickups --------------------------------------------------------------------------------

    @property
    def codes(self) -> PickupCodes:
        return self._codes

    def pickup(self, order_id: str) -> Pickup | None:
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_PICKUP_COLUMNS} FROM pickups WHERE order_id = ?",  # noqa: S608 - constant columns
                (order_id,),
            ).fetchone()
        )
        return None if row is None else _pickup(row)

    def holding_pickups(self) -> dict[str, Pickup]:
        """The pickup holding each taken compartment (loading, ready or waiting for retrieval), by compartment."""
        rows = self._db.read(
            lambda c: c.execute(
                f"SELECT {_PICKUP_COLUMNS} FROM pickups WHERE state IN (?, ?, ?) AND compartment IS NOT NULL",  # noqa: S608
                HOLDING_STATES,
            ).fetchall()
        )
        return {p.compartment: p for p in map(_pickup, rows) if p.compartment is not None}

    def door_states(self) -> dict[str, tuple[LockState, float]]:
        """Each compartment's door and item as of the latest sensor reading (the alarm poll reads every board
        every `poll_s`), with the reading's age in seconds; compartments whose board was never read are absent.
        Reads nothing from the boards itself."""
        now = time.monotonic()
        out: dict[str, tuple[LockState, float]] = {}
        for info in self.compartments():
            reads = self._reads.get(info.spec.board_id)
            latest = None if reads is None else reads.last_reading
            if latest is not None and 1 <= info.spec.lock <= len(latest[1]):
                out[info.spec.id] = (latest[1][info.spec.lock - 1], max(0.0, now - latest[0]))
        return out

    def opening_kind(self, compartment_id: str) -> str | None:
        """What the door is open for right now (load, collect, retrieval, test), if the service opened it."""
        opening = self._openings.get(compartment_id)
        return None if opening is None else opening.kind

    def _pickup_in(self, compartment_id: str) -> Pickup | None:
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT {_PICKUP_COLUMNS} FROM pickups WHERE compartment = ? AND state IN (?, ?, ?) LIMIT 1",  # noqa: S608
                (compartment_id, *HOLDING_STATES),
            ).fetchone()
        )
        return None if row is None else _pickup(row)

    async def _set_state(self, order_id: str, state: str, compartment: str | None, *, only_from: str) -> bool:
        now = self._clock()
        return await self._db.write(
            lambda c: c.execute(
                "UPDATE pickups SET state = ?, compartment = ?, updated_ms = ? WHERE order_id = ? AND state = ?",
                (state, compartment, now, order_id, only_from),
            ).rowcount
            == 1
        )

    async def create_pickup(
        self, order_id: str, size: str, hold_until_ms: int, code: str | None = None, *, customer: str | None = None
    ) -> str | None:
        """A new pickup order (`pickup.create`); returns the code when the agent issued it, else None.
        `customer` is the customer's name already masked (pickup_shelves.mask_customer): never the full name."""
        if size not in SIZES:
            raise LockerError(f"order {order_id}: size must be one of {SIZES}")
        existing = self.pickup(order_id)
        if existing is not None:
            raise LockerError(f"order {order_id} already exists ({existing.state})")
        issued = await self._codes.issue(order_id, hold_until_ms, code)
        now = self._clock()
        by = "agent" if code is None else "cloud"
        await self._db.write(
            lambda c: c.execute(
                f"INSERT INTO pickups({_PICKUP_COLUMNS}, customer) "  # noqa: S608
                "VALUES (?, ?, 'created', NULL, ?, ?, 0, ?, ?, NULL, ?)",
                (order_id, size, by, hold_until_ms, now, now, customer),
            )
        )
        if code is None:
            self._codes_to_send[order_id] = issued
            return issued
        return None

    async def cancel_pickup(self, order_id: str) -> Pickup:
        """`pickup.cancel`: the code dies; a loaded compartment waits for staff (retrieval)."""
        pickup = self.pickup(order_id)
        if pickup is None:
            raise LockerError(f"no order {order_id}")
        if pickup.state == "loading":
            raise LockerError(f"order {order_id} is being loaded; cancel it once the door is closed")
        if pickup.state not in ("created", "ready"):
            raise LockerError(f"order {order_id} is {pickup.state}; it cannot be cancelled")
        if pickup.compartment is not None and pickup.compartment in self._openings:
            raise LockerError(f"order {order_id}: its door is open; cancel it once the door is closed")
        await self._codes.cancel(order_id)
        new_state = "retrieval" if pickup.state == "ready" else "cancelled"
        if not await self._set_state(order_id, new_state, pickup.compartment, only_from=pickup.state):
            raise LockerError(f"order {order_id} changed while it was being cancelled")
        self._codes_to_send.pop(order_id, None)
        await self._publish(
            "pickup.cancelled",
            {
                "order_id": order_id,
                **place_fields(pickup.compartment, pickup.slot),
                "retrieval": new_state == "retrieval",
            },
        )
        await self._slot_changed(order_id)
        result = self.pickup(order_id)
        assert result is not None
        return result

    # -- loading --------------------------------------------------------------------------------

    async def start_load(self, order_id: str, actor: str, *, bank: str | None = None) -> LoadStarted:
        """Staff or a courier loads `order_id`: a free compartment of its size (or larger) opens, in `bank`
        when given (the bank whose screen the courier stands at)."""
        size_rank = {s: i for i, s in enumerate(SIZES)}
        now = self._clock()
        busy = tuple(self._openings)

        def pick(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT state, size FROM pickups WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                raise LockerError(f"no order {order_id}")
            if row[0] != "created":
                raise LockerError(f"order {order_id} is {row[0]}; only a created order can be loaded")
            sizes = SIZES[size_rank[str(row[1])] :]
            marks = ", ".join("?" for _ in sizes)
            skip = ", ".join("?" for _ in busy) or "''"
            in_bank = "" if bank is None else "AND c.bank = ? "
            free = conn.execute(
                # Only placeholders are formatted in.
                f"SELECT c.id FROM compartments c WHERE c.enabled = 1 AND c.size IN ({marks}) {in_bank}"  # noqa: S608
                f"AND c.id NOT IN ({skip}) AND NOT EXISTS (SELECT 1 FROM pickups p WHERE p.compartment = c.id "
                "AND p.state IN ('loading', 'ready', 'retrieval')) "
                "ORDER BY CASE c.size WHEN 'S' THEN 0 WHEN 'M' THEN 1 ELSE 2 END, c.id LIMIT 1",
                (*sizes, *(() if bank is None else (bank,)), *busy),
            ).fetchone()
            if free is None:
                where = "" if bank is None else f" in bank {bank}"
                raise LockerError(f"order {order_id}: no free compartment of size {row[1]} or larger{where}")
            conn.execute(
                "UPDATE pickups SET state = 'loading', compartment = ?, updated_ms = ? WHERE order_id = ?",
                (free[0], now, order_id),
            )
            return str(free[0])

        compartment_id = await self._db.write(pick)
        spec = self.compartment(compartment_id).spec
        opening = _Opening("load", order_id, spec, f"load-{order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="staff", actor=actor)
        return LoadStarted(order_id, compartment_id, door_message(spec), door_place(spec))

    async def start_retrieval(self, order_id: str, actor: str) -> LoadStarted:
        """Staff take out an expired or cancelled order: its door opens; closed empty is `pickup.retrieved`."""
        pickup = self.pickup(order_id)
        if pickup is None or pickup.state != "retrieval" or pickup.compartment is None:
            raise LockerError(f"order {order_id} is not waiting for retrieval")
        spec = self.compartment(pickup.compartment).spec
        if spec.id in self._openings:
            raise LockerError(f"compartment {spec.id} is already open")
        opening = _Opening("retrieval", order_id, spec, f"retrieval-{order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="staff", actor=actor)
        return LoadStarted(order_id, spec.id, door_message(spec), door_place(spec))

    async def _retrieval_finished(self, opening: _Opening, closed: LockState | None) -> None:
        spec = opening.spec
        if closed is None:
            return  # the alarm loop reports the open door; staff may try again
        if closed.item:
            payload = {"order_id": opening.order_id, "compartment": spec.id, "reason": "item_inside"}
            await self._publish("pickup.retrieval_failed", payload)
            return
        pickup = self.pickup(opening.order_id)
        if pickup is None:
            return
        final = "expired" if pickup.hold_until_ms <= self._clock() else "cancelled"
        if await self._set_state(opening.order_id, final, spec.id, only_from="retrieval"):
            await self._publish("pickup.retrieved", {"order_id": opening.order_id, "compartment": spec.id})

    # -- technician's test ----------------------------------------------------------------------

    async def test_open(self, compartment_id: str, *, actor: str, reason: str) -> DoorOpening:
        """A technician test-opens a door: once, through DoorOpener (audited as `test` with who and why), in
        service or not. The door counts as commanded until it is latched again, so no door_forced alarm."""
        spec = self.compartment(compartment_id).spec
        current = self._openings.get(spec.id)
        if current is not None:
            raise LockerError(f"compartment {spec.id} is open for a {current.kind} right now")
        held = self._pickup_in(spec.id)
        opening = _Opening("test", held.order_id if held else "", spec, f"test-{spec.id}-{uuid.uuid4()}")
        self._openings[spec.id] = opening  # before the frame goes out: the alarm loop must not call it forced
        self._commanded.add(spec.id)
        try:
            result = await self._doors.open(
                DoorCompartment(spec.id, spec.board_id, spec.lock),
                purpose="test",
                attempt=opening.attempt,
                actor=actor,
                order_id=held.order_id if held else None,
                reason=reason,
            )
        except (LockBoardError, DoorAlreadyOpenedError) as exc:
            self._openings.pop(spec.id, None)
            raise LockerError(f"compartment {spec.id} could not be opened") from exc
        task = asyncio.get_running_loop().create_task(self._watch_test(opening), name=f"locker-test-{spec.id}")
        opening.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return result

    async def _watch_test(self, opening: _Opening) -> None:
        """Hold the compartment (nothing loads into or collects from it) until its door is latched again, or
        `collect_timeout_s`; after that the alarm loop reports a door left open as for any other opening."""
        spec = opening.spec
        since = time.monotonic()
        try:
            # Unlatched within jam_s (else the lock did not release: nothing to hold), then latched again.
            if await self._poll_until(spec, False, self.timings.jam_s, since) is not None:
                await self._poll_until(spec, True, self.timings.collect_timeout_s, since)
        except Exception:
            log.exception("watching the test opening of %s failed", spec.id)
        finally:
            if self._openings.get(spec.id) is opening:
                del self._openings[spec.id]

    # -- collecting -----------------------------------------------------------------------------

    async def collect(self, terminal: str, code: str, *, bank: str | None = None) -> CollectResult:
        """A customer typed `code` at `terminal`: OK opens the door; every failure reads the same. With
        `bank` (the screen's bank), a parcel in another bank opens nothing and the answer names its bank."""
        try:
            outcome = await self._codes.verify(terminal, code)
        except PickupCodeError as exc:
            raise LockerError(str(exc)) from exc
        if outcome.status is VerifyStatus.LOCKED_OUT:
            return CollectResult(
                CollectStatus.LOCKED_OUT,
                f"Too many wrong codes. Please try again in {outcome.seconds_left} seconds.",
                seconds_left=outcome.seconds_left,
            )
        if outcome.status is not VerifyStatus.OK or outcome.order_id is None:
            return CollectResult(CollectStatus.WRONG, MSG_WRONG)
        pickup = self.pickup(outcome.order_id)
        if pickup is not None and pickup.state == "ready" and pickup.slot is not None and self._shelves is not None:
            # On a pickup shelf: the same check let it through; its slot's label flashes (any screen will do).
            return await self._shelves.release(pickup, terminal)
        if pickup is None or pickup.state != "ready" or pickup.compartment is None:
            # A code for an order not (yet) in a compartment opens nothing, and reads like any wrong code.
            return CollectResult(CollectStatus.WRONG, MSG_WRONG)
        info = self.compartment(pickup.compartment)
        if bank is not None and info.spec.bank != bank:
            # Only the code's holder learns this; the code stays valid for the right screen.
            return CollectResult(
                CollectStatus.ELSEWHERE,
                f"Your parcel is in locker {info.spec.bank}. Please type your code on that locker's screen.",
                bank=info.spec.bank,
            )
        current = self._openings.get(info.spec.id)
        if current is not None and current.order_id == pickup.order_id:
            # Typed again while its door is open: never a second opening.
            return CollectResult(CollectStatus.OK, door_message(info.spec), info.spec.id, door=door_place(info.spec))
        if not info.enabled or current is not None:
            return CollectResult(CollectStatus.UNAVAILABLE, MSG_UNAVAILABLE, info.spec.id)
        opening = _Opening("collect", pickup.order_id, info.spec, f"collect-{pickup.order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="code", actor=terminal)
        return CollectResult(CollectStatus.OK, door_message(info.spec), info.spec.id, door=door_place(info.spec))

    # -- openings and their watchers ------------------------------------------------------------

    async def _open_and_watch(self, opening: _Opening, *, purpose: str, actor: str) -> None:
        spec = opening.spec
        self._openings[spec.id] = opening  # before the frame goes out: the alarm loop must not call it forced
        self._commanded.add(spec.id)
        try:
            result = await self._doors.open(
                DoorCompartment(spec.id, spec.board_id, spec.lock),
                purpose=purpose,
                attempt=opening.attempt,
                actor=actor,
                order_id=opening.order_id,
            )
        except (LockBoardError, DoorAlreadyOpenedError) as exc:
            self._openings.pop(spec.id, None)
            log.error("opening %s for order %s failed: %s", spec.id, opening.order_id, exc)
            if opening.kind == "load":
                await self._load_failed(opening, "board_error")
            raise LockerError(f"compartment {spec.id} could not be opened") from exc
        first = result.outcome.state
        already_open = result.outcome.result is UnlockResult.OPENED and first is not None and not first.locked
        self._spawn(opening, already_open)

    def _spawn(self, opening: _Opening, opened: bool) -> None:
        self._openings[opening.spec.id] = opening
        self._commanded.add(opening.spec.id)
        task = asyncio.get_running_loop().create_task(
            self._watch(opening, opened), name=f"locker-{opening.kind}-{opening.spec.id}"
        )
        opening.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, spec: CompartmentSpec, not_before: float = float("-inf")) -> LockState | None:
        reads = self._reads.get(spec.board_id)
        if reads is None:
            return None
        try:
            return await reads.read(spec.lock, max_age_s=self.timings.poll_s, not_before=not_before)
        except (LockBoardError, ValueError) as exc:
            log.warning("reading %s: %s", spec.id, exc)
            return None

    async def _poll_until(
        self, spec: CompartmentSpec, want_locked: bool, timeout_s: float, not_before: float
    ) -> LockState | None:
        """Until the door is (un)latched as wanted, by readings taken after `not_before` (the unlock)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = await self._read(spec, not_before)
            if state is not None and state.locked == want_locked:
                return state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.timings.poll_s)

    async def _until_opened(self, opening: _Opening, since: float) -> LockState | None:
        """After an unlock whose outcome was not seen (no status, or read latched): the door unlatched, or
        latched with the item sensor changed (a parcel in after a load, gone after a collect: the door was
        opened and shut between two readings, which a lost status read can hide); None after `jam_s`."""
        item_before = opening.kind != "load"
        deadline = time.monotonic() + self.timings.jam_s
        while True:
            state = await self._read(opening.spec, since)
            if state is not None and (not state.locked or (state.item is not None and state.item != item_before)):
                return state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.timings.poll_s)

    async def _watch(self, opening: _Opening, opened: bool) -> None:
        spec = opening.spec
        t = self.timings
        since = time.monotonic()  # the unlock is done: only readings from now on tell about this opening
        try:
            closed: LockState | None = None
            if not opened:
                seen = await self._until_opened(opening, since)
                if seen is None:
                    await self._jammed(opening)
                    return
                if seen.locked:
                    closed = seen  # it opened and closed between two readings: the item sensor tells
            if closed is None:
                timeout = t.load_timeout_s if opening.kind == "load" else t.collect_timeout_s
                closed = await self._poll_until(spec, True, timeout, since)
            if opening.kind == "load":
                await self._load_finished(opening, closed)
            elif opening.kind == "retrieval":
                await self._retrieval_finished(opening, closed)
            else:
                await self._collect_finished(opening, closed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watching %s for order %s failed", spec.id, opening.order_id)
        finally:
            if self._openings.get(spec.id) is opening:
                del self._openings[spec.id]

    async def _jammed(self, opening: _Opening) -> None:
        spec = opening.spec
        log.error("compartment %s: unlocked for order %s but still latched: jammed", spec.id, opening.order_id)
        await self.set_in_service(spec.id, False, "jammed")
        self._commanded.discard(spec.id)
        await self._publish(
            "alarm.lock_jammed",
            {
                "compartment": spec.id,
                "order_id": opening.order_id,
                "during": opening.kind,
                "after_s": self.timings.jam_s,
            },
        )
        if opening.kind == "load":
            await self._load_failed(opening, "jammed")

    async def _load_failed(self, opening: _Opening, reason: str) -> None:
        if await self._set_state(opening.order_id, "created", None, only_from="loading"):
            await self._publish(
                "pickup.load_failed",
                {"order_id": opening.order_id, "compartment": opening.spec.id, "reason": reason},
            )

    async def _load_finished(self, opening: _Opening, closed: LockState | None) -> None:
        spec = opening.spec
        if closed is None:
            state = await self._read(spec)
            if state is not None and state.item:
                # Something is inside a door nobody closed: keep it out of use until staff check it.
                await self.set_in_service(spec.id, False, "load timed out with an item inside")
            await self._load_failed(opening, "timeout")
            return
        if closed.item is False:
            await self._load_failed(opening, "empty")
            return
        await self._ready(opening.order_id, spec.id)

    async def _ready(self, order_id: str, compartment_id: str) -> None:
        if not await self._set_state(order_id, "ready", compartment_id, only_from="loading"):
            return
        await self.announce_ready(order_id)

    async def announce_ready(self, order_id: str) -> None:
        """`pickup.ready` for an order now in its compartment or shelf slot, with the agent-issued code."""
        pickup = self.pickup(order_id)
        assert pickup is not None
        payload: dict[str, Any] = {
            "order_id": order_id,
            **place_fields(pickup.compartment, pickup.slot),
            "hold_until": pickup.hold_until_ms,
        }
        if pickup.code_issued_by == "agent":
            code = self._codes_to_send.pop(order_id, None)
            if code is None:
                # The code was only ever in memory (the database holds its HMAC) and a restart lost it before
                # anyone saw it: a fresh one replaces it.
                code = await self._codes.issue(order_id, pickup.hold_until_ms)
            payload["code"] = code
        await self._publish("pickup.ready", payload)

    async def _collect_finished(self, opening: _Opening, closed: LockState | None) -> None:
        spec = opening.spec
        if closed is None:
            log.warning("compartment %s: door not closed within the collect time for order %s", spec.id,
                        opening.order_id)
            return  # still ready; the alarm loop reports the open door
        if closed.item:  # None (no item sensor): the closed door ends the collect
            pickup = self.pickup(opening.order_id)
            if pickup is not None and pickup.state == "ready":
                await self._publish("pickup.not_collected", {"order_id": opening.order_id, "compartment": spec.id})
            return
        await self._codes.consume(opening.order_id)  # dead for good before anyone hears of the collect
        if await self._set_state(opening.order_id, "collected", spec.id, only_from="ready"):
            await self._publish("pickup.collected", {"order_id": opening.order_id, "compartment": spec.id})

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until every watched door reached its end (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop watching (the doors' state stays in the database; `recover` picks it up again)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._openings.clear()

    # -- expiry ---------------------------------------------------------------------------------

    async def tick(self, now_ms: int | None = None) -> None:
        """Reminders 24 h before the hold ends, expiry after it (call every minute or so)."""
        now = self._clock() if now_ms is None else now_ms
        before = self.timings.reminder_before_ms

        def reminders(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                "UPDATE pickups SET reminder_sent = 1, updated_ms = ? WHERE state = 'ready' AND reminder_sent = 0 "
                "AND hold_until_ms - ? <= ? AND hold_until_ms > ? RETURNING order_id, compartment, slot, hold_until_ms",
                (now, before, now, now),
            ).fetchall()

        for order_id, compartment, slot, hold_until in sorted(await self._db.write(reminders)):
            await self._publish(
                "pickup.reminder",
                {"order_id": order_id, **place_fields(compartment, slot), "hold_until": hold_until},
            )
        busy = set(self._openings)
        due = self._db.read(
            lambda c: c.execute(
                f"SELECT {_PICKUP_COLUMNS} FROM pickups WHERE state IN ('created', 'ready') AND hold_until_ms <= ? "  # noqa: S608
                "ORDER BY hold_until_ms LIMIT 500",
                (now,),
            ).fetchall()
        )
        for row in due:
            pickup = _pickup(row)
            if pickup.compartment is not None and pickup.compartment in busy:
                continue  # its door is open right now: decided when it closes, or at the next tick
            await self._codes.expire_due(now)
            new_state = "retrieval" if pickup.state == "ready" else "expired"
            if await self._set_state(pickup.order_id, new_state, pickup.compartment, only_from=pickup.state):
                self._codes_to_send.pop(pickup.order_id, None)
                await self._publish(
                    "pickup.expired",
                    {
                        "order_id": pickup.order_id,
                        **place_fields(pickup.compartment, pickup.slot),
                        "hold_until": pickup.hold_until_ms,
                        "retrieval": new_state == "retrieval",
                    },
                )
                await self._slot_changed(pickup.order_id)

    # -- alarms ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """The alarm loop: every board's sensors every `poll_s`, until cancelled."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("locker alarm poll failed")
            await asyncio.sleep(self.timings.poll_s)

    async def poll_once(self) -> None:
        by_board: dict[str, list[CompartmentInfo]] = {}
        for info in self.compartments():
            by_board.setdefault(info.spec.board_id, []).append(info)
        # Boards on different buses are read at the same time; each bus serialises its own.
        await asyncio.gather(*(self._poll_board(board_id, infos) for board_id, infos in by_board.items()))
        if self._alarm_signal is not None:
            infos = [i for group in by_board.values() for i in group]
            self._alarm_signal(self._alarming(infos))

    def _alarming(self, infos: list[CompartmentInfo]) -> bool:
        """A door forced or left open, or a jammed lock not yet put back in service by staff."""
        doors = any(not i.commanded or i.left_open_raised for i in self._incidents.values())
        return doors or any(not c.enabled and c.oos_reason == "jammed" for c in infos)

    async def _poll_board(self, board_id: str, infos: list[CompartmentInfo]) -> None:
        reads = self._reads.get(board_id)
        if reads is None:
            return
        try:
            # A watcher's reading from the last half period is as good as a new one.
            states = await reads.read_all(max_age_s=self.timings.poll_s / 2)
        except LockBoardError as exc:
            log.warning("alarm poll of %s: %s", board_id, exc)
            return
        for info in infos:
            if 1 <= info.spec.lock <= len(states):
                await self._check_door(info.spec, states[info.spec.lock - 1])

    async def _check_door(self, spec: CompartmentSpec, state: LockState) -> None:
        now = time.monotonic()
        if state.locked:
            self._incidents.pop(spec.id, None)
            if spec.id not in self._openings:
                self._commanded.discard(spec.id)
            return
        incident = self._incidents.get(spec.id)
        if incident is None:
            commanded = spec.id in self._openings or spec.id in self._commanded
            incident = self._incidents[spec.id] = _Incident(now, commanded)
            if not commanded:
                pickup = self._pickup_in(spec.id)
                order_id = None if pickup is None else pickup.order_id
                log.error("compartment %s: door open without a command", spec.id)
                await self._audit.append(
                    "uncommanded", compartment=spec.id, actor=None, order_id=order_id,
                    detail={"item": state.item},
                )
                await self._publish(
                    "alarm.door_forced", {"compartment": spec.id, "order_id": order_id, "item": state.item}
                )
        if not incident.left_open_raised and now - incident.since >= self.timings.door_open_alarm_s:
            incident.left_open_raised = True
            await self._publish(
                "alarm.door_left_open",
                {"compartment": spec.id, "open_s": round(now - incident.since, 1), "commanded": incident.commanded},
            )

    # -- restart --------------------------------------------------------------------------------

    async def recover(self) -> list[dict[str, Any]]:
        """At start-up, before anything opens: interrupted openings are never repeated; every sensor is read
        and compared with the database. Returns the mismatches raised as `alarm.state_mismatch`."""
        interrupted = await self._doors.recover(self._door_now)
        mismatches: list[dict[str, Any]] = []
        by_board: dict[str, list[CompartmentInfo]] = {}
        for info in self.compartments():
            by_board.setdefault(info.spec.board_id, []).append(info)
        for board_id, infos in by_board.items():
            board = self._boards.get(board_id)
            states: list[LockState] | None = None
            if board is not None:
                try:
                    states = await board.read_all()
                except LockBoardError as exc:
                    log.error("recover: cannot read %s: %s", board_id, exc)
            for info in infos:
                spec = info.spec
                if states is None or not 1 <= spec.lock <= len(states):
                    mismatches.append({"compartment": spec.id, "expected": "readable", "found": "no answer"})
                    continue
                mismatches += await self._reconcile(spec, states[spec.lock - 1])
        for m in mismatches:
            await self._publish("alarm.state_mismatch", m)
        if interrupted:
            log.warning("recover: %d door openings interrupted by the restart, not repeated", len(interrupted))
        return mismatches

    async def _door_now(self, compartment: str) -> str:
        """The door's sensor as it reads now: "open", "closed" or "unreadable" (for a recovered audit row)."""
        info = next((i for i in self.compartments() if i.spec.id == compartment), None)
        board = self._boards.get(info.spec.board_id) if info is not None else None
        if info is None or board is None:
            return "unreadable"
        try:
            state = await board.read(info.spec.lock)
        except LockBoardError:
            return "unreadable"
        return "closed" if state.locked else "open"

    async def _reconcile(self, spec: CompartmentSpec, state: LockState) -> list[dict[str, Any]]:
        pickup = self._pickup_in(spec.id)
        found = {"door": "closed" if state.locked else "open", "item": state.item}
        out: list[dict[str, Any]] = []

        def mismatch(expected: str, order_id: str | None) -> None:
            out.append({"compartment": spec.id, "order_id": order_id, "expected": expected, "found": found})

        if pickup is None:
            if not state.locked:
                mismatch("free, door closed", None)
            if state.item:
                mismatch("free, empty", None)
                await self.set_in_service(spec.id, False, "unexpected item")
            return out
        if pickup.state == "loading":
            opening = _Opening("load", pickup.order_id, spec, f"load-resumed-{uuid.uuid4()}", resumed=True)
            if not state.locked:
                self._spawn(opening, True)  # watched to its end, never opened again
            elif state.item is False:
                await self._load_failed(opening, "empty")
            else:
                await self._ready(pickup.order_id, spec.id)
            return out
        if pickup.state == "ready":
            if not state.locked:
                mismatch("ready, door closed", pickup.order_id)
                self._spawn(_Opening("collect", pickup.order_id, spec, "resumed", resumed=True), True)
            elif state.item is False and self._collect_attempted(pickup.order_id):
                # The agent stopped between the customer closing the door and recording the collect.
                await self._codes.consume(pickup.order_id)
                if await self._set_state(pickup.order_id, "collected", spec.id, only_from="ready"):
                    await self._publish("pickup.collected", {"order_id": pickup.order_id, "compartment": spec.id})
            elif state.item is False:
                mismatch("ready, item inside", pickup.order_id)
            return out
        # retrieval: staff will open it; an open door is still worth a look
        if not state.locked:
            mismatch(f"{pickup.state}, door closed", pickup.order_id)
        return out

    def _collect_attempted(self, order_id: str) -> bool:
        """Whether a customer's code opened (or may have opened) this order's door."""
        row = self._db.read(
            lambda c: c.execute(
                "SELECT 1 FROM door_ops WHERE order_id = ? AND purpose = 'code' AND state IN ('opened', 'unknown') "
                "LIMIT 1",
                (order_id,),
            ).fetchone()
        )
        return row is not None

    # -- events ---------------------------------------------------------------------------------

    async def _publish(self, event_type: str, payload: dict[str, Any]) -> None:
        await self._events.publish_event(event_type, payload)
