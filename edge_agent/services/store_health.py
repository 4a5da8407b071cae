"""The store at a glance: one snapshot of the cloud link, the devices and the alarms, and a hub that pushes it live.

`StoreHealth.snapshot()` is what the dashboard shows (GET /api/dashboard). It only reads what the running
services already know (the outbox's counters, the cloud session's flags, the base stations' links, the
lock boards' latest shared readings, the kiosks' presence, the MQTT device registry) plus two aggregate
queries (tags, tag jobs): no row-per-tag reads, so it stays a few milliseconds with 10,000 tags.

`StoreHealth.device_states()` is the cheap, in-memory part: one small dict per device (online, door and item
state, alarm present). `LiveHub` polls it every `device_s` and pushes each difference at once as an
`event: device`, recomputes the snapshot every `snapshot_s` and pushes it when it changed, and sends a ping
every `ping_s`. Polling and diffing needs no hook in the services it watches, and it cannot miss a change
that a callback forgot to report.

Each live client gets a bounded queue of pre-rendered frames; a client that lets it fill is dropped (its
stream ends and the browser's EventSource reconnects) instead of slowing the loop or the other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from cloud_link.events import now_ms
from cloud_link.outbox import Outbox
from cloud_link.session import CloudSession
from devices.labels.updates import LabelService
from devices.lockers.board import LockBoard
from devices.mqtt_gateway import MqttDeviceGateway
from edge_agent.services.kiosks import KioskHub
from edge_agent.services.lockers import LockerService
from edge_agent.storage import Database

log = logging.getLogger(__name__)

# A tag not heard from for this long counts as offline (tags check in every 30 s to a few minutes).
TAG_OFFLINE_S = 3600.0
# A board whose latest successful reading is older than this is unreachable: the alarm loop reads every
# board 4 times a second, so a few seconds without one means the board stopped answering.
BOARD_STALE_S = 3.0

# The in-store broker counts as a problem in /healthz once the agent has been without it this long (it connects
# within a second at start, and reconnects within reconnect_max_s after the broker restarts).
BROKER_GRACE_S = 5.0

# The tag counts scan the tags table (about 4 ms for 10,000 rows): shared by whatever asks within this long
# (the live hub every 0.5 s, every open dashboard). Tags change by check-ins and pairing, a second is fresh.
TAG_COUNTS_TTL_S = 1.0

# Keys that change on every snapshot without anything having happened: left out when deciding to push.
_VOLATILE = ("now_ms",)


def sse_frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class StoreHealth:
    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox | None,
        session: CloudSession | None,
        labels: LabelService | None = None,
        lockers: LockerService | None = None,
        lock_boards: Mapping[str, LockBoard] | None = None,
        board_buses: Mapping[str, str] | None = None,
        gateway: MqttDeviceGateway | None = None,
        kiosk_hub: KioskHub | None = None,
        tag_offline_s: float = TAG_OFFLINE_S,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._session = session
        self._labels = labels
        self._lockers = lockers
        self._boards = dict(lock_boards or {})
        # board id -> the RS485 bus it hangs on ("gpio" for pins on the mini-PC), from the configuration.
        self._board_buses = dict(board_buses or {})
        self._gateway = gateway
        self._kiosks = kiosk_hub
        self.tag_offline_s = tag_offline_s
        self._tag_cache: tuple[float, dict[str, int], dict[str, int]] | None = None

    # -- the snapshot ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = now_ms()
        tags, per_station = self._tag_counts(now)
        return {
            "now_ms": now,
            "cloud": self._cloud(now),
            "base_stations": self._stations(per_station),
            "lock_boards": self._lock_boards(),
            "compartments": self._compartment_counts(),
            "kiosks": self._kiosk_list(),
            "mqtt_devices": self._mqtt_devices(),
            "alarms": self._alarms(),
            "tags": tags,
            "tag_updates": self._tag_updates(),
        }

    def link_problems(self) -> list[dict[str, str]]:
        """Every configured device link that is not working, with why: what /healthz reports. A base station
        still starting (port open, handshake pending for less than its grace) is not a problem yet."""
        out: list[dict[str, str]] = []
        if self._labels is not None:
            for name, station in sorted(self._labels.stations.items()):
                if station.connected:
                    continue
                if not hasattr(station, "problem"):  # Wi-Fi labels: the station is its in-store MQTT connection
                    last = getattr(getattr(station, "stats", None), "last_error", None)
                    out.append({"device": "label_station", "name": name,
                                "reason": "not connected" + (f": {last}" if last else "")})
                    continue
                problem = station.problem  # a serial base station knows why; None while it is still starting
                if isinstance(problem, str):
                    out.append({"device": "base_station", "name": name, "reason": problem})
        for board_id, (reachable, age) in sorted(self._board_reachability().items()):
            if reachable is False:
                bus = self._board_buses.get(board_id)
                where = f" on bus {bus}" if bus else ""
                reason = "never answered" if age is None else f"no answer for {age:.0f} s"
                out.append({"device": "lock_board", "name": board_id, "reason": f"{reason}{where}"})
        gw = self._gateway
        if gw is not None and not gw.connected and gw.down_since is not None:
            down_s = time.monotonic() - gw.down_since
            if down_s >= BROKER_GRACE_S:  # not while it is connecting at start or reconnecting after a blip
                ep = gw.endpoint
                out.append({"device": "in_store_broker", "name": f"{ep.host}:{ep.port}",
                            "reason": f"not connected for {down_s:.0f} s"})
        return out

    def _cloud(self, now: int) -> dict[str, Any]:
        session = self._session
        body: dict[str, Any] = {
            "enabled": session is not None,
            "connected": bool(session is not None and session.connected),
            "protocol": session.protocol_in_use.value if session is not None and session.protocol_in_use else None,
            "last_ack_ms": session.last_ack_ms if session is not None else None,
            "outbox": None,
        }
        if self._outbox is not None:
            stats = self._outbox.stats()
            body["outbox"] = {
                "depth": stats.events,
                "bytes": stats.bytes,
                "oldest_ms": stats.oldest_ms,
                "oldest_age_s": None if stats.oldest_ms is None else round(max(0, now - stats.oldest_ms) / 1000, 1),
                "full": self._outbox.alarm_active,
            }
        return body

    def _tag_counts(self, now: int) -> tuple[dict[str, int], dict[str, int]]:
        cached = self._tag_cache
        if cached is not None and time.monotonic() - cached[0] < TAG_COUNTS_TTL_S:
            return cached[1], cached[2]
        counts, per_station = self._count_tags(now)
        self._tag_cache = (time.monotonic(), counts, per_station)
        return counts, per_station

    def _count_tags(self, now: int) -> tuple[dict[str, int], dict[str, int]]:
        # One pass over the tags table, grouped by base station: totals and per-station counts together.
        # Tags a station reported but nobody adopted yet (discovery) are counted apart, not as unpaired.
        cutoff = now - int(self.tag_offline_s * 1000)
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT base_station, SUM(adopted != 0), SUM(adopted != 0 AND sku IS NOT NULL), "
                "SUM(adopted != 0 AND (last_seen_ms IS NULL OR last_seen_ms < ?)), SUM(adopted = 0) "
                "FROM tags GROUP BY base_station",
                (cutoff,),
            ).fetchall()
        )
        total = paired = offline = discovered = 0
        per_station: dict[str, int] = {}
        for station, count, with_sku, stale, not_adopted in rows:
            total += int(count or 0)
            paired += int(with_sku or 0)
            offline += int(stale or 0)
            discovered += int(not_adopted or 0)
            if station is not None:
                per_station[str(station)] = int(count or 0)
        counts = {"total": total, "paired": paired, "unpaired": total - paired, "offline": offline,
                  "discovered": discovered}
        return counts, per_station

    def _stations(self, per_station: dict[str, int]) -> list[dict[str, Any]]:
        if self._labels is None:
            return []
        out = []
        for name, station in sorted(self._labels.stations.items()):
            item: dict[str, Any] = {"name": name, "connected": bool(station.connected),
                                    "tags": per_station.get(name, 0), "link": None}
            # The serial base-station client counts its link (frames, retransmits, CRC errors, resets);
            # Wi-Fi labels have no link of their own, only their station's counters.
            link_statistics = getattr(station, "link_statistics", None)
            if callable(link_statistics):
                item["link"] = link_statistics()
            counters = getattr(getattr(station, "stats", None), "__dict__", {})
            item["errors"] = {k: v for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool)}
            item["last_error"] = counters.get("last_error")
            out.append(item)
        return out

    def _board_reachability(self) -> dict[str, tuple[bool | None, float | None]]:
        """board id -> (reachable, age of the latest reading in s); None when nobody reads the board."""
        readings = self._lockers.board_readings() if self._lockers is not None else {}
        now = time.monotonic()
        out: dict[str, tuple[bool | None, float | None]] = {}
        for board_id in self._boards:
            reading = readings.get(board_id)
            if board_id not in readings:
                out[board_id] = (None, None)  # no compartment on it: the alarm loop does not read it
            elif reading is None:
                out[board_id] = (False, None)  # read, but never answered
            else:
                age = max(0.0, now - reading[0])
                out[board_id] = (age <= BOARD_STALE_S, round(age, 2))
        return out

    def _lock_boards(self) -> list[dict[str, Any]]:
        reach = self._board_reachability()
        out = []
        for board_id, board in sorted(self._boards.items()):
            reachable, age = reach.get(board_id, (None, None))
            out.append({"id": board_id, "bus": self._board_buses.get(board_id), "locks": board.lock_count,
                        "reachable": reachable, "reading_age_s": age})
        return out

    def _compartment_counts(self) -> dict[str, int]:
        if self._lockers is None:
            return {"total": 0, "enabled": 0, "open": 0, "occupied": 0}
        infos = self._lockers.compartments()
        doors = self._door_states()
        return {
            "total": len(infos),
            "enabled": sum(1 for i in infos if i.enabled),
            "open": sum(1 for d in doors.values() if d["locked"] is False),
            "occupied": sum(1 for d in doors.values() if d["item"] is True),
        }

    def _door_states(self) -> dict[str, dict[str, Any]]:
        """compartment id -> door and item as last read (None where not known), enabled."""
        if self._lockers is None:
            return {}
        readings = self._lockers.board_readings()
        out: dict[str, dict[str, Any]] = {}
        for info in self._lockers.compartments():
            spec = info.spec
            reading = readings.get(spec.board_id)
            state = reading[1][spec.lock - 1] if reading is not None and 1 <= spec.lock <= len(reading[1]) else None
            out[spec.id] = {
                "locked": None if state is None else state.locked,
                "item": None if state is None else state.item,
                "enabled": info.enabled,
            }
        return out

    def _kiosk_list(self) -> list[dict[str, Any]]:
        hub = self._kiosks
        if hub is None:
            return []
        return [
            {"id": k.id, "name": k.name, "online": hub.online(k.id), "streams": hub.open_streams(k.id),
             "last_seen_ms": hub.last_seen_ms(k.id)}
            for k in hub.kiosks()
        ]

    def _mqtt_devices(self) -> dict[str, Any]:
        gw = self._gateway
        if gw is None:
            return {"broker_connected": None, "devices": []}
        devices = [
            {"id": r.device_id, "adopted": r.adopted, "online": r.online, "last_seen_ms": r.last_seen_ms,
             "kind": r.announce.kind if r.announce is not None else None, "kiosk_id": r.kiosk_id}
            for r in sorted(gw.registry.all(), key=lambda r: r.device_id)
        ]
        return {"broker_connected": gw.connected, "devices": devices}

    def _alarms(self) -> list[dict[str, Any]]:
        if self._lockers is None:
            return []
        return [
            {"kind": a.kind, "compartment": a.compartment, "since_ms": a.since_ms, "message": a.message}
            for a in self._lockers.open_alarms()
        ]

    def _tag_updates(self) -> dict[str, int] | None:
        if self._labels is None:
            return None
        return self._labels.progress()

    # -- what the live stream diffs ---------------------------------------------------------------------

    def device_states(self) -> dict[str, dict[str, Any]]:
        """In memory only (no database reads): "kind:id" -> the state worth telling at once."""
        states: dict[str, dict[str, Any]] = {}
        gw = self._gateway
        if gw is not None:
            for r in gw.registry.all():
                states[f"mqtt:{r.device_id}"] = {"online": r.online, "adopted": r.adopted}
        hub = self._kiosks
        if hub is not None:
            for k in hub.kiosks():
                states[f"kiosk:{k.id}"] = {"online": hub.online(k.id)}
        for cid, door in self._door_states().items():
            states[f"compartment:{cid}"] = door
        for board_id, (reachable, _age) in self._board_reachability().items():
            states[f"board:{board_id}"] = {"reachable": reachable}
        if self._labels is not None:
            for name, station in self._labels.stations.items():
                states[f"station:{name}"] = {"connected": bool(station.connected)}
        if self._session is not None:
            states["cloud:link"] = {"connected": self._session.connected}
        if self._lockers is not None:
            for a in self._lockers.open_alarms():
                states[f"alarm:{a.kind}:{a.compartment or ''}"] = {
                    "kind": a.kind, "compartment": a.compartment, "since_ms": a.since_ms, "message": a.message}
        return states


def stable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without what changes by itself (the clock, ages): equal when nothing happened."""
    out = {k: v for k, v in snapshot.items() if k not in _VOLATILE}
    cloud = out.get("cloud")
    if isinstance(cloud, dict) and isinstance(cloud.get("outbox"), dict):
        out["cloud"] = {**cloud, "outbox": {k: v for k, v in cloud["outbox"].items() if k != "oldest_age_s"}}
    out["lock_boards"] = [{k: v for k, v in b.items() if k != "reading_age_s"} for b in out.get("lock_boards", [])]
    return out


class LiveClient:
    """One /api/live stream: a bounded queue of rendered frames. Full means too slow: it is closed."""

    def __init__(self, maxsize: int) -> None:
        self._frames: deque[bytes] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.closed = False
        self.dropped = False

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        if len(self._frames) >= self._maxsize:
            self.dropped = True
            self.close()
            return
        self._frames.append(frame)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self, timeout: float) -> bytes | None:
        """The next frame; None after `timeout` with nothing to send, or once closed and drained."""
        if not self._frames and not self.closed:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        if self._frames and not self.dropped:
            return self._frames.popleft()
        return None


class LiveHub:
    def __init__(
        self,
        health: StoreHealth,
        *,
        snapshot_s: float = 0.5,
        device_s: float = 0.25,
        ping_s: float = 15.0,
        queue_size: int = 256,
        max_clients: int = 200,
    ) -> None:
        self.health = health
        self.snapshot_s = snapshot_s
        self.device_s = device_s
        self.ping_s = ping_s
        self.queue_size = queue_size
        self.max_clients = max_clients
        self._clients: set[LiveClient] = set()
        self._joined = asyncio.Event()
        self._closing = False
        self._last_snapshot: dict[str, Any] | None = None
        self._last_devices: dict[str, dict[str, Any]] | None = None
        self.dropped_clients = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self) -> LiveClient:
        """A new stream; raises OverflowError when stopping or at `max_clients`."""
        if self._closing or len(self._clients) >= self.max_clients:
            raise OverflowError("too many live streams")
        if self._last_devices is None:
            # The baseline is taken now, not at the next poll: a change right after the client's first
            # snapshot (which the stream sends at once) must come out as an event, not as the baseline.
            self._last_devices = self.health.device_states()
        client = LiveClient(self.queue_size)
        self._clients.add(client)
        self._joined.set()
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        client.close()
        self._clients.discard(client)

    def broadcast(self, event: str, data: Any) -> None:
        frame = sse_frame(event, data)
        for client in list(self._clients):
            client.put(frame)
            if client.dropped:
                self.dropped_clients += 1
                self._clients.discard(client)
                log.info("live stream dropped: its client did not keep up")

    async def run(self) -> None:
        """Diff devices every `device_s`, the snapshot every `snapshot_s`, ping every `ping_s`; idle without
        clients. Ends every stream when cancelled (the agent is stopping)."""
        loop = asyncio.get_running_loop()
        next_snapshot = next_ping = 0.0
        try:
            while not self._closing:
                if not self._clients:
                    # Nobody listens: forget what was sent, so a new client's first diff starts afresh.
                    self._last_snapshot = self._last_devices = None
                    self._joined.clear()
                    await self._joined.wait()
                    if self._closing:
                        return
                    next_ping = loop.time() + self.ping_s
                now = loop.time()
                try:
                    self._diff_devices()
                    if now >= next_snapshot:
                        next_snapshot = now + self.snapshot_s
                        self._push_snapshot()
                except Exception:  # a service mid-change must not end the live view
                    log.exception("live view: reading the store's state failed; trying again")
                if now >= next_ping:
                    next_ping = now + self.ping_s
                    self.broadcast("ping", {"now_ms": now_ms()})
                await asyncio.sleep(self.device_s)
        finally:
            self.close()

    def _diff_devices(self) -> None:
        states = self.health.device_states()
        before = self._last_devices
        self._last_devices = states
        if before is None:
            return
        for key, state in states.items():
            if before.get(key) != state:
                self._announce(key, state)
        for key in before.keys() - states.keys():
            self._announce(key, None)

    def _announce(self, key: str, state: dict[str, Any] | None) -> None:
        kind, _, ident = key.partition(":")
        data = {"kind": kind, "id": ident, "state": state, "now_ms": now_ms()}
        self.broadcast("device", data)
        # Pages that only care about doors or alarms listen for these names (static/admin/admin.js).
        if kind == "compartment":
            self.broadcast("compartment", data)
        elif kind == "alarm":
            self.broadcast("alarm", data)

    def _push_snapshot(self) -> None:
        snapshot = self.health.snapshot()
        before = self._last_snapshot
        if before is not None and stable(before) == stable(snapshot):
            return
        self._last_snapshot = snapshot
        self.broadcast("dashboard", snapshot)
        if before is None or before.get("tag_updates") != snapshot.get("tag_updates"):
            self.broadcast("progress", {"tag_updates": snapshot.get("tag_updates"), "now_ms": snapshot["now_ms"]})

    def close(self) -> None:
        """End every stream (the web server waits for open responses before it stops)."""
        self._closing = True
        for client in list(self._clients):
            client.close()
        self._clients.clear()
        self._joined.set()
