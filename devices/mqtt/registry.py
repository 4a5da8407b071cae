"""The Wi-Fi devices the agent has heard of on the in-store broker.

A device is *discovered* the first time any valid message of it arrives, and *adopted* either at once
(`local_broker.adopt = "auto"`) or when its id is on the allow-list (`"allow_list"` with
`local_broker.allowed_devices`), or later by `adopt()` (the technician UI's job). Only adopted devices
are relayed to the cloud, feed kiosks and take commands; the others are only remembered, so that a
technician can see them and decide.

Memory is bounded: at most `max_devices` records; past that the least recently seen device that is not
adopted is forgotten (a device spraying random ids cannot grow the agent).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud_link.events import format_ts
from devices.mqtt.messages import Announce


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
    _devices: dict[str, DeviceRecord] = field(default_factory=dict)

    @classmethod
    def build(
        cls, policy: str, allowed: Iterable[str] = (), kiosk_bindings: Mapping[str, str] | None = None,
        *, max_devices: int = 10_000,
    ) -> DeviceRegistry:
        return cls(AdoptPolicy(policy), frozenset(allowed), dict(kiosk_bindings or {}), max_devices)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def seen(self, device_id: str) -> DeviceRecord:
        """The device's record, created on first contact; its `last_seen_ms` is now."""
        now = self._now_ms()
        record = self._devices.get(device_id)
        if record is None:
            self._make_room()
            adopted = self.policy is AdoptPolicy.AUTO or device_id in self.allowed
            record = DeviceRecord(device_id, adopted, now, now, configured_kiosk=self.kiosk_bindings.get(device_id))
            self._devices[device_id] = record
        record.last_seen_ms = now
        return record

    def _make_room(self) -> None:
        if len(self._devices) < self.max_devices:
            return
        candidates = [r for r in self._devices.values() if not r.adopted] or list(self._devices.values())
        oldest = min(candidates, key=lambda r: r.last_seen_ms)
        del self._devices[oldest.device_id]

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
        return record

    def get(self, device_id: str) -> DeviceRecord | None:
        return self._devices.get(device_id)

    def all(self) -> list[DeviceRecord]:
        return sorted(self._devices.values(), key=lambda r: r.device_id)

    def __len__(self) -> int:
        return len(self._devices)
