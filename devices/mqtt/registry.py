"""The Wi-Fi devices the agent has heard of on the in-store broker.

A device is *discovered* the first time any valid message of it arrives, and *adopted* either at once
(`local_broker.adopt = "auto"`) or when its id is on the allow-list (`"allow_list"` with
`local_broker.allowed_devices`), or later by `adopt()` (the technician UI's job). Only adopted devices
are relayed to the cloud, feed kiosks and take commands; the others are only remembered, so that a
technician can see them and decide.

Memory is bounded: at most `max_devices` records; past that the least recently seen device that is not
adopted is forgotten (a device spraying random ids cannot grow the agent).

With a `store`, the registry is kept in SQLite (table `mqtt_devices`, migration 8) so that adoption and
what was discovered survive restarts. It is written behind: `save()` (the gateway calls it every few
seconds) writes every device changed or seen since the last save in one transaction, never one write per
message. The device's own state is not kept here: the outbox keeps its latest copy for the cloud.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from cloud_link.events import format_ts
from cloud_link.ports import DurableStore
from devices.mqtt.messages import Announce

log = logging.getLogger(__name__)

_SAVE = (
    "INSERT INTO mqtt_devices(device_id, announce, adopted, first_seen_ms, last_seen_ms, online, since_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET announce = excluded.announce, "
    "adopted = excluded.adopted, last_seen_ms = excluded.last_seen_ms, online = excluded.online, "
    "since_ms = excluded.since_ms"
)


class AdoptPolicy(enum.StrEnum):
    AUTO = "auto"
    ALLOW_LIST = "allow_list"


@dataclass
class DeviceRecord:
    device_id: str
    adopted: bool
    first_seen_ms: int
    last_seen_ms: int
    announce: Announce | None = None
    # None: the device never said (an older device that only publishes state).
    online: bool | None = None
    since_ms: int | None = None
    state: dict[str, Any] | None = None
    # The kiosk the configuration binds this device to; it wins over the device's own announce.
    configured_kiosk: str | None = None

    @property
    def discovered(self) -> bool:
        return not self.adopted

    @property
    def kiosk_id(self) -> str | None:
        if self.configured_kiosk is not None:
            return self.configured_kiosk
        return self.announce.kiosk_id if self.announce is not None else None

    def cloud_state(self) -> dict[str, Any]:
        """What the cloud gets as this device's state: the device's own state object, overlaid with what
        the agent knows for sure (announce, availability); those keys are reserved (docs/mqtt-devices.md)."""
        state: dict[str, Any] = dict(self.state or {})
        if self.announce is not None:
            state.update(kind=self.announce.kind, model=self.announce.model, fw=self.announce.fw,
                         capabilities=list(self.announce.capabilities))
        if self.kiosk_id is not None:
            state["kiosk_id"] = self.kiosk_id
        if self.online is not None:
            state["online"] = self.online
            if self.since_ms is not None:
                state["since"] = format_ts(self.since_ms)
        return state


@dataclass
class DeviceRegistry:
    policy: AdoptPolicy = AdoptPolicy.AUTO
    allowed: frozenset[str] = frozenset()
    kiosk_bindings: Mapping[str, str] = field(default_factory=dict)
    max_devices: int = 10_000
    clock: Callable[[], float] = time.time
    store: DurableStore | None = None
    _devices: dict[str, DeviceRecord] = field(default_factory=dict)
    # Ids by how recently each was seen, least recent first: the unadopted are forgotten first when the registry
    # is full, then the adopted. A new id costs O(1), however many a flood of made-up ids has brought.
    _lru_unadopted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _lru_adopted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # Changed or seen since the last save / forgotten (to delete), by id.
    _dirty: set[str] = field(default_factory=set)
    _forgotten: set[str] = field(default_factory=set)

    @classmethod
    def build(
        cls, policy: str, allowed: Iterable[str] = (), kiosk_bindings: Mapping[str, str] | None = None,
        *, max_devices: int = 10_000, store: DurableStore | None = None,
    ) -> DeviceRegistry:
        registry = cls(AdoptPolicy(policy), frozenset(allowed), dict(kiosk_bindings or {}), max_devices, store=store)
        registry.load()
        return registry

    def _adopt_on_sight(self, device_id: str) -> bool:
        return self.policy is AdoptPolicy.AUTO or device_id in self.allowed

    def load(self) -> int:
        """Read the stored devices (the most recently seen, up to `max_devices`); returns how many."""
        if self.store is None:
            return 0
        rows = self.store.read(
            lambda c: c.execute(
                "SELECT device_id, announce, adopted, first_seen_ms, last_seen_ms, online, since_ms FROM mqtt_devices "
                "ORDER BY last_seen_ms DESC LIMIT ?", (self.max_devices,)
            ).fetchall()
        )
        for device_id, announce_json, adopted, first_ms, last_ms, online, since_ms in reversed(rows):
            announce = None
            if announce_json is not None:
                try:
                    announce = Announce.model_validate_json(announce_json)
                except ValidationError:
                    log.warning("stored announce of device %s no longer valid; forgotten", device_id)
            record = DeviceRecord(
                device_id, bool(adopted) or self._adopt_on_sight(device_id), int(first_ms), int(last_ms), announce,
                None if online is None else bool(online), since_ms, configured_kiosk=self.kiosk_bindings.get(device_id),
            )
            self._devices[device_id] = record
            self._touch(record)
        return len(rows)

    async def save(self) -> int:
        """Write what changed since the last save, in one transaction; returns how many rows were written."""
        if self.store is None or not (self._dirty or self._forgotten):
            return 0
        rows = [
            (r.device_id, r.announce.model_dump_json() if r.announce is not None else None, int(r.adopted),
             r.first_seen_ms, r.last_seen_ms, None if r.online is None else int(r.online), r.since_ms)
            for r in (self._devices.get(d) for d in self._dirty) if r is not None
        ]
        gone = [(d,) for d in self._forgotten]
        self._dirty, self._forgotten = set(), set()

        def job(conn: sqlite3.Connection) -> int:
            conn.executemany("DELETE FROM mqtt_devices WHERE device_id = ?", gone)
            conn.executemany(_SAVE, rows)
            return len(rows)

        try:
            return await self.store.write(job)
        except BaseException:
            # Not written: keep it for the next save (unless changed or forgotten meanwhile, which re-marks it).
            self._dirty.update(r[0] for r in rows)
            self._forgotten.update(d for (d,) in gone if d not in self._devices)
            raise

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def seen(self, device_id: str) -> DeviceRecord:
        """The device's record, created on first contact; its `last_seen_ms` is now."""
        now = self._now_ms()
        record = self._devices.get(device_id)
        if record is None:
            self._make_room()
            adopted = self._adopt_on_sight(device_id)
            record = DeviceRecord(device_id, adopted, now, now, configured_kiosk=self.kiosk_bindings.get(device_id))
            self._devices[device_id] = record
            self._forgotten.discard(device_id)
        record.last_seen_ms = now
        self._touch(record)
        self._dirty.add(device_id)
        return record

    def _touch(self, record: DeviceRecord) -> None:
        """`record` is the most recently seen of its kind (adopted or not)."""
        order, other = (
            (self._lru_adopted, self._lru_unadopted) if record.adopted else (self._lru_unadopted, self._lru_adopted)
        )
        other.pop(record.device_id, None)
        order[record.device_id] = None
        order.move_to_end(record.device_id)

    def _make_room(self) -> None:
        if len(self._devices) < self.max_devices:
            return
        order = self._lru_unadopted or self._lru_adopted
        oldest, _ = order.popitem(last=False)
        del self._devices[oldest]
        self._dirty.discard(oldest)
        self._forgotten.add(oldest)

    def set_online(self, record: DeviceRecord, online: bool | None) -> bool:
        """Record availability; True when it changed (then `since_ms` is now)."""
        if record.online == online:
            return False
        record.online = online
        record.since_ms = self._now_ms() if online is not None else None
        return True

    def adopt(self, device_id: str) -> DeviceRecord | None:
        record = self._devices.get(device_id)
        if record is not None:
            record.adopted = True
            self._touch(record)
            self._dirty.add(device_id)
        return record

    def get(self, device_id: str) -> DeviceRecord | None:
        return self._devices.get(device_id)

    def all(self) -> list[DeviceRecord]:
        return sorted(self._devices.values(), key=lambda r: r.device_id)

    def __len__(self) -> int:
        return len(self._devices)
