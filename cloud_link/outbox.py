"""The durable outbox: events wait here, on disk, until the cloud broker acknowledged them.

`publish()` returns only after the event is committed with fsync; concurrent producers share commits
through the store's group-committing writer. Each event gets the next `seq` in the same transaction
that stores it, so a sequence number is never handed out twice, even across a crash.

Size bound and policy per class when full (DESIGN.md section 7, docs/cloud-contract.md):
- critical (order, pickup, scan, alarm, audit): may fill the outbox to `max_bytes`; past that they are
  refused with `OutboxFullError`, the full-outbox alarm is raised and the refusal counted;
- standard: refused the same way, but already at `max_bytes * (1 - reserve)`, so the last few percent
  stay free for critical events;
- telemetry: at the same soft limit the oldest telemetry is dropped to make room (counted);
- device state: not in the outbox's event stream at all; one row per device, latest only.

Every event is accounted as its payload plus ENVELOPE_OVERHEAD bytes (envelope, index, row overhead).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_link.events import (
    Event,
    EventClass,
    classify,
    encode_payload,
    format_ts,
    new_event_id,
    now_ms,
    render_envelope,
    validate_event_type,
)
from cloud_link.ports import DurableStore
from cloud_link.topics import ID_RE, Topics

log = logging.getLogger(__name__)

ENVELOPE_OVERHEAD = 256
DEFAULT_RESERVE_FRACTION = 0.05
# The one event allowed past a full outbox, so the cloud learns why events stopped.
OUTBOX_FULL_ALARM = "alarm.outbox_full"
ALARM_HEADROOM_BYTES = 64 * 1024
# The alarm clears when usage falls below this share of the soft limit.
ALARM_CLEAR_FRACTION = 0.9
# Tells the cloud which seq numbers were telemetry dropped by the policy, so gaps can be told from loss.
TELEMETRY_DROPPED_ALARM = "alarm.telemetry_dropped"
MAX_REPORTED_RANGES = 100


class OutboxFullError(Exception):
    """An event was refused because the outbox is full; nothing was stored."""

    def __init__(self, event_type: str, cls: EventClass, used: int, limit: int) -> None:
        super().__init__(
            f"outbox full: {event_type} ({cls.value}) refused, {used} of {limit} bytes in use; "
            "the cloud link has not drained the outbox"
        )
        self.event_type = event_type
        self.cls = cls
        self.used = used
        self.limit = limit


class OutboxObserver(Protocol):
    """Receives what the metrics endpoint counts."""

    def events_dropped(self, cls: EventClass, count: int) -> None: ...

    def event_refused(self, cls: EventClass) -> None: ...

    def full_alarm(self, active: bool) -> None: ...


class _NullObserver:
    def events_dropped(self, cls: EventClass, count: int) -> None:
        pass

    def event_refused(self, cls: EventClass) -> None:
        pass

    def full_alarm(self, active: bool) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PendingMessage:
    seq: int
    topic: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PendingState:
    device_id: str
    rev: int
    topic: str
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An unsent event as the outbox holds it (`body` is the rendered envelope, `cls` the class's value)."""

    seq: int
    event_id: str
    type: str
    cls: str
    topic: str
    body: bytes
    size: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class EventWindow:
    """What `Outbox.unsent_window` found: the matching events newest first, how many rows the window held, and the
    lowest seq among them (None when no event lies below the bound: there is nothing further back)."""

    events: list[StoredEvent]
    scanned: int
    lowest_seq: int | None


@dataclass(frozen=True, slots=True)
class StoredState:
    """A device's latest state row; `sent_rev < rev` while the cloud has not acknowledged the latest one."""

    device_id: str
    rev: int
    sent_rev: int
    updated_ms: int
    body: bytes


@dataclass(frozen=True)
class OutboxStats:
    events: int
    bytes: int
    last_seq: int
    oldest_ms: int | None


class _Refused(Exception):
    """Raised inside the write job to roll the event back; turned into OutboxFullError outside."""

    def __init__(self, used: int, limit: int) -> None:
        self.used = used
        self.limit = limit


class _Duplicate(Exception):
    """The message this event comes from was stored before (a broker's redelivery)."""


# How many message keys are kept (table message_keys). A broker numbers the messages of one session with
# 65,535 packet ids in turn, so among the newest 30,000 a redelivered message's key can only be its own.
MESSAGE_KEYS_KEPT = 30_000


class Outbox:
    def __init__(
        self,
        store: DurableStore,
        topics: Topics,
        *,
        max_bytes: int,
        reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
        observer: OutboxObserver | None = None,
    ) -> None:
        if not ID_RE.fullmatch(topics.store_id):
            raise ValueError(f"invalid store id {topics.store_id!r}")
        self._store = store
        self.topics = topics
        self.max_bytes = max_bytes
        self.soft_limit = int(max_bytes * (1.0 - reserve_fraction))
        self._observer: OutboxObserver = observer or _NullObserver()
        self.boot = 0
        self.alarm_active = False
        # Seq ranges of telemetry dropped since the last report (memory only: a restart forgets them).
        self._dropped_ranges: list[tuple[int, int]] = []
        self._dropped_count = 0
        # Set whenever events or states were committed; the publisher waits on it.
        self.changed = asyncio.Event()

    async def open(self) -> int:
        """Count this start in the durable boot counter; returns the new boot number."""

        def bump(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE counters SET value = value + 1 WHERE name = 'boot' RETURNING value"
            ).fetchone()
            return int(row[0])

        self.boot = await self._store.write(bump)
        return self.boot

    # -- producers ----------------------------------------------------------------------------

    async def publish(self, event_type: str, payload: dict[str, Any]) -> Event:
        """Store an event durably and return it with its sequence number."""
        return await self._append(event_type, payload, topic=self.topics.event(event_type))

    async def publish_to(self, topic: str, event_type: str, payload: dict[str, Any]) -> Event:
        """Store an event addressed to another topic of the store (e.g. command results)."""
        return await self._append(event_type, payload, topic=topic)

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> Event | None:
        """Store an event made from an MQTT message whose `key` stays the same when the broker delivers it
        again (the payload carries it as `msg_key`). A `redelivered` message (the broker's DUP flag) whose key
        was stored already is not stored again: None. The key goes in with the event, in one transaction."""
        try:
            return await self._append(event_type, payload, topic=self.topics.event(event_type), key=key,
                                      check_key=redelivered)
        except _Duplicate:
            return None

    async def _append(
        self, event_type: str, payload: dict[str, Any], *, topic: str, key: str | None = None,
        check_key: bool = False,
    ) -> Event:
        validate_event_type(event_type)
        payload_json = encode_payload(payload)
        cls = classify(event_type)
        if event_type == OUTBOX_FULL_ALARM:
            limit = self.max_bytes + ALARM_HEADROOM_BYTES
        elif cls is EventClass.CRITICAL:
            limit = self.max_bytes
        else:
            limit = self.soft_limit
        size = len(payload_json.encode()) + ENVELOPE_OVERHEAD
        event_id = new_event_id()
        ts_ms = now_ms()
        boot = self.boot
        store_id = self.topics.store_id

        def job(conn: sqlite3.Connection) -> tuple[int, list[tuple[int, int]]]:
            if key is not None:
                _remember_key(conn, key, check_key)
            seq, used = conn.execute(
                "UPDATE outbox_stats SET seq = seq + 1, events = events + 1, bytes = bytes + ? "
                "WHERE id = 1 RETURNING seq, bytes",
                (size,),
            ).fetchone()
            dropped: list[tuple[int, int]] = []
            if used > limit:
                if cls is not EventClass.TELEMETRY:
                    raise _Refused(used - size, limit)
                dropped, used = _drop_oldest_telemetry(conn, used - limit, used)
                if used > limit:
                    raise _Refused(used - size, limit)
            body = render_envelope(
                event_id=event_id,
                seq=seq,
                boot=boot,
                store_id=store_id,
                event_type=event_type,
                ts_ms=ts_ms,
                payload_json=payload_json,
            )
            conn.execute(
                "INSERT INTO outbox(seq, event_id, type, cls, topic, body, size, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, event_type, cls.value, topic, body, size, ts_ms),
            )
            return seq, dropped

        try:
            seq, dropped = await self._store.write(job)
        except _Refused as refused:
            if cls is EventClass.TELEMETRY:
                # Telemetry is never "refused": the newest reading is dropped, like the oldest ones.
                self._observer.events_dropped(cls, 1)
            else:
                self._observer.event_refused(cls)
                await self._raise_full_alarm(event_type)
            raise OutboxFullError(event_type, cls, refused.used, refused.limit) from None
        if dropped:
            count = sum(last - first + 1 for first, last in dropped)
            self._observer.events_dropped(EventClass.TELEMETRY, count)
            self._note_dropped(dropped, count)
        self.changed.set()
        return Event(event_id, seq, boot, store_id, event_type, ts_ms, payload)

    async def _raise_full_alarm(self, refused_type: str) -> None:
        if self.alarm_active:
            return
        self.alarm_active = True
        self._observer.full_alarm(True)
        log.error(
            "outbox full (%d bytes): refusing %s and other non-telemetry events until the cloud drains it",
            self.max_bytes,
            refused_type,
        )
        try:
            await self._append(
                OUTBOX_FULL_ALARM,
                {"max_bytes": self.max_bytes, "refused_type": refused_type},
                topic=self.topics.event(OUTBOX_FULL_ALARM),
            )
        except OutboxFullError:
            log.error("could not even queue the outbox-full alarm event")

    def _note_dropped(self, ranges: list[tuple[int, int]], count: int) -> None:
        self._dropped_count += count
        for first, last in ranges:
            if self._dropped_ranges and first == self._dropped_ranges[-1][1] + 1:
                self._dropped_ranges[-1] = (self._dropped_ranges[-1][0], last)
            else:
                self._dropped_ranges.append((first, last))

    async def report_dropped_telemetry(self) -> Event | None:
        """Publish one `alarm.telemetry_dropped` covering what was dropped since the last report."""
        if not self._dropped_count:
            return None
        ranges, count = self._dropped_ranges, self._dropped_count
        payload: dict[str, Any] = {"count": count}
        if len(ranges) <= MAX_REPORTED_RANGES:
            payload["seq_ranges"] = [list(r) for r in ranges]
        else:
            # Too fragmented to list: the span that holds them all (it may hold other events too).
            payload["seq_ranges"] = [[ranges[0][0], ranges[-1][1]]]
            payload["ranges_merged"] = True
        self._dropped_ranges, self._dropped_count = [], 0
        try:
            return await self.publish(TELEMETRY_DROPPED_ALARM, payload)
        except OutboxFullError:
            # Keep them for the next report.
            self._dropped_ranges = ranges + self._dropped_ranges
            self._dropped_count += count
            return None

    async def report_dropped_loop(self, interval_s: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.report_dropped_telemetry()

    async def put_state(self, device_id: str, state: dict[str, Any]) -> int:
        """Record a device's latest state (replacing any unsent older one); returns its revision."""
        if not ID_RE.fullmatch(device_id):
            raise ValueError(f"invalid device id {device_id!r}")
        state_json = encode_payload(state)
        ts_ms = now_ms()
        topic = self.topics.state(device_id)
        boot = self.boot
        store_id = self.topics.store_id

        def job(conn: sqlite3.Connection) -> int:
            rev = int(
                conn.execute(
                    "UPDATE counters SET value = value + 1 WHERE name = 'state_rev' RETURNING value"
                ).fetchone()[0]
            )
            body = render_state(
                store_id=store_id, device_id=device_id, rev=rev, boot=boot, ts_ms=ts_ms, state_json=state_json
            )
            conn.execute(
                "INSERT INTO device_state(device_id, rev, topic, body, size, sent_rev, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT(device_id) DO UPDATE SET rev = excluded.rev, "
                "topic = excluded.topic, body = excluded.body, size = excluded.size, "
                "updated_ms = excluded.updated_ms",
                (device_id, rev, topic, body, len(body), ts_ms),
            )
            return rev

        rev = await self._store.write(job)
        self.changed.set()
        return rev

    # -- the publisher's side -----------------------------------------------------------------

    def read_events(self, after_seq: int, limit: int) -> list[PendingMessage]:
        rows = self._store.read(
            lambda conn: conn.execute(
                "SELECT seq, topic, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        )
        return [PendingMessage(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def read_states(self, limit: int, exclude: Iterable[str] = ()) -> list[PendingState]:
        skip = set(exclude)
        rows = self._store.read(
            lambda conn: conn.execute(
                "SELECT device_id, rev, topic, body FROM device_state WHERE sent_rev < rev "
                "ORDER BY updated_ms LIMIT ?",
                (limit + len(skip),),
            ).fetchall()
        )
        states = [PendingState(str(r[0]), int(r[1]), str(r[2]), bytes(r[3])) for r in rows if r[0] not in skip]
        return states[:limit]

    async def ack(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged events; returns how many rows were deleted."""
        ranges = _contiguous_ranges(sorted(seqs))
        if not ranges:
            return 0

        def job(conn: sqlite3.Connection) -> int:
            count = 0
            freed = 0
            for first, last in ranges:
                for (size,) in conn.execute(
                    "DELETE FROM outbox WHERE seq BETWEEN ? AND ? RETURNING size", (first, last)
                ).fetchall():
                    count += 1
                    freed += int(size)
            if count:
                conn.execute(
                    "UPDATE outbox_stats SET events = events - ?, bytes = bytes - ? WHERE id = 1",
                    (count, freed),
                )
            return count

        deleted = await self._store.write(job)
        if self.alarm_active and self.stats().bytes < self.soft_limit * ALARM_CLEAR_FRACTION:
            self.alarm_active = False
            self._observer.full_alarm(False)
            log.warning("outbox drained below %d%% of its limit: accepting events again",
                        int(ALARM_CLEAR_FRACTION * 100))
        return deleted

    async def ack_state(self, device_id: str, rev: int) -> None:
        await self._store.write(
            lambda conn: conn.execute(
                "UPDATE device_state SET sent_rev = ? WHERE device_id = ? AND sent_rev < ?",
                (rev, device_id, rev),
            )
        )

    def stats(self) -> OutboxStats:
        def query(conn: sqlite3.Connection) -> OutboxStats:
            seq, events, used = conn.execute("SELECT seq, events, bytes FROM outbox_stats WHERE id = 1").fetchone()
            oldest = conn.execute("SELECT created_ms FROM outbox ORDER BY seq LIMIT 1").fetchone()
            return OutboxStats(int(events), int(used), int(seq), int(oldest[0]) if oldest else None)

        return self._store.read(query)

    # -- for people looking in (the web UI's events page) ------------------------------------

    def unsent_window(
        self,
        *,
        below_seq: int,
        window: int,
        limit: int,
        type_prefix: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> EventWindow:
        """The unsent events among the `window` newest with a seq below `below_seq`, filtered by type prefix and
        creation time [since_ms, until_ms), newest first, at most `limit`. The window bounds the rows a filter
        looks at, whatever the outbox holds (millions after a long outage); one read, so one snapshot."""

        def query(conn: sqlite3.Connection) -> EventWindow:
            lowest, scanned = conn.execute(
                "SELECT MIN(seq), COUNT(*) FROM (SELECT seq FROM outbox WHERE seq < ? ORDER BY seq DESC LIMIT ?)",
                (below_seq, window),
            ).fetchone()
            if lowest is None:
                return EventWindow([], int(scanned), None)
            where = ["seq < ?", "seq >= ?"]
            args: list[Any] = [below_seq, lowest]
            if type_prefix:
                where.append("substr(type, 1, ?) = ?")
                args += [len(type_prefix), type_prefix]
            if since_ms is not None:
                where.append("created_ms >= ?")
                args.append(since_ms)
            if until_ms is not None:
                where.append("created_ms < ?")
                args.append(until_ms)
            # Only the fixed clauses above are joined in; every value is bound.
            rows = conn.execute(
                "SELECT seq, event_id, type, cls, topic, body, size, created_ms FROM outbox WHERE "  # noqa: S608
                + " AND ".join(where) + " ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            events = [
                StoredEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]), int(r[6]), int(r[7]))
                for r in rows
            ]
            return EventWindow(events, int(scanned), int(lowest))

        return self._store.read(query)

    def unsent_among(self, seqs: Iterable[int]) -> set[int]:
        """Which of these seqs are still in the outbox (not acknowledged, nor dropped as telemetry)."""
        wanted = list(seqs)
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        rows = self._store.read(
            lambda conn: conn.execute(f"SELECT seq FROM outbox WHERE seq IN ({marks})", wanted).fetchall()  # noqa: S608
        )
        return {int(r[0]) for r in rows}

    def device_states(self, *, pending: bool | None, limit: int) -> list[StoredState]:
        """Device state rows, most recently updated first, at most `limit`: pending True = not yet acknowledged,
        False = acknowledged, None = all."""
        clause = {None: "", True: "WHERE sent_rev < rev", False: "WHERE sent_rev >= rev"}[pending]
        rows = self._store.read(
            lambda conn: conn.execute(
                "SELECT device_id, rev, sent_rev, updated_ms, body FROM device_state "  # noqa: S608 - fixed clause
                + clause + " ORDER BY updated_ms DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [StoredState(str(r[0]), int(r[1]), int(r[2]), int(r[3]), bytes(r[4])) for r in rows]


def render_state(*, store_id: str, device_id: str, rev: int, boot: int, ts_ms: int, state_json: str) -> bytes:
    """The wire form of a device's state; formatted by hand for the reasons given at render_envelope."""
    return (
        f'{{"v":1,"store_id":"{store_id}","device_id":"{device_id}","rev":{rev},"boot":{boot},'
        f'"ts":"{format_ts(ts_ms)}","state":{state_json}}}'
    ).encode()


def _remember_key(conn: sqlite3.Connection, key: str, check: bool) -> None:
    if check and conn.execute("SELECT 1 FROM message_keys WHERE key = ?", (key,)).fetchone() is not None:
        raise _Duplicate(key)
    n = conn.execute("INSERT OR REPLACE INTO message_keys(key) VALUES (?)", (key,)).lastrowid or 0
    if n % 1000 == 0:
        conn.execute("DELETE FROM message_keys WHERE n <= ?", (n - MESSAGE_KEYS_KEPT,))


def _drop_oldest_telemetry(
    conn: sqlite3.Connection, excess: int, used: int
) -> tuple[list[tuple[int, int]], int]:
    """Delete the oldest telemetry rows until `excess` bytes are freed; returns (seq ranges, used)."""
    dropped_seqs: list[int] = []
    freed = 0
    while freed < excess:
        rows = conn.execute(
            "SELECT seq, size FROM outbox WHERE cls = ? ORDER BY seq LIMIT 256", (EventClass.TELEMETRY.value,)
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        for seq, size in rows:
            dropped_seqs.append(int(seq))
            freed += int(size)
            if freed >= excess:
                last = seq
                break
        conn.execute("DELETE FROM outbox WHERE cls = ? AND seq <= ?", (EventClass.TELEMETRY.value, last))
    if dropped_seqs:
        conn.execute(
            "UPDATE outbox_stats SET events = events - ?, bytes = bytes - ? WHERE id = 1",
            (len(dropped_seqs), freed),
        )
    return _contiguous_ranges(dropped_seqs), used - freed


def _contiguous_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        elif not ranges or seq > ranges[-1][1]:
            ranges.append((seq, seq))
    return ranges
