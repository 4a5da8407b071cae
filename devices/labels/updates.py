"""Label updates: render, decide, schedule, send through the base stations, confirm by hash.

One job per tag in `tag_jobs` (state queued -> sending -> confirmed, or failed after retries with
backoff). Newer content replaces older queued content: a job is keyed by tag and holds the newest
target picture. Priorities: 0 technician actions, 1 price changes, 2 cosmetic changes; during quiet
hours only jobs below `quiet_hold_priority` go out. Per base station at most `max_in_flight` transfers
at once. A picture equal to what the tag already shows sends nothing at all; otherwise a delta against
the shown picture when we hold it, a full picture when not.

A tag is "confirmed" only when the base station reports TRANSFER_DONE with exactly the target hash
(computed by the tag over what it now shows). Then `tag.updated` goes to the cloud; a job that gives up
emits `tag.update_failed`. Check-ins update telemetry, emit `tag.discovered` and `tag.low_battery`, and
publish the tag's state (coalesced).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloud_link.ports import DurableStore, StateSink
from devices.labels.pages import TaskPage
from devices.labels.registry import Checkin, TagRecord, TagRegistry, now_ms
from devices.labels.render import LabelContent, picture_image
from devices.labels.render_pool import RenderPool, RenderRequest
from firmware_bridge.base_station.client import BaseStationClient, Transfer, TransferOutcome
from firmware_bridge.base_station.messages import (
    ButtonPress,
    Message,
    TagCheckin,
    TagDiscovered,
    tag_bytes,
)
from firmware_bridge.picture import encode_picture
from firmware_bridge.tag_types import TAG_TYPES

log = logging.getLogger(__name__)

PRIORITY_TECHNICIAN = 0
PRIORITY_PRICE = 1
PRIORITY_COSMETIC = 2
RENDER_SLICE = 64


ContentSource = Callable[[str], LabelContent | None]
# What a tag shows instead of its price while it takes part in a task (a pick line, a pickup-shelf slot); None
# when the source has nothing for it. Consulted on every render, so the price comes back by itself once every
# source says None and the tag is re-rendered.
PageSource = Callable[[TagRecord], TaskPage | None]


class LabelStation(Protocol):
    """What delivers pictures to tags: a serial base station, or the in-store broker for Wi-Fi labels.

    Events (TagCheckin, TagDiscovered, ButtonPress, from firmware_bridge.base_station.messages) go to
    the callback the station was built with (LabelService.on_station_event).
    """

    name: str

    @property
    def connected(self) -> bool: ...

    @property
    def max_held(self) -> int: ...

    @property
    def sync_token(self) -> object: ...

    async def run(self) -> None: ...

    async def sync(self) -> list[tuple[bytes, int, bytes]]: ...

    def push(
        self,
        tag: bytes,
        *,
        encoding: int,
        data: bytes,
        picture_hash: bytes,
        base_hash: bytes | None = None,
        page: int = 0,
    ) -> Transfer: ...

    def cancel(self, xfer: int) -> None: ...

    async def led_flash(
        self, tag: bytes, *, colour: int = 2, count: int = 5, period_ms: int = 500, timeout: float = 5.0
    ) -> int: ...

    async def set_fast(self, tag: bytes, seconds: int, timeout: float = 5.0) -> int: ...


@dataclass(frozen=True)
class LabelSettings:
    public_base_url: str = "http://127.0.0.1:8080"
    low_battery_mv: int = 2450
    quiet_hours: tuple[dt.time, dt.time] | None = None
    quiet_hold_priority: int = PRIORITY_COSMETIC
    # Transfers on the serial line at once (sent, not yet stored by the base station) ...
    max_in_flight: int = 8
    # ... and transfers held by the base station awaiting radio delivery, at most (its INFO may lower it).
    max_held: int = 64
    max_attempts: int = 6
    transfer_timeout_s: float = 600.0
    state_interval_s: float = 300.0
    # Which new tags are adopted on sight ([labels] adopt): every one, or only `allowed_tags`. A tag not adopted
    # is discovered: recorded, never sent a picture (devices.labels.registry).
    adopt_all: bool = True
    allowed_tags: frozenset[str] = frozenset()

    def adopts(self, tag_id: str) -> bool:
        return self.adopt_all or tag_id in self.allowed_tags

    def scan_url(self, scan_code: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/s/{scan_code}"

    def quiet_now(self, now: dt.datetime | None = None) -> bool:
        if self.quiet_hours is None:
            return False
        start, end = self.quiet_hours
        t = (now or dt.datetime.now()).time()
        return start <= t < end if start <= end else (t >= start or t < end)


@dataclass
class LabelStats:
    rendered: int = 0
    unchanged: int = 0
    sent: int = 0
    confirmed: int = 0
    retried: int = 0
    failed: int = 0
    wrong_hash: int = 0
    superseded: int = 0
    bytes_sent: int = 0
    last_error: dict[str, str] = field(default_factory=dict)


def type_name(type_code: int) -> str:
    info = TAG_TYPES.get(type_code)
    return info.name if info else f"0x{type_code:02x}"


def _png(raw: bytes, type_code: int, scale: int) -> bytes:
    image = picture_image(raw, TAG_TYPES[type_code])
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# How long after a confirmed update a check-in reporting the previous picture is taken as sent before it (the
# link's bulk channel can lag its urgent one by its retransmissions on a noisy line; a tag that really went
# back to the old picture is caught by its next check-in after this).
STALE_CHECKIN_S = 30.0


def backoff_ms(attempts: int) -> int:
    return int(min(600.0, 2.0 ** min(attempts, 10)) * 1000)


class LabelService:
    def __init__(
        self,
        store: DurableStore,
        *,
        content: ContentSource,
        events: StateSink,
        renderer: RenderPool,
        settings: LabelSettings | None = None,
    ) -> None:
        self._store = store
        self.settings = settings or LabelSettings()
        self.registry = TagRegistry(store, adopt_on_sight=self.settings.adopts)
        self._content = content
        self._events = events
        self._renderer = renderer
        self.stations: dict[str, LabelStation] = {}
        self.stats = LabelStats()
        self._wake: dict[str, asyncio.Event] = {}
        self._in_flight: dict[str, dict[str, Transfer]] = {}
        self._state_sent: dict[str, tuple[float, str | None, str | None]] = {}
        self._low_battery: set[str] = set()
        # tag -> (when, the hash it showed before): its last confirmed update. Check-ins travel on the bulk
        # channel and confirmations on the urgent one, so a check-in the tag sent just before the update can
        # arrive just after its confirmation; it must not undo it (see _on_checkin).
        self._confirmed_from: dict[str, tuple[float, str | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._page_sources: list[PageSource] = []
        # tag -> the number of the newest request_update that decided its content. Two requests for one tag can
        # finish rendering out of order (a pick page asked for at start, the price asked for by a cancel while
        # that page renders); only the newest may queue its picture, or the older content wins.
        self._asked: dict[str, int] = {}
        self._asked_seq = 0
        # Tasks that take a tag's button press (a pick line's confirmation): the first that returns True has it;
        # a press nobody takes goes to the cloud as tag.button.
        self.button_handlers: list[Callable[[str, int], Awaitable[bool]]] = []

    # -- wiring ------------------------------------------------------------------------------

    def add_station(self, name: str, url: str, *, baudrate: int = 115200) -> BaseStationClient:
        client = BaseStationClient(name, url, baudrate=baudrate, on_event=self.on_station_event)
        self.add_label_station(client)
        return client

    def add_label_station(self, station: LabelStation) -> None:
        """Any station (its events must be sent to `on_station_event`)."""
        if station.name in self.stations:
            raise ValueError(f"label station {station.name!r} added twice")
        self.stations[station.name] = station
        self._wake[station.name] = asyncio.Event()
        self._in_flight[station.name] = {}

    def add_page_source(self, source: PageSource) -> None:
        """A task that takes over tags' pictures (picking, pickup shelves); the first source with a page wins."""
        self._page_sources.append(source)

    def task_page(self, rec: TagRecord) -> TaskPage | None:
        for source in self._page_sources:
            page = source(rec)
            if page is not None:
                return page
        return None

    async def run(self) -> None:
        """Run every base station and its sender until cancelled."""
        await self._requeue_interrupted()
        try:
            async with asyncio.TaskGroup() as tg:
                for name, client in self.stations.items():
                    tg.create_task(client.run(), name=f"base-station-{name}")
                    tg.create_task(self._sender(name), name=f"label-sender-{name}")
        finally:
            # Transfers still awaited and events still being handled end with the service: their outcome would
            # otherwise be written after the agent closed the database. A job left 'sending' is queued again at
            # the next start (_requeue_interrupted).
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- requests ----------------------------------------------------------------------------

    async def refresh_skus(self, skus: list[str], priority: int = PRIORITY_PRICE) -> int:
        """Catalog listener: re-render the tags showing these products."""
        tags = self.registry.by_sku(list(skus))
        return await self.request_update([t.tag_id for t in tags], priority, "catalog change")

    async def request_update(self, tag_ids: Iterable[str], priority: int, reason: str) -> int:
        """Render the tags' pictures and queue a job for each whose picture differs; returns jobs queued."""
        ids = list(tag_ids)
        queued = 0
        # In slices, so the first pictures go out while the rest are still being rendered, and so the
        # content of a thousand tags (a catalog read each) is never built in one stretch of the event loop:
        # a customer's unlock waits behind any such stretch.
        for start in range(0, len(ids), RENDER_SLICE):
            part: list[tuple[TagRecord, RenderRequest]] = []
            for rec in (self.registry.get(t) for t in ids[start : start + RENDER_SLICE]):
                if rec is None or not rec.adopted or rec.type_code not in TAG_TYPES:
                    continue  # a discovered tag is not ours to draw on until adopted
                page = self.task_page(rec)
                if page is not None:
                    part.append((rec, RenderRequest(None, rec.type_code, rec.rotation, None, rec.template, page)))
                    continue
                content = None if rec.sku is None else self._content(rec.sku)
                if content is None:
                    continue
                part.append(
                    (rec, RenderRequest(content, rec.type_code, rec.rotation, self.settings.scan_url(rec.scan_code),
                                        rec.template))
                )
            if not part:
                continue
            self._asked_seq += 1
            ticket = self._asked_seq
            for rec, _ in part:
                self._asked[rec.tag_id] = ticket
            results = await self._renderer.render([r for _, r in part])
            self.stats.rendered += len(results)
            touched: set[str] = set()
            for (rec, _), result in zip(part, results, strict=True):
                target = result.hash.hex()
                if await self._queue_job(rec, target, result.raw, priority, reason, ticket=ticket):
                    queued += 1
                    if rec.base_station:
                        touched.add(rec.base_station)
            for name in touched:
                if name in self._wake:
                    self._wake[name].set()
        return queued

    def _superseded(self, tag_id: str, ticket: int) -> bool:
        """True when a newer request_update decided this tag's content after `ticket` did."""
        if self._asked.get(tag_id) == ticket:
            return False
        self.stats.superseded += 1
        return True

    async def _queue_job(
        self, rec: TagRecord, target: str, raw: bytes, priority: int, reason: str, *, ticket: int
    ) -> bool:
        """Queue `target` for the tag unless it already shows it; the checks of `ticket` and the writes that follow
        them have no await between them, and the writer runs writes in order, so older content never lands last."""
        if self._superseded(rec.tag_id, ticket):
            return False
        ts = now_ms()
        current = self.registry.get(rec.tag_id)
        shown = current.current_hash if current else rec.current_hash
        if shown == target and not self._sending_other(rec.tag_id, target):
            # Nothing to send: the tag already shows exactly this. Drop any queued older content.
            self.stats.unchanged += 1
            await self._store.write(
                lambda c: c.execute(
                    "UPDATE tag_jobs SET state = 'confirmed', target_hash = ?, updated_ms = ? "
                    "WHERE tag_id = ? AND state IN ('queued', 'failed')",
                    (target, ts, rec.tag_id),
                )
            )
            return False
        await self.registry.save_picture(rec.tag_id, target, raw)
        if self._superseded(rec.tag_id, ticket):
            return False

        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state, priority FROM tag_jobs WHERE tag_id = ?", (rec.tag_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO tag_jobs(tag_id, state, priority, reason, target_hash, created_ms, updated_ms) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                    (rec.tag_id, priority, reason, target, ts, ts),
                )
                return
            state, old_priority = row
            # Newer content replaces older; an urgent reason keeps its urgency.
            new_priority = min(priority, old_priority) if state in ("queued", "sending") else priority
            conn.execute(
                "UPDATE tag_jobs SET state = 'queued', priority = ?, reason = ?, target_hash = ?, attempts = 0, "
                "next_attempt_ms = 0, error = NULL, updated_ms = ? WHERE tag_id = ?",
                (new_priority, reason, target, ts, rec.tag_id),
            )

        await self._store.write(job)
        return True

    def _sending_other(self, tag_id: str, target: str) -> bool:
        """True while a transfer of other content to the tag is on its way. The tag shows `target` now but will
        show that content once it lands, so `target` must be queued to follow it, not taken as shown."""
        row = self._store.read(
            lambda c: c.execute("SELECT state, target_hash FROM tag_jobs WHERE tag_id = ?", (tag_id,)).fetchone()
        )
        return row is not None and row[0] == "sending" and row[1] != target

    async def _requeue_interrupted(self) -> None:
        """Jobs that were being sent when the agent stopped are queued again (their transfer is gone)."""
        await self._store.write(
            lambda c: c.execute("UPDATE tag_jobs SET state = 'queued', next_attempt_ms = 0 WHERE state = 'sending'")
        )

    def preview_png(self, tag_id: str, *, scale: int = 1, picture_hash: str | None = None) -> bytes | None:
        """The picture a tag shows (as confirmed), or the one of `picture_hash` (a queued job's target: what it
        will show), as a PNG in its true colours; None if unknown."""
        rec = self.registry.get(tag_id)
        if rec is None or rec.type_code not in TAG_TYPES:
            return None
        raw = self.registry.picture(tag_id, picture_hash or rec.current_hash)
        if raw is None:
            return None
        image = picture_image(raw, TAG_TYPES[rec.type_code])
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    async def render_preview_png(self, tag_id: str, sku: str, *, scale: int = 1) -> bytes | None:
        """What the tag will show once paired with `sku` (rendered as an update would be: same content, type,
        rotation, template and scan link), as a PNG; None when the tag or product is unknown. Nothing is sent."""
        rec = self.registry.get(tag_id)
        if rec is None or rec.type_code not in TAG_TYPES:
            return None
        content = self._content(sku)
        if content is None:
            return None
        request = RenderRequest(content, rec.type_code, rec.rotation, self.settings.scan_url(rec.scan_code),
                                rec.template)
        [result] = await self._renderer.render([request])
        return _png(result.raw, rec.type_code, scale)

    def progress(self) -> dict[str, int]:
        rows = self._store.read(lambda c: c.execute("SELECT state, COUNT(*) FROM tag_jobs GROUP BY state").fetchall())
        counts = {"queued": 0, "sending": 0, "confirmed": 0, "failed": 0}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    # -- sending -----------------------------------------------------------------------------

    async def _sender(self, station: str) -> None:
        client = self.stations[station]
        wake = self._wake[station]
        in_flight = self._in_flight[station]
        synced: object = None
        while True:
            wake.clear()
            if client.connected and synced != client.sync_token:
                synced = await self._sync_station(client)
            if client.connected:
                on_line = sum(1 for t in in_flight.values() if not t.stored.done())
                held_cap = min(self.settings.max_held, client.max_held)
                free = min(self.settings.max_in_flight - on_line, held_cap - len(in_flight))
                if free > 0:
                    for tag_id, target, attempts in self._due_jobs(station, free, set(in_flight)):
                        await self._start(client, tag_id, target, attempts)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # not wait_for: it can lose a cancellation on 3.11
                    await wake.wait()

    async def _sync_station(self, client: LabelStation) -> object:
        """After (re)connecting: learn the station's limits and register the tags it reports."""
        try:
            records = await client.sync()
        except Exception as exc:  # a station that does not answer is asked again after the next wake-up
            log.warning("label station %s: sync failed: %s", client.name, exc)
            return None
        for tag, type_code, _shown in records:
            _, created = await self.registry.ensure(tag.hex(), type_code, client.name)
            if created:
                await self._discovered(tag.hex(), type_code, client.name, 0)
        log.info("label station %s: %d tags reported", client.name, len(records))
        return client.sync_token

    def _due_jobs(self, station: str, limit: int, busy: set[str]) -> list[tuple[str, str, int]]:
        hold = self.settings.quiet_hold_priority if self.settings.quiet_now() else 99
        now = now_ms()
        rows = self._store.read(
            lambda c: c.execute(
                "SELECT j.tag_id, j.target_hash, j.attempts FROM tag_jobs j JOIN tags t ON t.tag_id = j.tag_id "
                "WHERE j.state = 'queued' AND t.base_station = ? AND j.next_attempt_ms <= ? AND j.priority < ? "
                "ORDER BY j.priority, j.next_attempt_ms, j.updated_ms LIMIT ?",
                (station, now, hold, limit + len(busy)),
            ).fetchall()
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows if r[0] not in busy][:limit]

    async def _start(self, client: LabelStation, tag_id: str, target: str, attempts: int) -> None:
        rec = self.registry.get(tag_id)
        raw = self.registry.picture(tag_id, target)
        if rec is None or raw is None:
            await self._set_job(tag_id, target, "failed", attempts, "picture missing")
            return
        if rec.current_hash == target:
            await self._set_job(tag_id, target, "confirmed", attempts, None)
            return
        base = self.registry.picture(tag_id, rec.current_hash)
        encoded = encode_picture(raw, base)
        await self._set_job(tag_id, target, "sending", attempts + 1, None)
        transfer = client.push(
            tag_bytes(tag_id),
            encoding=int(encoded.kind),
            data=encoded.data,
            picture_hash=encoded.hash,
            base_hash=encoded.base_hash,
        )
        self.stats.sent += 1
        self.stats.bytes_sent += transfer.wire_payload_bytes
        self._in_flight[client.name][tag_id] = transfer
        # Once the base station holds the picture the line is free for the next one.
        transfer.stored.add_done_callback(lambda _f: self._wake[client.name].set())
        task = asyncio.get_running_loop().create_task(
            self._await_transfer(
                client, rec, target=target, attempts=attempts + 1, transfer=transfer, started=time.monotonic()
            ),
            name=f"transfer-{tag_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _await_transfer(
        self,
        client: LabelStation,
        rec: TagRecord,
        *,
        target: str,
        attempts: int,
        transfer: Transfer,
        started: float,
    ) -> None:
        # The tag stays busy until the outcome is recorded: a job queued for it meanwhile must see what the tag
        # shows now, or it would take the registry's older picture for shown and settle without sending.
        try:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(transfer.done), self.settings.transfer_timeout_s)
            except TimeoutError:
                client.cancel(transfer.xfer)
                outcome = TransferOutcome(False, None, "timeout")
            try:
                await self._conclude(
                    rec, target=target, attempts=attempts, outcome=outcome, transfer=transfer, started=started
                )
            except Exception:
                log.exception("recording the outcome of a transfer to %s failed", rec.tag_id)
        finally:
            self._in_flight[client.name].pop(rec.tag_id, None)
            self._wake[client.name].set()

    async def _conclude(
        self,
        rec: TagRecord,
        *,
        target: str,
        attempts: int,
        outcome: TransferOutcome,
        transfer: Transfer,
        started: float,
    ) -> None:
        shown = outcome.shown_hash.hex() if outcome.shown_hash else None
        if outcome.ok and shown == target:
            self._confirmed_from[rec.tag_id] = (time.monotonic(), rec.current_hash)
            await self.registry.set_shown(rec.tag_id, target)
            still_current = await self._set_job(rec.tag_id, target, "confirmed", attempts, None)
            self.stats.confirmed += 1
            await self._events.publish_event(
                "tag.updated",
                {
                    "tag_id": rec.tag_id,
                    "sku": rec.sku,
                    "hash": target,
                    "bytes": transfer.wire_payload_bytes,
                    "attempts": attempts,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                },
            )
            if not still_current:
                log.debug("tag %s confirmed %s; newer content is queued", rec.tag_id, target)
            confirmed = self.registry.get(rec.tag_id)
            if confirmed is not None:
                await self._maybe_publish_state(confirmed)  # the new picture is news for the cloud now
            return
        if outcome.ok:
            # The tag shows something else than what we sent: never count that as done.
            self.stats.wrong_hash += 1
            await self.registry.set_shown(rec.tag_id, shown)
            reason = f"tag reports hash {shown}, expected {target}"
        else:
            reason = outcome.reason or "unknown"
            if reason == "base_unknown":
                await self.registry.set_shown(rec.tag_id, None)  # send a full picture next time
        self.stats.last_error[rec.tag_id] = reason
        if attempts >= self.settings.max_attempts:
            self.stats.failed += 1
            await self._set_job(rec.tag_id, target, "failed", attempts, reason)
            await self._events.publish_event(
                "tag.update_failed",
                {"tag_id": rec.tag_id, "sku": rec.sku, "hash": target, "reason": reason, "attempts": attempts},
            )
        else:
            self.stats.retried += 1
            # A base-station reset is not the tag's fault: retry at once, without backoff.
            delay = 0 if reason == "base_station_reset" else backoff_ms(attempts)
            await self._set_job(rec.tag_id, target, "queued", attempts, reason, next_attempt_ms=now_ms() + delay)

    async def _set_job(
        self,
        tag_id: str,
        target: str,
        state: str,
        attempts: int,
        error: str | None,
        *,
        next_attempt_ms: int = 0,
    ) -> bool:
        """Update the job if it still targets `target` (newer content may have replaced it)."""
        ts = now_ms()
        return await self._store.write(
            lambda c: c.execute(
                "UPDATE tag_jobs SET state = ?, attempts = ?, error = ?, next_attempt_ms = ?, updated_ms = ? "
                "WHERE tag_id = ? AND target_hash = ?",
                (state, attempts, error, next_attempt_ms, ts, tag_id, target),
            ).rowcount
            > 0
        )

    # -- technician actions ------------------------------------------------------------------

    async def flash(self, tag_id: str, *, colour: int = 2, count: int = 5, period_ms: int = 500) -> int:
        rec = self.registry.get(tag_id)
        if rec is None or rec.base_station not in self.stations:
            raise LookupError(f"unknown tag {tag_id}")
        return await self.stations[rec.base_station].led_flash(
            tag_bytes(tag_id), colour=colour, count=count, period_ms=period_ms
        )

    async def led(self, tag_ids: Iterable[str], *, colour: int, count: int, period_ms: int) -> dict[str, int | str]:
        """Light (colour 1-4) or stop (colour 0) several tags' LEDs at once; per tag the base station's status
        or, when it could not be asked, the reason. Never raises for one tag's trouble."""
        ids = list(dict.fromkeys(tag_ids))
        answers = await asyncio.gather(
            *(self.flash(t, colour=colour, count=count, period_ms=period_ms) for t in ids), return_exceptions=True
        )
        return {t: (a if isinstance(a, int) else f"{type(a).__name__}: {a}") for t, a in zip(ids, answers, strict=True)}

    async def set_fast(self, tag_ids: Iterable[str], seconds: int) -> dict[str, int | str]:
        """Fast check-in for `seconds` (0 ends it) on each tag's base station: it then takes LED flashes and
        pictures at once instead of at its next check-in. Per tag the status, or the reason it was not asked."""

        async def one(tag_id: str) -> int | str:
            rec = self.registry.get(tag_id)
            if rec is None or rec.base_station not in self.stations:
                return "unknown tag"
            try:
                return await self.stations[rec.base_station].set_fast(tag_bytes(tag_id), seconds)
            except Exception as exc:  # an unreachable base station: the caller renews later
                return f"{type(exc).__name__}: {exc}"

        ids = list(dict.fromkeys(tag_ids))
        return dict(zip(ids, await asyncio.gather(*(one(t) for t in ids)), strict=True))

    # -- from the base stations ---------------------------------------------------------------

    def on_station_event(self, client: LabelStation, msg: Message) -> None:
        task = asyncio.get_running_loop().create_task(self._handle_event(client, msg), name="tag-event")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle_event(self, client: LabelStation, msg: Message) -> None:
        try:
            if isinstance(msg, TagCheckin):
                await self._on_checkin(client, msg)
            elif isinstance(msg, TagDiscovered):
                _, created = await self.registry.ensure(msg.tag.hex(), msg.type_code, client.name)
                if created:
                    await self._discovered(msg.tag.hex(), msg.type_code, client.name, msg.firmware)
            elif isinstance(msg, ButtonPress):
                for handler in self.button_handlers:
                    if await handler(msg.tag.hex(), msg.button):
                        return
                await self._events.publish_event("tag.button", {"tag_id": msg.tag.hex(), "button": msg.button})
        except Exception:
            log.exception("handling %s from base station %s failed", type(msg).__name__, client.name)

    async def _on_checkin(self, client: LabelStation, msg: TagCheckin) -> None:
        seen = Checkin(
            tag_id=msg.tag.hex(),
            type_code=msg.type_code,
            base_station=client.name,
            battery_mv=msg.battery_mv,
            temperature_c=msg.temperature_dc / 10.0,
            rssi=msg.rssi,
            lqi=msg.lqi,
            fw_version=msg.firmware,
            shown_hash=msg.hash.hex(),
        )
        result = await self.registry.record_checkin(seen, keep_shown=self._stale_checkin(seen))
        rec = result.record
        if result.new:
            await self._discovered(rec.tag_id, rec.type_code, client.name, msg.firmware)
        if msg.battery_mv < self.settings.low_battery_mv:
            if rec.tag_id not in self._low_battery:
                self._low_battery.add(rec.tag_id)
                await self._events.publish_event(
                    "tag.low_battery",
                    {"tag_id": rec.tag_id, "battery_mv": msg.battery_mv, "threshold_mv": self.settings.low_battery_mv},
                )
        elif msg.battery_mv >= self.settings.low_battery_mv + 50:
            self._low_battery.discard(rec.tag_id)  # hysteresis: one event per dip, not per check-in
        await self._maybe_publish_state(rec)
        drawn = rec.sku is not None or self.task_page(rec) is not None
        if result.hash_changed and drawn and rec.tag_id not in self._in_flight.get(client.name, {}):
            # The tag shows something we did not send (reset, swapped): make it right.
            await self.request_update([rec.tag_id], PRIORITY_PRICE, "tag shows an unexpected picture")

    def _stale_checkin(self, seen: Checkin) -> bool:
        """True for a check-in that reports the picture a tag showed before an update confirmed moments ago: it
        was sent before the update and overtaken by the confirmation on the urgent channel. Without this the
        registry would record the old picture and send the update again."""
        confirmed = self._confirmed_from.get(seen.tag_id)
        if confirmed is None:
            return False
        when, before = confirmed
        if time.monotonic() - when > STALE_CHECKIN_S:
            del self._confirmed_from[seen.tag_id]
            return False
        return before is not None and seen.shown_hash == before

    async def _discovered(self, tag_id: str, type_code: int, station: str, firmware: int) -> None:
        await self._events.publish_event(
            "tag.discovered",
            {
                "tag_id": tag_id,
                "type": type_name(type_code),
                "base_station": station,
                "firmware": firmware,
            },
        )

    async def _maybe_publish_state(self, rec: TagRecord) -> None:
        """Tag state goes up coalesced: on a change of picture or product, else every state_interval_s."""
        last = self._state_sent.get(rec.tag_id)
        now = time.monotonic()
        unchanged = last is not None and last[1] == rec.current_hash and last[2] == rec.sku
        if unchanged and last is not None and now - last[0] < self.settings.state_interval_s:
            return
        self._state_sent[rec.tag_id] = (now, rec.current_hash, rec.sku)
        await self._events.put_state(
            f"tag-{rec.tag_id}",
            {
                "kind": "tag",
                "type": type_name(rec.type_code),
                "base_station": rec.base_station,
                "sku": rec.sku,
                "hash": rec.current_hash,
                "battery_mv": rec.battery_mv,
                "temperature_c": rec.temperature_c,
                "rssi": rec.rssi,
                "lqi": rec.lqi,
                "fw_version": rec.fw_version,
                "last_seen_ms": rec.last_seen_ms,
            },
        )
