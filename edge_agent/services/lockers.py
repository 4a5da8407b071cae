"""Pickup lockers: the use cases (create, load, collect, expire, cancel, retrieve, test-open) over their parts.

Issue 4, parts 3, 5 and 6 (DESIGN.md section 7):
- Compartments map a bank, a board and a lock to an id ("A-12"), a size (S, M, L) and a place in the bank
  (row and column, for "Door 12 is open: second row from the top, third from the left"); their table is
  `locker_compartments.CompartmentStore`'s.
- Pickups (`pickups.PickupStore`, states and transitions in `pickups.PickupState`): `create_pickup` (cloud
  `pickup.create`), `cancel_pickup`; `start_load` picks a free compartment of the size (or the next larger one),
  opens it and watches the door: closed with an item inside is `pickup.ready`, closed empty is
  `pickup.load_failed`. `collect` checks the code (PickupCodes: throttled per terminal, answers never tell
  whether a code exists), opens the door and watches it: closed empty is `pickup.collected` (the code is used up
  only then), closed with the item still inside is `pickup.not_collected` and the pickup stays ready with its
  code valid. `tick` sends `pickup.reminder` 24 h before the hold ends and `pickup.expired` after it (the pickup
  then waits for staff: `retrieval`); `start_retrieval` opens it for staff, closed empty is `pickup.retrieved`
  and the compartment is free.
- Every door opening goes through DoorOpener (once per attempt, durable intent, audited) and is watched by
  `locker_doors.DoorWatch`, which hands each opening's end back to this service (`opening_closed`,
  `opening_jammed`).
- Alarms (`run`, `open_alarms`): `locker_alarms.LockerAlarms`. Start-up reconciliation (`recover`):
  `locker_recovery.LockerRecovery`.
Every state change is committed (fsync'd) before its event is published.

Pickup shelves (edge_agent.services.pickup_shelves; wiring/shelves.py calls `attach_shelves`) share this
service's pickups: the same codes and the one code check in `collect` (an order in a shelf slot is dispatched to
the shelves' `release`), the same expiry clock (`tick`) and `cancel_pickup`; their events carry `slot` and `shelf`
instead of `compartment` (`place_fields`). The service needs no board for them: a store with shelves only has none.

The parts are built and connected in edge_agent/wiring/lockers.py; this constructor only stores them.
"""

from __future__ import annotations

import enum
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.events import now_ms
from cloud_link.ports import EventSink
from devices.lockers.board import LockBoardError, LockState, UnlockResult
from edge_agent.services.doors import DoorAlreadyOpenedError, DoorOpening
from edge_agent.services.locker_alarms import LockerAlarms, OpenAlarm
from edge_agent.services.locker_compartments import SIZES, CompartmentInfo, CompartmentSpec, CompartmentStore
from edge_agent.services.locker_doors import DAY_MS, DoorWatch, LockerTimings, Opening
from edge_agent.services.locker_recovery import LockerRecovery
from edge_agent.services.pickup_codes import PickupCodeError, PickupCodes, VerifyStatus
from edge_agent.services.pickups import Pickup, PickupState, PickupStore

__all__ = [
    "DAY_MS",
    "SIZES",
    "CollectResult",
    "CollectStatus",
    "CompartmentInfo",
    "CompartmentSpec",
    "LoadStarted",
    "LockerError",
    "LockerService",
    "LockerTimings",
    "OpenAlarm",
    "Pickup",
    "SlotRelease",
    "door_message",
    "door_place",
    "place_fields",
]

log = logging.getLogger(__name__)

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")

MSG_WRONG = "This code does not open a door. Please check it and try again."
MSG_UNAVAILABLE = "This door cannot be opened right now. Please ask a member of staff."

S = PickupState


class LockerError(Exception):
    """A locker request could not be carried out; the message says why (never contains a code)."""


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


class LockerService:
    def __init__(
        self,
        compartments: CompartmentStore,
        pickups: PickupStore,
        watch: DoorWatch,
        alarms: LockerAlarms,
        recovery: LockerRecovery,
        *,
        codes: PickupCodes,
        events: EventSink,
        timings: LockerTimings,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._compartments = compartments
        self._pickups = pickups
        self._watch = watch
        self._alarms = alarms
        self._recovery = recovery
        self._codes = codes
        self._events = events
        self.timings = timings
        self._clock = clock
        self._codes_to_send: dict[str, str] = {}  # agent-issued codes until pickup.ready carries them
        self._shelves: SlotRelease | None = None

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
        await self._compartments.add(specs)

    def compartments(self) -> list[CompartmentInfo]:
        return self._compartments.all()

    def compartment(self, compartment_id: str) -> CompartmentInfo:
        info = self._compartments.get(compartment_id)
        if info is None:
            raise LockerError(f"no compartment {compartment_id!r}")
        return info

    async def set_in_service(self, compartment_id: str, enabled: bool, reason: str | None = None) -> None:
        await self._compartments.set_in_service(compartment_id, enabled, reason)

    def board_readings(self) -> dict[str, tuple[float, list[LockState]] | None]:
        """Each polled board's latest sensor reading (monotonic time its request left, lock states), as the
        alarm loop and the door watchers shared it: the dashboard shows these without a read of its own."""
        return self._watch.board_readings()

    def retrievals(self, bank: str | None = None) -> list[Pickup]:
        """Pickups waiting for staff to take them out (expired or cancelled while loaded), oldest first."""
        return self._pickups.retrievals(bank)

    def open_alarms(self, bank: str | None = None) -> list[OpenAlarm]:
        """What staff must look at now (locker_alarms.LockerAlarms.open_alarms)."""
        return self._alarms.open_alarms(bank)

    # -- pickups --------------------------------------------------------------------------------

    @property
    def codes(self) -> PickupCodes:
        return self._codes

    @property
    def pickups(self) -> PickupStore:
        """The pickups' store, shared with the pickup shelves."""
        return self._pickups

    def pickup(self, order_id: str) -> Pickup | None:
        return self._pickups.get(order_id)

    def holding_pickups(self) -> dict[str, Pickup]:
        """The pickup holding each taken compartment (loading, ready or waiting for retrieval), by compartment."""
        return self._pickups.by_compartment()

    def door_states(self) -> dict[str, tuple[LockState, float]]:
        """Each compartment's door and item as of the latest sensor reading (the alarm poll reads every board
        every `poll_s`), with the reading's age in seconds; compartments whose board was never read are absent.
        Reads nothing from the boards itself."""
        return self._watch.door_states(self.compartments())

    def opening_kind(self, compartment_id: str) -> str | None:
        """What the door is open for right now (load, collect, retrieval, test), if the service opened it."""
        opening = self._watch.opening(compartment_id)
        return None if opening is None else opening.kind

    async def _set_state(
        self, order_id: str, state: PickupState, compartment: str | None, *, only_from: PickupState
    ) -> bool:
        return await self._pickups.transition(
            order_id, state, only_from=only_from, compartment=compartment, now=self._clock()
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
        by = "agent" if code is None else "cloud"
        await self._pickups.create(
            order_id, size, code_issued_by=by, hold_until_ms=hold_until_ms, customer=customer, now=self._clock()
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
        if pickup.state is S.LOADING:
            raise LockerError(f"order {order_id} is being loaded; cancel it once the door is closed")
        if pickup.state not in (S.CREATED, S.READY):
            raise LockerError(f"order {order_id} is {pickup.state}; it cannot be cancelled")
        if pickup.compartment is not None and self._watch.opening(pickup.compartment) is not None:
            raise LockerError(f"order {order_id}: its door is open; cancel it once the door is closed")
        await self._codes.cancel(order_id)
        new_state = S.RETRIEVAL if pickup.state is S.READY else S.CANCELLED
        if not await self._set_state(order_id, new_state, pickup.compartment, only_from=pickup.state):
            raise LockerError(f"order {order_id} changed while it was being cancelled")
        self._codes_to_send.pop(order_id, None)
        await self._publish(
            "pickup.cancelled",
            {
                "order_id": order_id,
                **place_fields(pickup.compartment, pickup.slot),
                "retrieval": new_state is S.RETRIEVAL,
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
        claim = await self._pickups.load_into_compartment(
            order_id, bank=bank, busy=self._watch.busy(), now=self._clock()
        )
        if claim.state is None:
            raise LockerError(f"no order {order_id}")
        if claim.state is not S.CREATED:
            raise LockerError(f"order {order_id} is {claim.state}; only a created order can be loaded")
        if claim.compartment is None:
            where = "" if bank is None else f" in bank {bank}"
            raise LockerError(f"order {order_id}: no free compartment of size {claim.size} or larger{where}")
        spec = self.compartment(claim.compartment).spec
        opening = Opening("load", order_id, spec, f"load-{order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="staff", actor=actor)
        return LoadStarted(order_id, claim.compartment, door_message(spec), door_place(spec))

    async def start_retrieval(self, order_id: str, actor: str) -> LoadStarted:
        """Staff take out an expired or cancelled order: its door opens; closed empty is `pickup.retrieved`."""
        pickup = self.pickup(order_id)
        if pickup is None or pickup.state is not S.RETRIEVAL or pickup.compartment is None:
            raise LockerError(f"order {order_id} is not waiting for retrieval")
        spec = self.compartment(pickup.compartment).spec
        if self._watch.opening(spec.id) is not None:
            raise LockerError(f"compartment {spec.id} is already open")
        opening = Opening("retrieval", order_id, spec, f"retrieval-{order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="staff", actor=actor)
        return LoadStarted(order_id, spec.id, door_message(spec), door_place(spec))

    # -- technician's test ----------------------------------------------------------------------

    async def test_open(self, compartment_id: str, *, actor: str, reason: str) -> DoorOpening:
        """A technician test-opens a door: once, through DoorOpener (audited as `test` with who and why), in
        service or not. The door counts as commanded until it is latched again, so no door_forced alarm."""
        spec = self.compartment(compartment_id).spec
        current = self._watch.opening(spec.id)
        if current is not None:
            raise LockerError(f"compartment {spec.id} is open for a {current.kind} right now")
        held = self._pickups.in_compartment(spec.id)
        opening = Opening("test", held.order_id if held else "", spec, f"test-{spec.id}-{uuid.uuid4()}")
        try:
            result = await self._watch.unlock(
                opening, purpose="test", actor=actor, order_id=held.order_id if held else None, reason=reason
            )
        except (LockBoardError, DoorAlreadyOpenedError) as exc:
            raise LockerError(f"compartment {spec.id} could not be opened") from exc
        self._watch.follow_test(opening)
        return result

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
        if pickup is not None and pickup.state is S.READY and pickup.slot is not None and self._shelves is not None:
            # On a pickup shelf: the same check let it through; its slot's label flashes (any screen will do).
            return await self._shelves.release(pickup, terminal)
        if pickup is None or pickup.state is not S.READY or pickup.compartment is None:
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
        current = self._watch.opening(info.spec.id)
        if current is not None and current.order_id == pickup.order_id:
            # Typed again while its door is open: never a second opening.
            return CollectResult(CollectStatus.OK, door_message(info.spec), info.spec.id, door=door_place(info.spec))
        if not info.enabled or current is not None:
            return CollectResult(CollectStatus.UNAVAILABLE, MSG_UNAVAILABLE, info.spec.id)
        opening = Opening("collect", pickup.order_id, info.spec, f"collect-{pickup.order_id}-{uuid.uuid4()}")
        await self._open_and_watch(opening, purpose="code", actor=terminal)
        return CollectResult(CollectStatus.OK, door_message(info.spec), info.spec.id, door=door_place(info.spec))

    # -- openings and their ends ----------------------------------------------------------------

    async def _open_and_watch(self, opening: Opening, *, purpose: str, actor: str) -> None:
        spec = opening.spec
        try:
            result = await self._watch.unlock(opening, purpose=purpose, actor=actor, order_id=opening.order_id)
        except (LockBoardError, DoorAlreadyOpenedError) as exc:
            log.error("opening %s for order %s failed: %s", spec.id, opening.order_id, exc)
            if opening.kind == "load":
                await self._load_failed(opening, "board_error")
            raise LockerError(f"compartment {spec.id} could not be opened") from exc
        first = result.outcome.state
        already_open = result.outcome.result is UnlockResult.OPENED and first is not None and not first.locked
        self._watch.follow(opening, already_open, self)

    async def opening_closed(self, opening: Opening, closed: LockState | None) -> None:
        """A watched door latched again (`closed`), or None: not within its timeout (DoorWatch, LockerRecovery)."""
        if opening.kind == "load":
            await self._load_finished(opening, closed)
        elif opening.kind == "retrieval":
            await self._retrieval_finished(opening, closed)
        else:
            await self._collect_finished(opening, closed)

    async def opening_jammed(self, opening: Opening) -> None:
        """The lock never released: out of service, `alarm.lock_jammed`, and a load fails."""
        spec = opening.spec
        log.error("compartment %s: unlocked for order %s but still latched: jammed", spec.id, opening.order_id)
        await self.set_in_service(spec.id, False, "jammed")
        self._watch.forget_command(spec.id)
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

    async def _load_failed(self, opening: Opening, reason: str) -> None:
        if await self._set_state(opening.order_id, S.CREATED, None, only_from=S.LOADING):
            await self._publish(
                "pickup.load_failed",
                {"order_id": opening.order_id, "compartment": opening.spec.id, "reason": reason},
            )

    async def _load_finished(self, opening: Opening, closed: LockState | None) -> None:
        spec = opening.spec
        if closed is None:
            state = await self._watch.read(spec)
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
        if not await self._set_state(order_id, S.READY, compartment_id, only_from=S.LOADING):
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

    async def _collect_finished(self, opening: Opening, closed: LockState | None) -> None:
        spec = opening.spec
        if closed is None:
            log.warning("compartment %s: door not closed within the collect time for order %s", spec.id,
                        opening.order_id)
            return  # still ready; the alarm loop reports the open door
        if closed.item:  # None (no item sensor): the closed door ends the collect
            pickup = self.pickup(opening.order_id)
            if pickup is not None and pickup.state is S.READY:
                await self._publish("pickup.not_collected", {"order_id": opening.order_id, "compartment": spec.id})
            return
        await self._codes.consume(opening.order_id)  # dead for good before anyone hears of the collect
        if await self._set_state(opening.order_id, S.COLLECTED, spec.id, only_from=S.READY):
            await self._publish("pickup.collected", {"order_id": opening.order_id, "compartment": spec.id})

    async def _retrieval_finished(self, opening: Opening, closed: LockState | None) -> None:
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
        final = S.EXPIRED if pickup.hold_until_ms <= self._clock() else S.CANCELLED
        if await self._set_state(opening.order_id, final, spec.id, only_from=S.RETRIEVAL):
            await self._publish("pickup.retrieved", {"order_id": opening.order_id, "compartment": spec.id})

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until every watched door reached its end (tests, shutdown)."""
        await self._watch.wait_idle(timeout_s)

    async def close(self) -> None:
        """Stop watching (the doors' state stays in the database; `recover` picks it up again)."""
        await self._watch.close()

    # -- expiry ---------------------------------------------------------------------------------

    async def tick(self, now_ms: int | None = None) -> None:
        """Reminders 24 h before the hold ends, expiry after it (call every minute or so)."""
        now = self._clock() if now_ms is None else now_ms
        for reminder in await self._pickups.take_due_reminders(now, self.timings.reminder_before_ms):
            await self._publish(
                "pickup.reminder",
                {
                    "order_id": reminder.order_id,
                    **place_fields(reminder.compartment, reminder.slot),
                    "hold_until": reminder.hold_until_ms,
                },
            )
        busy = set(self._watch.busy())
        for pickup in self._pickups.due_for_expiry(now):
            if pickup.compartment is not None and pickup.compartment in busy:
                continue  # its door is open right now: decided when it closes, or at the next tick
            await self._codes.expire_due(now)
            new_state = S.RETRIEVAL if pickup.state is S.READY else S.EXPIRED
            if await self._set_state(pickup.order_id, new_state, pickup.compartment, only_from=pickup.state):
                self._codes_to_send.pop(pickup.order_id, None)
                await self._publish(
                    "pickup.expired",
                    {
                        "order_id": pickup.order_id,
                        **place_fields(pickup.compartment, pickup.slot),
                        "hold_until": pickup.hold_until_ms,
                        "retrieval": new_state is S.RETRIEVAL,
                    },
                )
                await self._slot_changed(pickup.order_id)

    # -- alarms and restart (their parts) -------------------------------------------------------

    async def run(self) -> None:
        """The alarm loop: every board's sensors every `poll_s`, until cancelled."""
        await self._alarms.run()

    async def poll_once(self) -> None:
        await self._alarms.poll_once()

    async def recover(self) -> list[dict[str, Any]]:
        """At start-up, before anything opens (locker_recovery.LockerRecovery). Returns the mismatches raised as
        `alarm.state_mismatch`."""
        return await self._recovery.recover(self)

    # -- events ---------------------------------------------------------------------------------

    async def _publish(self, event_type: str, payload: dict[str, Any]) -> None:
        await self._events.publish_event(event_type, payload)
