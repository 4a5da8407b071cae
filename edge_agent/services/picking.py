"""Pick-to-light: pick lists from the cloud light the shelf tags of their products until staff confirm.

A pick list (`pick.start`) has a picker, the picker's LED colour and lines (order, sku, quantity). For each line
the tags paired with the product *when the list starts* are its tags: they flash in the picker's colour and show
a pick page (devices.labels.pages.PickPage: quantity, order, picker) instead of their price. Staff confirm a
line by scanning the product on a staff scanner, by the tag's button, or on the web UI's picking board; a short
pick or a substitution is recorded as such. When a tag has no open line left, its LED goes off and the price
page comes back (the page source says None; the label service re-renders and sends only what differs).

Several pick lists run at once, one colour per picker. A tag shared by open lines of two lists shows both
entries on its page, and its LED takes their colours in turn (one per renewal).

Durability: lists and lines are rows (migration 11). Every change of a line's state writes, in the same
transaction, the tags it touched into `tag_restores`; those rows go only once the tag's LED and picture were
dealt with. At start the service relights the tags of open lines and deals with every leftover row, so neither
a restart nor a crash leaves a tag lit or on a pick page without an open line.

Fast check-in: tags on a base station listen only at their check-in (every 30 s or so), which is too slow for a
picker standing at the shelf. While a list is active, the *picking zone* — every paired tag on the base stations
its tags are on — is kept in fast check-in (SET_FAST for `fast_s`, renewed before it runs out), and for
`zone_linger_s` after the last list there ended, so the next list lights at once. It always ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore, EventSink
from devices.labels.pages import PICKER_COLOURS, PickEntry, PickPage
from devices.labels.registry import TagRecord
from devices.labels.updates import PRIORITY_TECHNICIAN, LabelService
from edge_agent.services.catalog import ProductCatalog

log = logging.getLogger(__name__)

LED_CODES = {"red": 1, "green": 2, "blue": 3, "white": 4}
LINE_STATES = ("open", "picked", "short", "substituted", "cancelled")
MAX_LINES = 500


class PickingError(Exception):
    """A request the picking service refuses; `code` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PickingSettings:
    led_period_ms: int = 500
    # A lit LED is renewed this often; each command flashes a little longer than that, so it never goes dark
    # in between, and a tag whose renewals stop (agent gone) goes dark by itself soon after.
    led_renew_s: float = 30.0
    fast_s: int = 300  # one SET_FAST; renewed at half-life while the zone is active
    zone_linger_s: float = 600.0  # a zone stays fast this long after its last list ended
    zone_concurrency: int = 8  # SET_FAST requests in flight at once while a zone wakes (the line is shared)

    @property
    def led_count(self) -> int:
        return min(255, int(self.led_renew_s * 1000 / self.led_period_ms) + 10)


@dataclass(frozen=True)
class PickLine:
    list_id: str
    line_no: int
    order_id: str
    sku: str
    quantity: int
    tags: tuple[str, ...]
    state: str
    picked_qty: int | None
    substitute_sku: str | None
    confirmed_by: str | None
    confirmed_ms: int | None


@dataclass(frozen=True)
class PickList:
    list_id: str
    picker: str
    colour: str
    order_ids: tuple[str, ...]
    state: str  # active|completed|cancelled
    created_ms: int
    finished_ms: int | None
    lines: tuple[PickLine, ...]

    @property
    def open_lines(self) -> list[PickLine]:
        return [line for line in self.lines if line.state == "open"]


_LIST_COLUMNS = "list_id, picker, colour, order_ids, state, created_ms, finished_ms"
_LINE_COLUMNS = (
    "list_id, line_no, order_id, sku, quantity, tags, state, picked_qty, substitute_sku, confirmed_by, confirmed_ms"
)


def _line(row: Sequence[Any]) -> PickLine:
    return PickLine(
        str(row[0]), int(row[1]), str(row[2]), str(row[3]), int(row[4]), tuple(json.loads(row[5])), str(row[6]),
        None if row[7] is None else int(row[7]), row[8], row[9], None if row[10] is None else int(row[10]),
    )


def _read_lists(conn: sqlite3.Connection, where: str, args: Sequence[Any], limit: int) -> list[PickList]:
    rows = conn.execute(
        f"SELECT {_LIST_COLUMNS} FROM pick_lists WHERE {where} ORDER BY created_ms DESC, list_id LIMIT ?",  # noqa: S608
        (*args, limit),
    ).fetchall()
    lists = []
    for r in rows:
        lines = conn.execute(
            f"SELECT {_LINE_COLUMNS} FROM pick_lines WHERE list_id = ? ORDER BY line_no", (r[0],)  # noqa: S608
        ).fetchall()
        lists.append(
            PickList(str(r[0]), str(r[1]), str(r[2]), tuple(json.loads(r[3])), str(r[4]), int(r[5]),
                     None if r[6] is None else int(r[6]), tuple(_line(x) for x in lines))
        )
    return lists


class PickingService:
    def __init__(
        self,
        db: DurableStore,
        labels: LabelService,
        catalog: ProductCatalog,
        events: EventSink,
        *,
        settings: PickingSettings | None = None,
        locale: str = "zh_CN",
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self._labels = labels
        self._catalog = catalog
        self._events = events
        self.settings = settings or PickingSettings()
        self._locale = locale
        self._clock = clock
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        # Open lines by tag, kept in memory: the label service asks on every render of every tag.
        self._by_tag: dict[str, list[tuple[PickList, PickLine]]] = {}
        self._turn: dict[str, int] = {}  # tag -> renewals so far (a shared tag's LED takes each colour in turn)
        self._zone_until: dict[str, float] = {}  # base station -> monotonic time its zone may go back to normal
        self._zone_fast_at: dict[str, float] = {}  # base station -> when its zone was last sent SET_FAST
        self._lock = asyncio.Lock()  # one change at a time: a scan and a button press for the same line
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- reading ------------------------------------------------------------------------------

    def lists(self, *, active_only: bool = True, limit: int = 100) -> list[PickList]:
        where, args = ("state = ?", ("active",)) if active_only else ("1 = 1", ())
        return self._db.read(lambda c: _read_lists(c, where, args, max(1, min(limit, 1000))))

    def get(self, list_id: str) -> PickList | None:
        found = self._db.read(lambda c: _read_lists(c, "list_id = ?", (list_id,), 1))
        return found[0] if found else None

    def add_listener(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """`fn(change)` after every change (the web UI's live board); it must not block."""
        self._listeners.append(fn)

    def page_for(self, rec: TagRecord) -> PickPage | None:
        """The label service's page source: the pick page of a tag with open lines, else None (its price)."""
        entries = self._by_tag.get(rec.tag_id)
        if not entries:
            return None
        product = self._catalog.get(entries[0][1].sku)
        name = product.name if product is not None else entries[0][1].sku
        return PickPage(
            name,
            tuple(PickEntry(line.quantity, line.order_id, plist.picker, plist.colour) for plist, line in entries),
            self._locale,
        )

    def lit_tags(self) -> set[str]:
        return set(self._by_tag)

    # -- requests -----------------------------------------------------------------------------

    async def start(
        self,
        list_id: str,
        *,
        picker: str,
        colour: str | None,
        order_ids: Sequence[str],
        lines: Sequence[tuple[str, str, int]],
    ) -> PickList:
        """A new pick list: `lines` are (order_id, sku, quantity). Lights its tags at once; returns the list."""
        if not lines or len(lines) > MAX_LINES:
            raise PickingError("invalid_payload", f"a pick list has 1-{MAX_LINES} lines")
        if colour is not None and colour not in LED_CODES:
            raise PickingError("invalid_payload", f"colour must be one of {', '.join(LED_CODES)}")
        for order_id, sku, quantity in lines:
            if quantity < 1:
                raise PickingError("bad_quantity", f"line {sku} for {order_id}: quantity must be at least 1")
        async with self._lock:
            if self.get(list_id) is not None:
                raise PickingError("duplicate_list", f"pick list {list_id} exists already")
            colour = colour or self._free_colour()
            skus = sorted({sku for _, sku, _ in lines})
            tags_by_sku: dict[str, list[str]] = {}
            for rec in self._labels.registry.by_sku(skus):
                if rec.adopted:
                    tags_by_sku.setdefault(rec.sku or "", []).append(rec.tag_id)
            now = self._clock()
            orders = list(dict.fromkeys([*order_ids, *(o for o, _, _ in lines)]))

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(
                    f"INSERT INTO pick_lists({_LIST_COLUMNS}, updated_ms) VALUES (?, ?, ?, ?, 'active', ?, NULL, ?)",  # noqa: S608
                    (list_id, picker, colour, json.dumps(orders), now, now),
                )
                conn.executemany(
                    "INSERT INTO pick_lines(list_id, line_no, order_id, sku, quantity, tags, state) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'open')",
                    [
                        (list_id, n, order_id, sku, quantity, json.dumps(sorted(tags_by_sku.get(sku, []))))
                        for n, (order_id, sku, quantity) in enumerate(lines, 1)
                    ],
                )

            await self._db.write(job)
            plist = self.get(list_id)
            assert plist is not None
            self._index()
        tags = {t for line in plist.lines for t in line.tags}
        await self._show(tags)
        self._changed({"change": "started", "list_id": list_id})
        return plist

    async def cancel(self, list_id: str, *, actor: str) -> PickList:
        """End a list: every open line is cancelled and its tags go back to their price."""
        async with self._lock:
            plist = self.get(list_id)
            if plist is None:
                raise PickingError("unknown_list", f"no pick list {list_id}")
            if plist.state != "active":
                raise PickingError("not_open", f"pick list {list_id} is {plist.state}")
            now = self._clock()
            tags = {t for line in plist.open_lines for t in line.tags}

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "UPDATE pick_lines SET state = 'cancelled', confirmed_by = ?, confirmed_ms = ? "
                    "WHERE list_id = ? AND state = 'open'",
                    (actor, now, list_id),
                )
                conn.execute(
                    "UPDATE pick_lists SET state = 'cancelled', finished_ms = ?, updated_ms = ? WHERE list_id = ?",
                    (now, now, list_id),
                )
                _mark_restore(conn, tags, now)

            await self._db.write(job)
            self._index()
        await self._events.publish_event(
            "pick.cancelled",
            {"list_id": list_id, "picker": plist.picker, "by": actor, "open_lines": len(plist.open_lines),
             "elapsed_ms": now - plist.created_ms},
        )
        await self._restore(tags)
        self._changed({"change": "cancelled", "list_id": list_id})
        result = self.get(list_id)
        assert result is not None
        return result

    async def confirm(
        self,
        list_id: str,
        line_no: int,
        *,
        by: str,
        picked_qty: int | None = None,
        substitute_sku: str | None = None,
    ) -> PickLine:
        """Staff took the line's goods: all of it, `picked_qty` of it (short), or `substitute_sku` instead."""
        async with self._lock:
            plist = self.get(list_id)
            if plist is None:
                raise PickingError("unknown_list", f"no pick list {list_id}")
            line = next((x for x in plist.lines if x.line_no == line_no), None)
            if line is None:
                raise PickingError("unknown_line", f"pick list {list_id} has no line {line_no}")
            if line.state != "open":
                raise PickingError("not_open", f"line {line_no} of {list_id} is {line.state} already")
            qty = line.quantity if picked_qty is None else picked_qty
            if substitute_sku is not None:
                product = self._catalog.get(substitute_sku) or self._catalog.find_by_barcode(substitute_sku)
                if product is None:
                    raise PickingError("unknown_sku", f"no product {substitute_sku!r} to substitute")
                substitute_sku = product.sku
                if not 1 <= qty <= 10_000:
                    raise PickingError("bad_quantity", "a substitution takes a quantity of at least 1")
                state = "substituted"
            else:
                if not 0 <= qty <= line.quantity:
                    raise PickingError("bad_quantity", f"picked quantity must be 0-{line.quantity}")
                state = "picked" if qty == line.quantity else "short"
            now = self._clock()
            others_open = [x for x in plist.open_lines if x.line_no != line_no]
            completed = not others_open

            def job(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "UPDATE pick_lines SET state = ?, picked_qty = ?, substitute_sku = ?, confirmed_by = ?, "
                    "confirmed_ms = ? WHERE list_id = ? AND line_no = ?",
                    (state, qty, substitute_sku, by, now, list_id, line_no),
                )
                if completed:
                    conn.execute(
                        "UPDATE pick_lists SET state = 'completed', finished_ms = ?, updated_ms = ? WHERE list_id = ?",
                        (now, now, list_id),
                    )
                else:
                    conn.execute("UPDATE pick_lists SET updated_ms = ? WHERE list_id = ?", (now, list_id))
                _mark_restore(conn, line.tags, now)

            await self._db.write(job)
            self._index()
        done = replace(line, state=state, picked_qty=qty, substitute_sku=substitute_sku, confirmed_by=by,
                       confirmed_ms=now)
        await self._restore(set(line.tags))
        payload = {
            "list_id": list_id, "line_no": line_no, "order_id": line.order_id, "sku": line.sku,
            "quantity": line.quantity, "picked_qty": qty, "state": state, "by": by.partition(":")[0],
            "picker": plist.picker, "elapsed_ms": now - plist.created_ms,
        }  # fmt: skip
        if substitute_sku is not None:
            payload["substitute_sku"] = substitute_sku
        await self._events.publish_event("pick.line_confirmed", payload)
        if state == "short":
            await self._events.publish_event(
                "pick.short",
                {"list_id": list_id, "line_no": line_no, "order_id": line.order_id, "sku": line.sku,
                 "quantity": line.quantity, "picked_qty": qty, "picker": plist.picker},
            )
        if completed:
            await self._completed(list_id)
        self._changed({"change": "confirmed", "list_id": list_id, "line_no": line_no})
        return done

    async def scanned(self, source: str, code: str) -> PickLine | None:
        """A staff scanner read `code`: the open line of that product is confirmed in full. Several open lines
        of the product: the scanning picker's own (a handheld's device id is its picker id) first, else the
        oldest list's. None when the code names no product with an open line (the scan is someone else's)."""
        code = code.strip()
        product = self._catalog.get(code) or self._catalog.find_by_barcode(code)
        if product is None:
            return None
        device = source.partition(":")[2]
        candidates = [(plist, line) for plist in self.lists() for line in plist.open_lines if line.sku == product.sku]
        if not candidates:
            return None
        candidates.sort(key=lambda c: (c[0].picker != device, c[0].created_ms, c[0].list_id, c[1].line_no))
        plist, line = candidates[0]
        try:
            return await self.confirm(plist.list_id, line.line_no, by=f"scan:{source}")
        except PickingError as exc:  # confirmed by someone else a moment ago
            log.info("scan of %s from %s: %s", product.sku, source, exc)
            return None

    async def button(self, tag_id: str) -> PickLine | None:
        """The tag's button: confirms the oldest open line lighting this tag; None when it lights none."""
        entries = self._by_tag.get(tag_id)
        if not entries:
            return None
        plist, line = entries[0]
        try:
            return await self.confirm(plist.list_id, line.line_no, by=f"button:{tag_id}")
        except PickingError as exc:
            log.info("button of %s: %s", tag_id, exc)
            return None

    # -- running ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start: relight the tags of open lines (their LED ran out while the agent was away) and finish every
        restore a stop interrupted."""
        self._index()
        pending = self._db.read(lambda c: [str(r[0]) for r in c.execute("SELECT tag_id FROM tag_restores")])
        await self._show(set(self._by_tag))
        await self._restore(set(pending))

    async def run(self) -> None:
        """Recover, then renew lit LEDs and fast zones and retry restores that failed. Until cancelled."""
        # The base stations connect as the label service starts: give them a moment, so the relit LEDs and the
        # restores go out now rather than at the first renewal.
        for _ in range(100):  # at most 10 s: a station that stays away is retried by the renewals
            if all(st.connected for st in self._labels.stations.values()):
                break
            await asyncio.sleep(0.1)
        try:
            await self.recover()
        except Exception:
            log.exception("recovering pick lists failed; the renewals go on")
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.led_renew_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing pick lights failed")

    async def _renew(self) -> None:
        tags = set(self._by_tag)
        for tag in tags:
            self._turn[tag] = self._turn.get(tag, 0) + 1
        await self._light(tags)
        await self._keep_zones_fast(tags)
        pending = self._db.read(lambda c: [str(r[0]) for r in c.execute("SELECT tag_id FROM tag_restores")])
        if pending:
            await self._restore(set(pending))

    # -- lights and pages ---------------------------------------------------------------------

    def _index(self) -> None:
        by_tag: dict[str, list[tuple[PickList, PickLine]]] = {}
        for plist in sorted(self.lists(limit=1000), key=lambda p: (p.created_ms, p.list_id)):
            for line in plist.open_lines:
                for tag in line.tags:
                    by_tag.setdefault(tag, []).append((plist, line))
        self._by_tag = by_tag
        for tag in list(self._turn):
            if tag not in by_tag:
                del self._turn[tag]

    def _colour_of(self, tag: str) -> int:
        entries = self._by_tag.get(tag)
        if not entries:
            return 0
        colours = list(dict.fromkeys(plist.colour for plist, _ in entries))
        return LED_CODES[colours[self._turn.get(tag, 0) % len(colours)]]

    def _free_colour(self) -> str:
        used = [p.colour for p in self.lists()]
        return min(PICKER_COLOURS, key=lambda c: (used.count(c), PICKER_COLOURS.index(c)))

    async def _show(self, tags: set[str]) -> None:
        """Tags that gained (or keep) open lines: LED in their colour, the pick page, and their zone fast."""
        if not tags:
            return
        await self._light(tags)
        await self._labels.request_update(sorted(tags), PRIORITY_TECHNICIAN, "pick list")
        # Waking a zone asks every tag on its base station: in the background, so this list's lights go first.
        task = asyncio.get_running_loop().create_task(self._keep_zones_fast(tags), name="pick-zone-fast")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _light(self, tags: Iterable[str]) -> None:
        tags = list(tags)
        s = self.settings
        for colour in sorted({self._colour_of(t) for t in tags} - {0}):
            # Who gets this colour is decided just before it is sent: a line that ended while the previous colour
            # was on its way has had its light put out, and must not be lit again for another renewal period.
            ids = [t for t in tags if self._colour_of(t) == colour]
            if not ids:
                continue
            answers = await self._labels.led(ids, colour=colour, count=s.led_count, period_ms=s.led_period_ms)
            failed = {t: a for t, a in answers.items() if a != 0}
            if failed:
                log.warning("pick lights not lit on %d tags (renewed later): %s", len(failed),
                            dict(list(failed.items())[:5]))

    async def _restore(self, tags: set[str]) -> None:
        """Tags whose lines ended: those with other open lines are relit and redrawn; the rest go dark and get
        their price page back. Their `tag_restores` rows go once both were asked for."""
        if not tags:
            return
        still = {t for t in tags if t in self._by_tag}
        dark = tags - still
        if still:
            await self._light(still)
        done = set(still)
        if dark:
            s = self.settings
            answers = await self._labels.led(sorted(dark), colour=0, count=0, period_ms=s.led_period_ms)
            # Answered (any status: a base station that forgot the tag has no light of it to stop), or a tag no
            # base station serves: done. A base station that did not answer: the run loop tries again.
            done |= {t for t, a in answers.items() if isinstance(a, int) or a.startswith("LookupError")}
        await self._labels.request_update(sorted(tags), PRIORITY_TECHNICIAN, "pick line done")
        if done:
            marks = sorted(done)
            await self._db.write(
                lambda c: c.executemany("DELETE FROM tag_restores WHERE tag_id = ?", [(t,) for t in marks])
            )

    async def _keep_zones_fast(self, tags: Iterable[str]) -> None:
        """The zones (base stations) of these lit tags stay fast: SET_FAST to every paired tag there, at once when
        the zone wakes, then at half-life of fast_s while it is active and for zone_linger_s after."""
        s = self.settings
        now = time.monotonic()
        stations = set()
        for tag in tags:
            rec = self._labels.registry.get(tag)
            if rec is not None and rec.base_station:
                stations.add(rec.base_station)
                self._zone_until[rec.base_station] = now + s.zone_linger_s
        for station, until in list(self._zone_until.items()):
            if now > until:
                del self._zone_until[station]
                self._zone_fast_at.pop(station, None)
                continue
            stations.add(station)
        due = [st for st in stations if now - self._zone_fast_at.get(st, -1e9) >= s.fast_s / 2]
        gate = asyncio.Semaphore(s.zone_concurrency)

        async def one(tag: str) -> None:
            async with gate:
                await self._labels.set_fast([tag], s.fast_s)

        for station in due:
            self._zone_fast_at[station] = now
            zone = self._labels.registry.paired_on(station)
            lit_first = sorted(zone, key=lambda t: t not in self._by_tag)  # the tags waiting now go first
            await asyncio.gather(*(one(t) for t in lit_first))

    # -- events -------------------------------------------------------------------------------

    async def _completed(self, list_id: str) -> None:
        plist = self.get(list_id)
        if plist is None:
            return
        finished = plist.finished_ms or self._clock()
        lines = []
        for line in plist.lines:
            item: dict[str, Any] = {
                "line_no": line.line_no, "order_id": line.order_id, "sku": line.sku, "quantity": line.quantity,
                "picked_qty": line.picked_qty, "state": line.state,
                "elapsed_ms": None if line.confirmed_ms is None else line.confirmed_ms - plist.created_ms,
            }  # fmt: skip
            if line.substitute_sku is not None:
                item["substitute_sku"] = line.substitute_sku
            lines.append(item)
        await self._events.publish_event(
            "pick.completed",
            {
                "list_id": list_id,
                "picker": plist.picker,
                "order_ids": list(plist.order_ids),
                "started_ms": plist.created_ms,
                "finished_ms": finished,
                "duration_ms": finished - plist.created_ms,
                "short_lines": sum(1 for x in plist.lines if x.state == "short"),
                "lines": lines,
            },
        )

    def _changed(self, change: dict[str, Any]) -> None:
        self._wake.set()
        for fn in self._listeners:
            try:
                fn(change)
            except Exception:
                log.exception("a picking listener failed")


def _mark_restore(conn: sqlite3.Connection, tags: Iterable[str], now: int) -> None:
    conn.executemany(
        "INSERT INTO tag_restores(tag_id, since_ms) VALUES (?, ?) ON CONFLICT(tag_id) DO NOTHING",
        [(t, now) for t in tags],
    )
