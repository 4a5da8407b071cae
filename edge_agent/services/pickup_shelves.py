"""Pickup shelves: orders wait in shelf slots whose e-ink labels say which order is where (issue 7, part 2).

A shelf is a named set of slots, each with its label (a tag): `define_shelf` takes the labels scanned in slot
order (tag id, the tag's scan code, or its scan-link URL `.../s/<code>`), slots numbered 1..n, slot ids
"<shelf_id>-<n>". While a tag is a slot label its picture is the slot's page, never a product's price label
(the page source registered with LabelService wins over the price label).

The pickups themselves are shared with the locker service (`PickupStore`, table `pickups`): created by the cloud's
`pickup.create`, with the same codes, the same one code check (`LockerService.collect`: throttle per terminal,
lockouts, `alarm.code_guessing`), the same expiry clock (`tick`) and cancel, the same `pickup.*` events; an
order on a shelf has `slot` set instead of `compartment`. What this service adds:

- load: staff scan the order (its id) and the slot's label, in either order -> the order must be `created`
  and the slot empty -> `ready` in the slot, the label shows the order (SlotPage: shelf, slot, order,
  masked customer, hold deadline), `pickup.ready` with `slot` and `shelf` (and the agent-issued code);
- release: a right code at a kiosk or a locker screen (the shared check dispatches here) -> the slot's
  label flashes for about a minute, `released_ms/by` recorded, audit `shelf_release`; the screen names the
  shelf and slot;
- handover: a staff scan (order id or slot label) of a released order -> the code is consumed (dead for
  good) -> `collected`, `pickup.collected`, audit `shelf_handover`, the label back to its empty page, LED
  off. Without a recent release (the customer showed no code) the handover is refused;
- expiry and cancel come from the locker service (a loaded slot goes to `retrieval`): the label then says
  the order must be taken back; a staff scan retrieves it -> `pickup.retrieved`, audit `shelf_retrieval`.
Nothing here needs a lock board: a store with shelves only runs the locker service with no boards.
The hooks (the locker service dispatching a shelf order's code here, the labels asking `page_for`) are made in
edge_agent/wiring/shelves.py, which also calls `reload` once before use; the constructor only stores its arguments.

Customers' names: the agent keeps only the masked form (`mask_customer`), never the full name or phone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore, EventSink
from devices.labels.pages import SlotPage, TaskPage
from devices.labels.registry import TagRecord, TagRegistry
from devices.labels.updates import PRIORITY_TECHNICIAN
from edge_agent.services.audit import AuditSink
from edge_agent.services.lockers import CollectResult, CollectStatus, LockerService, Pickup, place_fields
from edge_agent.services.pickups import PickupState, PickupStore, SlotHolding

log = logging.getLogger(__name__)

SHELF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
NAME_MAX = 40
MAX_SLOTS = 200
CODE_MAX = 512
# A release makes the label flash this long (count x period): time to walk to the shelf.
FLASH_COLOUR = 4  # white: not one of the pickers' usual colours on the same labels' LEDs
FLASH_COUNT = 60
FLASH_PERIOD_MS = 1000
# While the customer walks there, the label takes commands at once (handover: LED off, page back).
FAST_AFTER_RELEASE_S = 180
# A slot holding an order that waits for its customer is kept in fast check-in (asked for HOLD_FAST_S, renewed
# every HOLD_FAST_RENEW_S): a right code at the screen then makes its label flash at once, not at its next
# check-in (~30 s) while the customer stands at the shelf. A few dozen slot labels' batteries buy that; the
# price tags are not touched.
HOLD_FAST_S = 300
HOLD_FAST_RENEW_S = 120.0
# A handover needs a release this recent: an old release (the customer left) does not let staff hand over.
RELEASE_VALID_MS = 30 * 60 * 1000
SLOT_STATES = ("empty", "ready", "released", "retrieval")

TEXTS = {
    "zh": {"expired": "已过期 请取回", "cancelled": "已取消 请取回"},
    "en": {"expired": "Expired: take back", "cancelled": "Cancelled: take back"},
}


class ShelfError(Exception):
    """A shelf request refused; `code` for programs, `message` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Labels(Protocol):
    """What the shelves need of devices.labels.updates.LabelService."""

    @property
    def registry(self) -> TagRegistry: ...

    async def request_update(self, tag_ids: Iterable[str], priority: int, reason: str) -> int: ...

    async def flash(self, tag_id: str, *, colour: int = 2, count: int = 5, period_ms: int = 500) -> int: ...

    async def led(
        self, tag_ids: Iterable[str], *, colour: int, count: int, period_ms: int
    ) -> dict[str, int | str]: ...

    async def set_fast(self, tag_ids: Iterable[str], seconds: int) -> dict[str, int | str]: ...


@dataclass(frozen=True)
class SlotView:
    slot_id: str
    shelf_id: str
    position: int
    tag_id: str
    state: str  # empty | ready | released | retrieval
    order_id: str | None = None
    customer: str | None = None  # masked
    hold_until_ms: int | None = None
    released_ms: int | None = None
    released_by: str | None = None
    pickup_state: str | None = None  # the order's own state (ready, retrieval)

    def as_json(self) -> dict[str, Any]:
        return {
            "slot_id": self.slot_id,
            "position": self.position,
            "tag_id": self.tag_id,
            "state": self.state,
            "order_id": self.order_id,
            "customer": self.customer,
            "hold_until_ms": self.hold_until_ms,
            "released_ms": self.released_ms,
            "released_by": self.released_by,
        }


@dataclass(frozen=True)
class ShelfView:
    shelf_id: str
    name: str
    created_ms: int
    slots: tuple[SlotView, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "shelf_id": self.shelf_id,
            "name": self.name,
            "created_ms": self.created_ms,
            "slots": [s.as_json() for s in self.slots],
        }


@dataclass(frozen=True)
class SlotDone:
    """A handover or retrieval: the order, its final state (collected, expired, cancelled) and the slot now."""

    order_id: str
    state: str
    slot: SlotView

    def as_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "state": self.state, "slot": self.slot.as_json()}


@dataclass(frozen=True)
class _Slot:
    slot_id: str
    shelf_id: str
    shelf_name: str
    position: int
    tag_id: str


def _printable(text: str) -> str:
    """Without control and format characters (a label and a log line show it)."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()


def mask_customer(name: str | None, phone: str | None) -> str | None:
    """The customer as a slot label may show them: the name's first character, `**`, and the phone's last
    four digits: `王** 1234`, `A** 5678`. A name alone is `王**`, a phone alone `** 1234`; a phone with
    fewer than 4 digits is left out (it would be most of the number); nothing usable is None. Whatever the
    name's length, always `**`: the mask tells nothing about it."""
    first = _printable(name or "")[:1]
    digits = "".join(ch for ch in (phone or "") if ch.isascii() and ch.isdigit())
    tail = digits[-4:] if len(digits) >= 4 else ""
    if first and tail:
        return f"{first}** {tail}"
    if first:
        return f"{first}**"
    if tail:
        return f"** {tail}"
    return None


def format_hold(hold_until_ms: int) -> str:
    """The hold deadline as the slot label shows it: the box's local time, `MM-DD HH:MM`."""
    return dt.datetime.fromtimestamp(hold_until_ms / 1000, tz=dt.UTC).astimezone().strftime("%m-%d %H:%M")


def tag_code(code: str) -> str:
    """What a scanned slot label says: a tag id, a scan code, or a scan-link URL `.../s/<code>`."""
    text = code.strip()
    if "/s/" in text:
        text = text.rsplit("/s/", 1)[1]
        text = re.split(r"[?#/]", text, maxsplit=1)[0]
    return text


def _lang(locale: str) -> str:
    return "zh" if locale.replace("-", "_").lower().startswith("zh") else "en"


class PickupShelves:
    def __init__(
        self,
        db: DurableStore,
        pickups: PickupStore,
        lockers: LockerService,
        labels: Labels | None,
        *,
        audit: AuditSink,
        events: EventSink,
        locale: str = "zh_CN",
        clock: Callable[[], int] = now_ms,
        registry: TagRegistry | None = None,
    ) -> None:
        self._db = db
        self._pickups = pickups
        self._lockers = lockers
        self._labels = labels
        self._registry = registry if registry is not None else (labels.registry if labels is not None else None)
        self._audit = audit
        self._events = events
        self.locale = locale
        self._clock = clock
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_tag: dict[str, _Slot] = {}
        self._by_id: dict[str, _Slot] = {}

    # -- listeners --------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Called after every change ({action, shelf, slot, order_id}): the web UI's live stream."""
        self._listeners.append(fn)

    def _changed(self, action: str, shelf: str, slot: str | None = None, order_id: str | None = None) -> None:
        change = {"action": action, "shelf": shelf, "slot": slot, "order_id": order_id}
        for fn in self._listeners:
            try:
                fn(change)
            except Exception:
                log.exception("shelf listener failed")

    # -- shelves ----------------------------------------------------------------------------

    def reload(self) -> None:
        """The shelves and slots from the database into memory: once before use (wiring), then after each change."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT s.slot_id, s.shelf_id, h.name, s.position, s.tag_id FROM shelf_slots s "
                "JOIN shelves h ON h.shelf_id = s.shelf_id ORDER BY s.shelf_id, s.position"
            ).fetchall()
        )
        slots = [_Slot(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]
        # Read on every label render (page source): kept in memory, rebuilt by the two writers below.
        self._by_tag = {s.tag_id: s for s in slots}
        self._by_id = {s.slot_id: s for s in slots}

    def _tag(self, code: str) -> TagRecord | None:
        if self._registry is None:
            return None
        text = tag_code(code)
        if not text or len(text) > CODE_MAX:
            return None
        return self._registry.get(text.lower()) or self._registry.get(text) or self._registry.by_scan_code(text)

    async def define_shelf(self, shelf_id: str, name: str, tag_codes: list[str]) -> ShelfView:
        """A new shelf of len(tag_codes) slots, the labels in slot order (slot 1 first)."""
        if not SHELF_ID_RE.fullmatch(shelf_id):
            raise ShelfError("invalid_shelf", "shelf id: 1-32 letters, digits, '_', '.' or '-', starting with one")
        label = _printable(name)
        if not label or len(label) > NAME_MAX:
            raise ShelfError("invalid_name", f"shelf name: 1-{NAME_MAX} printable characters")
        if not tag_codes or len(tag_codes) > MAX_SLOTS:
            raise ShelfError("invalid_slots", f"scan 1-{MAX_SLOTS} slot labels")
        tags: list[str] = []
        for code in tag_codes:
            rec = self._tag(code)
            if rec is None:
                raise ShelfError("unknown_tag", f"no label {tag_code(code)[:64]!r} is known")
            if rec.tag_id in tags:
                raise ShelfError("duplicate_tag", f"label {rec.tag_id} was scanned twice")
            held = self._by_tag.get(rec.tag_id)
            if held is not None:
                raise ShelfError("tag_in_use", f"label {rec.tag_id} is already slot {held.slot_id}")
            tags.append(rec.tag_id)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM shelves WHERE shelf_id = ?", (shelf_id,)).fetchone():
                raise ShelfError("duplicate_shelf", f"shelf {shelf_id} already exists")
            conn.execute("INSERT INTO shelves(shelf_id, name, created_ms) VALUES (?, ?, ?)", (shelf_id, label, now))
            try:
                conn.executemany(
                    "INSERT INTO shelf_slots(slot_id, shelf_id, position, tag_id) VALUES (?, ?, ?, ?)",
                    [(f"{shelf_id}-{n}", shelf_id, n, tag) for n, tag in enumerate(tags, start=1)],
                )
            except sqlite3.IntegrityError:  # a label taken by another shelf in the meantime
                raise ShelfError("tag_in_use", "a label is already a slot of another shelf") from None

        await self._db.write(job)
        if self._registry is not None:
            for rec in (self._registry.get(t) for t in tags):
                if rec is not None and not rec.adopted:
                    # Scanned into a shelf by a technician: the label is the store's now (as adopting it on the
                    # discovery page); a discovered tag is never drawn on.
                    await self._registry.adopt(rec.tag_id)
        self.reload()
        await self._show(tags, "shelf defined")
        self._changed("defined", shelf_id)
        view = self.shelf(shelf_id)
        assert view is not None
        return view

    async def remove_shelf(self, shelf_id: str) -> None:
        """Remove a shelf whose slots hold no order; its labels go back to what they showed before."""
        def job(conn: sqlite3.Connection) -> list[str]:
            if not conn.execute("SELECT 1 FROM shelves WHERE shelf_id = ?", (shelf_id,)).fetchone():
                raise ShelfError("unknown_shelf", f"no shelf {shelf_id}")
            held = PickupStore.order_on_shelf(conn, shelf_id)
            if held is not None:
                raise ShelfError("shelf_in_use", f"shelf {shelf_id} still holds order {held}")
            tags = [str(r[0]) for r in conn.execute("SELECT tag_id FROM shelf_slots WHERE shelf_id = ?", (shelf_id,))]
            conn.execute("DELETE FROM shelf_slots WHERE shelf_id = ?", (shelf_id,))
            conn.execute("DELETE FROM shelves WHERE shelf_id = ?", (shelf_id,))
            return tags

        tags = await self._db.write(job)
        self.reload()
        await self._show(tags, "shelf removed")
        self._changed("removed", shelf_id)

    def shelves(self) -> list[ShelfView]:
        shelves = self._db.read(
            lambda c: c.execute("SELECT shelf_id, name, created_ms FROM shelves ORDER BY shelf_id").fetchall()
        )
        held = self._held()
        out: list[ShelfView] = []
        for shelf_id, name, created in shelves:
            slots = [s for s in self._by_id.values() if s.shelf_id == shelf_id]
            views = tuple(self._view(s, held.get(s.slot_id)) for s in sorted(slots, key=lambda s: s.position))
            out.append(ShelfView(str(shelf_id), str(name), int(created), views))
        return out

    def shelf(self, shelf_id: str) -> ShelfView | None:
        return next((s for s in self.shelves() if s.shelf_id == shelf_id), None)

    def resolve_slot(self, code: str) -> SlotView | None:
        """The slot a scanned label (tag id, scan code or scan-link URL) or a slot id names."""
        slot = self._by_id.get(code.strip())
        if slot is None:
            rec = self._tag(code)
            slot = None if rec is None else self._by_tag.get(rec.tag_id)
        if slot is None:
            return None
        return self._view(slot, self._held(slot.slot_id).get(slot.slot_id))

    def _held(self, slot_id: str | None = None) -> dict[str, SlotHolding]:
        """The order in each taken slot (or only in `slot_id`), by slot."""
        return self._pickups.slot_holdings(slot_id)

    def _view(self, slot: _Slot, held: SlotHolding | None) -> SlotView:
        if held is None:
            return SlotView(slot.slot_id, slot.shelf_id, slot.position, slot.tag_id, "empty")
        state = held.state
        shown = "retrieval" if state is PickupState.RETRIEVAL else (
            "released" if self._recent(held.released_ms) else "ready"
        )
        return SlotView(
            slot.slot_id, slot.shelf_id, slot.position, slot.tag_id, shown, held.order_id, held.customer,
            held.hold_until_ms, held.released_ms, held.released_by, state.value,
        )

    def _recent(self, released_ms: int | None) -> bool:
        return released_ms is not None and self._clock() - released_ms <= RELEASE_VALID_MS

    # -- the labels -------------------------------------------------------------------------

    def page_for(self, rec: TagRecord) -> TaskPage | None:
        """The page source: a slot label's page (consulted on every render of every tag, so a dict miss for
        the rest)."""
        slot = self._by_tag.get(rec.tag_id)
        if slot is None:
            return None
        return self.slot_page(self._view(slot, self._held(slot.slot_id).get(slot.slot_id)))

    def slot_page(self, view: SlotView) -> SlotPage:
        """What a slot's label shows: empty, the order waiting, or the order to take back."""
        slot = self._by_id[view.slot_id]
        if view.order_id is None or view.hold_until_ms is None:
            return SlotPage(slot.shelf_name, str(slot.position), locale=self.locale)
        if view.state == "retrieval":
            expired = view.hold_until_ms <= self._clock()
            until = TEXTS[_lang(self.locale)]["expired" if expired else "cancelled"]
        else:
            until = format_hold(view.hold_until_ms)
        return SlotPage(slot.shelf_name, str(slot.position), view.order_id, view.customer, until, self.locale)

    async def _show(self, tag_ids: list[str], reason: str) -> None:
        if self._labels is None or not tag_ids:
            return
        try:
            await self._labels.request_update(tag_ids, PRIORITY_TECHNICIAN, reason)
        except Exception:  # the stored state is what counts; the label catches up on its next render
            log.exception("pickup shelf: updating labels %s failed", tag_ids)

    async def _led(self, tag_id: str, *, on: bool) -> None:
        if self._labels is None:
            return
        try:
            if on:
                await self._labels.flash(tag_id, colour=FLASH_COLOUR, count=FLASH_COUNT, period_ms=FLASH_PERIOD_MS)
                await self._labels.set_fast([tag_id], FAST_AFTER_RELEASE_S)
            else:
                await self._labels.led([tag_id], colour=0, count=0, period_ms=FLASH_PERIOD_MS)
        except Exception:
            log.exception("pickup shelf: LED of label %s failed", tag_id)

    async def run(self) -> None:
        """Keep the labels of slots holding a waiting order in fast check-in, until cancelled."""
        while True:
            try:
                await self.keep_fast()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pickup shelf: renewing the slots' fast check-in failed")
            await asyncio.sleep(HOLD_FAST_RENEW_S)

    async def keep_fast(self) -> None:
        if self._labels is None:
            return
        tags = [
            self._by_id[slot].tag_id
            for slot, held in self._held().items()
            if held.state is PickupState.READY and slot in self._by_id
        ]
        if tags:
            await self._labels.set_fast(tags, HOLD_FAST_S)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until the LED commands sent in the background are out (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- loading ----------------------------------------------------------------------------

    async def load(self, first: str, second: str, *, actor: str) -> SlotView:
        """Staff scanned an order and a slot's label, in either order: the order waits in that slot."""
        a, b = first.strip(), second.strip()
        if not a or not b or len(a) > CODE_MAX or len(b) > CODE_MAX:
            raise ShelfError("invalid_code", "scan the order and the slot's label")
        slot_view = self.resolve_slot(b)
        order_id = a
        if slot_view is None:
            slot_view = self.resolve_slot(a)
            order_id = b
        if slot_view is None:
            raise ShelfError("unknown_slot", "neither code is a slot's label")
        slot = self._by_id[slot_view.slot_id]
        claim = await self._pickups.load_into_slot(order_id, slot.slot_id, now=self._clock())
        if claim.state is None:
            raise ShelfError("unknown_order", f"no pickup order {order_id[:64]}")
        if claim.state is not PickupState.CREATED:
            raise ShelfError("not_created", f"order {order_id} is {claim.state}; only a new order can be loaded")
        if claim.taken_by is not None:
            raise ShelfError("slot_taken", f"slot {slot.slot_id} already holds order {claim.taken_by}")
        log.info("pickup shelf: order %s loaded into %s by %s", order_id, slot.slot_id, actor)
        await self._lockers.announce_ready(order_id)  # stored first, then announced, as for lockers
        await self._show([slot.tag_id], "pickup loaded")
        if self._labels is not None:
            self._spawn(self._labels.set_fast([slot.tag_id], HOLD_FAST_S))
        self._changed("loaded", slot.shelf_id, slot.slot_id, order_id)
        view = self.resolve_slot(slot.slot_id)
        assert view is not None
        return view

    # -- the customer's code (dispatched here by LockerService.collect) ---------------------

    async def release(self, pickup: Pickup, terminal: str) -> CollectResult:
        """A right code for an order in a slot: the label flashes and the screen says where to look."""
        assert pickup.slot is not None
        slot = self._by_id.get(pickup.slot)
        if slot is None:  # its shelf was removed under it (refused while it holds orders): staff must help
            return CollectResult(
                CollectStatus.UNAVAILABLE, "This order cannot be found right now. Please ask a member of staff."
            )
        await self._pickups.mark_released(pickup.order_id, terminal[:64], now=self._clock())
        await self._audit.append(
            "shelf_release", compartment=slot.slot_id, actor=terminal[:200], order_id=pickup.order_id,
            detail={"shelf": slot.shelf_id, "position": slot.position, "tag": slot.tag_id},
        )
        # The answer does not wait for the base station: the LED command goes out right behind it.
        self._spawn(self._led(slot.tag_id, on=True))
        self._changed("released", slot.shelf_id, slot.slot_id, pickup.order_id)
        place = {"slot_id": slot.slot_id, "shelf": slot.shelf_id, "shelf_name": slot.shelf_name,
                 "position": slot.position}
        return CollectResult(
            CollectStatus.SHELF,
            f"Shelf {slot.shelf_name}, slot {slot.position} is flashing. A member of staff will hand you your order.",
            slot=place,
        )

    async def slot_changed(self, pickup: Pickup) -> None:
        """Expired or cancelled while in a slot (LockerService): the label says to take it back."""
        slot = self._by_id.get(pickup.slot or "")
        if slot is None:
            return
        await self._show([slot.tag_id], "pickup " + pickup.state)
        self._changed(pickup.state, slot.shelf_id, slot.slot_id, pickup.order_id)

    # -- staff: handover and retrieval ------------------------------------------------------

    def _pickup_for(self, code: str) -> tuple[Pickup, _Slot]:
        text = code.strip()
        if not text or len(text) > CODE_MAX:
            raise ShelfError("invalid_code", "scan the order or the slot's label")
        view = self.resolve_slot(text)
        order_id = view.order_id if view is not None else text
        if view is not None and order_id is None:
            raise ShelfError("slot_empty", f"slot {view.slot_id} holds no order")
        assert order_id is not None
        pickup = self._pickups.get(order_id)
        if pickup is None or pickup.slot is None or pickup.slot not in self._by_id:
            raise ShelfError("unknown_order", f"no order {order_id[:64]} on a pickup shelf")
        return pickup, self._by_id[pickup.slot]

    async def handover(self, code: str, *, actor: str) -> SlotDone:
        """Staff scanned the order or its slot's label and handed it over: collected, the code dead for good."""
        pickup, slot = self._pickup_for(code)
        if pickup.state is not PickupState.READY:
            raise ShelfError("not_ready", f"order {pickup.order_id} is {pickup.state}; it cannot be handed over")
        if not self._recent(self._pickups.released_ms(pickup.order_id)):
            raise ShelfError(
                "not_released", "the customer has not typed their code yet: ask them to type it at a screen"
            )
        await self._lockers.codes.consume(pickup.order_id)  # dead for good before anyone hears of the handover
        await self._finish(pickup, slot, PickupState.COLLECTED, actor=actor, audit_kind="shelf_handover",
                           event="pickup.collected", action="handed_over", doing="handed over")
        return SlotDone(pickup.order_id, "collected", self._view(slot, None))

    async def retrieve(self, code: str, *, actor: str) -> SlotDone:
        """Staff took an expired or cancelled order off its slot: `pickup.retrieved`, the slot is free."""
        pickup, slot = self._pickup_for(code)
        if pickup.state is not PickupState.RETRIEVAL:
            raise ShelfError(
                "not_retrieval", f"order {pickup.order_id} is {pickup.state}, not waiting to be taken back"
            )
        final = PickupState.EXPIRED if pickup.hold_until_ms <= self._clock() else PickupState.CANCELLED
        await self._finish(pickup, slot, final, actor=actor, audit_kind="shelf_retrieval",
                           event="pickup.retrieved", action="retrieved", doing="taken back")
        return SlotDone(pickup.order_id, final, self._view(slot, None))

    async def _finish(
        self, pickup: Pickup, slot: _Slot, final: PickupState, *, actor: str, audit_kind: str, event: str, action: str,
        doing: str,
    ) -> None:
        """An order leaves its slot for good (handed over or taken back): its final state, only from the state it
        was checked in; then the audit record, the event, and the slot's label empty again."""
        # A shelf order never holds a compartment: the one it keeps is None.
        done = await self._pickups.transition(
            pickup.order_id, final, only_from=pickup.state, compartment=pickup.compartment, now=self._clock()
        )
        if not done:
            raise ShelfError(f"not_{pickup.state}", f"order {pickup.order_id} changed while it was being {doing}")
        await self._audit.append(
            audit_kind, compartment=slot.slot_id, actor=actor[:200], order_id=pickup.order_id,
            detail={"shelf": slot.shelf_id, "position": slot.position, "tag": slot.tag_id},
        )
        await self._events.publish_event(event, {"order_id": pickup.order_id, **place_fields(None, slot.slot_id)})
        await self._emptied(slot, action, pickup.order_id)

    async def _emptied(self, slot: _Slot, action: str, order_id: str) -> None:
        self._spawn(self._led(slot.tag_id, on=False))
        await self._show([slot.tag_id], f"pickup {action}")
        self._changed(action, slot.shelf_id, slot.slot_id, order_id)
