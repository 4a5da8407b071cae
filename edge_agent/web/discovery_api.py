"""Discovery and adoption (technician): what the agent has found and not yet taken on, and the act of adopting.

Three kinds of device appear as *discovered* until a technician adopts them (DESIGN.md section 2, flow 5):
- **tags** a base station reported that `[labels] adopt` did not adopt on sight: recorded with their check-ins,
  sent no picture (devices.labels.registry). Adopting one makes it the store's; pairing it adopts it too.
- **MQTT devices** heard on the in-store broker that `[local_broker] adopt` did not adopt: nothing of theirs
  reaches the cloud or a kiosk (devices.mqtt.registry). Adopting one is `gateway.adopt(id)`, kept on disk.
- **lock boards** that answered a bus scan (`POST /api/discovery/lock-boards/scan`) at a number no
  `[[lockers.boards]]` names. The agent builds its boards from the configuration file, so adopting one records
  the decision (table `lock_board_finds`, migration 10) and answers the `[[lockers.boards]]` snippet to add;
  an admin can have it added to the file at once (`write_config`), checked and written like any
  configuration edit (edge_agent.services.config_store). Either way it is used from the next start.

A scan probes every board number (0..15) of every configured bus once, with a short timeout, each probe a
single exchange at poll priority on the bus's priority lock: an unlock waits for at most one probe.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from cloud_link.events import now_ms
from devices.labels.registry import TagRecord, TagRegistry
from devices.labels.updates import PRIORITY_TECHNICIAN, type_name
from devices.lockers.kerong import BOARDS, LOCKS_PER_BOARD, KerongBus
from devices.mqtt.registry import DeviceRecord
from edge_agent.services import config_store
from edge_agent.services.board_finds import BoardFind
from edge_agent.services.web_sessions import WebSession
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.auth import require

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.1
LIST_LIMIT = 500
TAG_ID = r"^[0-9a-fA-F]{16}$"
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A lock board found by a scan: "<bus>:<number>".
BOARD_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}:([0-9]|1[0-5])$"
BOARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# At module level: FastAPI resolves the (postponed) annotations of a route in the module's globals.
Technician = Annotated[WebSession, Depends(require(Role.TECHNICIAN))]


def _refuse(status: int, error: str, message: str) -> HTTPException:
    return HTTPException(status, {"error": error, "message": message})


class AdoptBoardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    board_id: str | None = Field(
        None, pattern=BOARD_ID_RE.pattern, description="The id to give the board; default kerong-<number> "
        "(or <bus>-kerong-<number> when that is taken)."
    )
    write_config: bool = Field(
        False, description="Also add the [[lockers.boards]] entry to the configuration file (needs the admin role); "
        "it takes effect at the next start."
    )


def tag_json(rec: TagRecord) -> dict[str, Any]:
    return {
        "tag_id": rec.tag_id,
        "type": type_name(rec.type_code),
        "base_station": rec.base_station,
        "sku": rec.sku,
        "scan_code": rec.scan_code,
        "battery_mv": rec.battery_mv,
        "rssi": rec.rssi,
        "fw_version": rec.fw_version,
        "last_seen_ms": rec.last_seen_ms,
        "adopted": rec.adopted,
    }


def device_json(rec: DeviceRecord) -> dict[str, Any]:
    announce = rec.announce
    return {
        "device_id": rec.device_id,
        "adopted": rec.adopted,
        "kind": announce.kind if announce else None,
        "model": announce.model if announce else None,
        "fw": announce.fw if announce else None,
        "kiosk_id": rec.kiosk_id,
        "online": rec.online,
        "first_seen_ms": rec.first_seen_ms,
        "last_seen_ms": rec.last_seen_ms,
    }


def board_find_json(find: BoardFind, configured: bool, suggested_id: str) -> dict[str, Any]:
    board_id = find.board_id or suggested_id
    return {
        "id": find.key,
        "bus": find.bus,
        "number": find.number,
        "first_seen_ms": find.first_seen_ms,
        "last_answer_ms": find.last_answer_ms,
        "adopted": find.adopted_ms is not None,
        "adopted_ms": find.adopted_ms,
        "adopted_by": find.adopted_by,
        "board_id": board_id,
        # The KR-CU16 status answer carries 16 locks' bits whatever is wired: the protocol does not say.
        "locks": None,
        "max_locks": LOCKS_PER_BOARD,
        "configured": configured,
        "snippet": find.snippet(board_id),
    }


class Discovery:
    """The discovery page's operations over the agent's running parts."""

    def __init__(self, admin: AdminServices) -> None:
        self.admin = admin
        self._scan_lock = asyncio.Lock()

    @property
    def tags(self) -> TagRegistry:
        # The label service's own registry when labels run (its adoption policy is the configured one).
        return self.admin.labels.registry if self.admin.labels is not None else self.admin.tags

    # -- lock boards ------------------------------------------------------------------------------

    def configured_boards(self) -> dict[tuple[str, int], str]:
        return {(b.bus, b.number): b.id for b in self.admin.config.lockers.boards}

    def suggested_id(self, bus: str, number: int) -> str:
        taken = {b.id for b in self.admin.config.lockers.boards} | {g.id for g in self.admin.config.lockers.gpio_boards}
        plain = f"kerong-{number}"
        return plain if plain not in taken else f"{bus}-kerong-{number}"

    def board_json(self, find: BoardFind) -> dict[str, Any]:
        configured = (find.bus, find.number) in self.configured_boards()
        return board_find_json(find, configured, self.suggested_id(find.bus, find.number))

    async def scan(self) -> dict[str, Any]:
        """Probe every board number on every bus; record the boards that answered and are not configured."""
        if self._scan_lock.locked():
            raise _refuse(409, "scan_running", "a bus scan is already running; wait for it")
        async with self._scan_lock:
            buses = dict(self.admin.locker_buses)
            async with asyncio.TaskGroup() as tg:
                tasks = {name: tg.create_task(self._scan_bus(bus), name=f"bus-scan-{name}")
                         for name, bus in buses.items()}
            configured = self.configured_boards()
            now = now_ms()
            answered = {name: task.result() for name, task in tasks.items()}
            new = [(name, n) for name, numbers in answered.items() for n in numbers if (name, n) not in configured]
            await self.admin.board_finds.record_answers(new, now)
            log.info("bus scan: %d boards answered, %d not configured", sum(map(len, answered.values())), len(new))
            silent = {name: sorted(n for (b, n) in configured if b == name and n not in answered[name])
                      for name in buses}
            return {
                "scanned_ms": now,
                "buses": [
                    {
                        "bus": name,
                        "connected": buses[name].connected,
                        "answered": answered[name],
                        "configured_silent": silent[name],
                    }
                    for name in sorted(buses)
                ],
                "found": [self.board_json(f) for f in self.admin.board_finds.all() if (f.bus, f.number) in set(new)],
            }

    @staticmethod
    async def _scan_bus(bus: KerongBus) -> list[int]:
        if not bus.connected:
            return []
        found = []
        for number in range(BOARDS):
            # One probe per lock hold: an unlock queued meanwhile goes next, not after the whole scan.
            if await bus.probe(number, PROBE_TIMEOUT_S) is not None:
                found.append(number)
        return found

    async def adopt_board(self, key: str, body: AdoptBoardBody, session: WebSession) -> dict[str, Any]:
        bus, _, number_text = key.rpartition(":")
        number = int(number_text)
        find = self.admin.board_finds.get(bus, number)
        if find is None:
            raise _refuse(404, "unknown_board", f"no board {number} on bus {bus} answered a scan; scan the buses first")
        if (bus, number) in self.configured_boards():
            raise _refuse(409, "already_configured", f"board {number} on bus {bus} is already in the configuration")
        board_id = body.board_id or find.board_id or self.suggested_id(bus, number)
        taken = {b.id for b in self.admin.config.lockers.boards} | {g.id for g in self.admin.config.lockers.gpio_boards}
        if board_id in taken:
            raise _refuse(409, "board_id_taken", f"a board named {board_id} is already configured")
        config_result = None
        if body.write_config:
            if not session.role.allows(Role.ADMIN):
                raise _refuse(403, "forbidden", "writing the configuration needs the admin role")
            config_result = await self._add_to_config(find.snippet(board_id))
        now = now_ms()
        await self.admin.board_finds.mark_adopted(bus, number, board_id=board_id, by=session.username, at_ms=now)
        adopted = self.admin.board_finds.get(bus, number)
        assert adopted is not None
        return {"board": self.board_json(adopted), "config": config_result, "restart_needed": True}

    async def _add_to_config(self, snippet: str) -> dict[str, Any]:
        if self.admin.config_path is None:
            raise _refuse(409, "no_config_file", "the agent was not started from a configuration file")
        store = config_store.ConfigStore(self.admin.config_path, self.admin.config)

        def write() -> dict[str, Any]:
            current = store.read()
            text = current.text if current.text.endswith("\n") else current.text + "\n"
            result = store.save(text + "\n" + snippet, current.version)
            return result.as_dict()

        try:
            return await asyncio.to_thread(write)
        except config_store.ConfigInvalidError as exc:
            problems = [p.as_dict() for p in exc.problems]
            raise HTTPException(422, {"error": "config_invalid", "message": "the configuration would not be valid",
                                      "problems": problems}) from None
        except config_store.ConfigStoreError as exc:
            raise _refuse(409, exc.error, str(exc)) from None

    # -- the list ---------------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        admin = self.admin
        labels_cfg = admin.config.labels
        lb = admin.config.local_broker
        devices = admin.gateway.registry.all() if admin.gateway is not None else []
        configured = self.configured_boards()
        finds = [f for f in self.admin.board_finds.all() if (f.bus, f.number) not in configured]
        return {
            "tags": [tag_json(t) for t in self.tags.discovered(LIST_LIMIT)],
            "tags_discovered": self.tags.count_discovered(),
            "mqtt_devices": [device_json(d) for d in devices if not d.adopted][:LIST_LIMIT],
            "lock_boards": [self.board_json(f) for f in finds],
            "buses": sorted(admin.locker_buses),
            "policy": {
                "tags": labels_cfg.adopt,
                "allowed_tags": len(labels_cfg.allowed_tags),
                "mqtt_devices": lb.adopt if admin.gateway is not None else None,
                "allowed_devices": len(lb.allowed_devices),
                "lock_boards": "scan",
            },
            "mqtt_enabled": admin.gateway is not None,
        }

    async def adopt_tag(self, tag_id: str) -> dict[str, Any]:
        rec = await self.tags.adopt(tag_id.lower())
        if rec is None:
            raise _refuse(404, "unknown_tag", f"no tag {tag_id.lower()} has been reported by a base station")
        queued = 0
        if self.admin.labels is not None and rec.sku is not None:
            # Paired while it could not be drawn on: it gets its picture now.
            queued = await self.admin.labels.request_update([rec.tag_id], PRIORITY_TECHNICIAN, "adopted")
        return {"tag": tag_json(rec), "queued": queued}

    def adopt_device(self, device_id: str) -> dict[str, Any]:
        gateway = self.admin.gateway
        if gateway is None:
            raise _refuse(404, "no_local_broker", "the agent does not use an in-store broker")
        if not gateway.adopt(device_id):
            raise _refuse(404, "unknown_device", f"no device {device_id} has been heard on the in-store broker")
        record = gateway.registry.get(device_id)
        assert record is not None
        return {"device": device_json(record)}


def discovery_router(admin: AdminServices) -> APIRouter:
    discovery = Discovery(admin)
    router = APIRouter(prefix="/api/discovery", tags=["discovery"], dependencies=[Depends(require(Role.TECHNICIAN))])

    @router.get("", summary="Discovered tags, MQTT devices and lock boards, and the adoption policies")
    def listing() -> dict[str, Any]:
        return discovery.listing()

    @router.post("/tags/{tag_id}/adopt", summary="Adopt a discovered tag")
    async def adopt_tag(tag_id: Annotated[str, Path(pattern=TAG_ID)]) -> dict[str, Any]:
        return await discovery.adopt_tag(tag_id)

    @router.post("/mqtt-devices/{device_id}/adopt", summary="Adopt a discovered MQTT device")
    def adopt_device(device_id: Annotated[str, Path(pattern=DEVICE_ID)]) -> dict[str, Any]:
        return discovery.adopt_device(device_id)

    @router.post("/lock-boards/scan", summary="Probe every board number on every lock bus")
    async def scan() -> dict[str, Any]:
        return await discovery.scan()

    @router.post("/lock-boards/{board}/adopt", summary="Adopt a lock board found by a scan")
    async def adopt_board(
        board: Annotated[str, Path(pattern=BOARD_KEY, description="<bus>:<number>")],
        session: Technician,
        body: AdoptBoardBody | None = None,
    ) -> dict[str, Any]:
        return await discovery.adopt_board(board, body or AdoptBoardBody(board_id=None, write_config=False), session)

    return router
