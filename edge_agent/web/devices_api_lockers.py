"""Lock boards and compartments for the devices and lockers pages (`/api/devices/lockers...`).

Staff see every compartment with its door and item as of the locker service's latest sensor reading (the
alarm poll's, so looking costs the RS485 bus nothing), its pickup's state, open alarms and retrievals; never a
pickup code (the service does not even hold one to give). Technicians take a compartment out of service and
back, and test-open a door: through LockerService.test_open -> DoorOpener, so it is opened at most once and
lands in the hash-chained audit log as `test` with the signed-in user (`web:<username>`) and the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.lockers import LockerError, LockerService
from edge_agent.services.web_sessions import WebSession
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.api_errors import api_error
from edge_agent.web.auth import require

log = logging.getLogger(__name__)

# Configured compartment ids are short names like "A-12" (config.py); anything else is simply not found.
CompartmentId = Annotated[str, Path(min_length=1, max_length=64, description="The compartment, e.g. A-12.")]
# A reason is read by people (audit log, devices page): any script, no control characters.
REASON_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# Module level, not inside the router factory: FastAPI resolves these annotations from the module's globals.
TechnicianSession = Annotated[WebSession, Depends(require(Role.TECHNICIAN))]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=200, pattern=REASON_PATTERN, description="Why (kept in the log).")


class EnableBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, min_length=1, max_length=200, pattern=REASON_PATTERN)


def lockers_snapshot(admin: AdminServices, lockers: LockerService) -> dict[str, Any]:
    doors = lockers.door_states()
    pickups = lockers.holding_pickups()
    banks: dict[str, list[dict[str, Any]]] = {}
    for info in lockers.compartments():
        spec = info.spec
        reading = doors.get(spec.id)
        pickup = pickups.get(spec.id)
        banks.setdefault(spec.bank, []).append(
            {
                "id": spec.id,
                "bank": spec.bank,
                "board": spec.board_id,
                "lock": spec.lock,
                "size": spec.size,
                "row": spec.row,
                "column": spec.column,
                "enabled": info.enabled,
                "oos_reason": info.oos_reason,
                # A lock board reports "latched"; an unlatched door reads as open (lockers.py's docstring).
                "door": None if reading is None else ("closed" if reading[0].locked else "open"),
                "item": None if reading is None else reading[0].item,
                "reading_age_s": None if reading is None else round(reading[1], 2),
                "opening": lockers.opening_kind(spec.id),
                "pickup": None
                if pickup is None
                else {"order_id": pickup.order_id, "state": pickup.state, "size": pickup.size,
                      "hold_until_ms": pickup.hold_until_ms},
            }
        )
    for compartments in banks.values():
        compartments.sort(key=lambda c: (c["row"], c["column"], c["id"]))
    return {
        "banks": [{"bank": bank, "compartments": banks[bank]} for bank in sorted(banks)],
        "boards": boards_json(admin),
        "alarms": [dataclasses.asdict(a) for a in lockers.open_alarms()],
        "retrievals": [
            {"order_id": p.order_id, "compartment": p.compartment, "size": p.size, "hold_until_ms": p.hold_until_ms,
             "since_ms": p.updated_ms}
            for p in lockers.retrievals()
        ],
    }


def boards_json(admin: AdminServices) -> list[dict[str, Any]]:
    cfg = admin.config.lockers
    buses = {b.name: b for b in cfg.buses}
    out: list[dict[str, Any]] = []
    for board in cfg.boards:
        bus = admin.locker_buses.get(board.bus)
        out.append(
            {
                "board_id": board.id,
                "kind": "kerong",
                "number": board.number,
                "locks": board.locks,
                "bus": board.bus,
                "url": buses[board.bus].url if board.bus in buses else None,
                "connected": bus is not None and bus.connected,
                "bus_stats": None if bus is None else {
                    "requests": bus.stats.requests, "timeouts": bus.stats.timeouts, "retries": bus.stats.retries,
                    "checksum_errors": bus.stats.checksum_errors, "unlocks_sent": bus.stats.unlocks_sent,
                    "reconnects": bus.stats.reconnects, "last_error": bus.stats.last_error,
                },
            }
        )
    for gpio in cfg.gpio_boards:
        out.append({"board_id": gpio.id, "kind": "gpio", "number": None, "locks": len(gpio.locks), "bus": None,
                    "url": None, "connected": gpio.id in admin.lock_boards, "bus_stats": None})
    return out


def lockers_router(admin: AdminServices) -> APIRouter:
    router = APIRouter(prefix="/lockers")
    staff = [Depends(require(Role.STAFF))]

    def service() -> LockerService:
        if admin.lockers is None:
            raise api_error(404, "no_lockers", "this store has no lockers")
        return admin.lockers

    def known(lockers: LockerService, compartment_id: str) -> None:
        try:
            lockers.compartment(compartment_id)
        except LockerError:
            raise api_error(404, "unknown_compartment", f"no compartment {compartment_id}") from None

    @router.get("", dependencies=staff)
    def lockers_state() -> dict[str, Any]:
        """Every compartment (door, item, pickup state: never a code), the boards, open alarms, retrievals."""
        if admin.lockers is None:
            return {"banks": [], "boards": [], "alarms": [], "retrievals": [], "enabled": False}
        return {"enabled": True, **lockers_snapshot(admin, admin.lockers)}

    @router.post("/compartments/{compartment_id}/disable", responses={404: {}})
    async def disable(
        compartment_id: CompartmentId, body: ReasonBody, session: TechnicianSession
    ) -> dict[str, Any]:
        """Take a compartment out of service: nothing is loaded into it until it is enabled again."""
        lockers = service()
        known(lockers, compartment_id)
        await lockers.set_in_service(compartment_id, False, body.reason)
        log.info("compartment %s taken out of service by web:%s: %s", compartment_id, session.username, body.reason)
        info = lockers.compartment(compartment_id)
        return {"compartment": compartment_id, "enabled": info.enabled, "oos_reason": info.oos_reason}

    @router.post("/compartments/{compartment_id}/enable", responses={404: {}})
    async def enable(
        compartment_id: CompartmentId, session: TechnicianSession, body: EnableBody | None = None
    ) -> dict[str, Any]:
        """Put a compartment back in service (after a jam or a check)."""
        lockers = service()
        known(lockers, compartment_id)
        await lockers.set_in_service(compartment_id, True)
        log.info("compartment %s put back in service by web:%s: %s", compartment_id, session.username,
                 body.reason if body else "")
        info = lockers.compartment(compartment_id)
        return {"compartment": compartment_id, "enabled": info.enabled, "oos_reason": info.oos_reason}

    @router.post("/compartments/{compartment_id}/test-open", responses={404: {}, 409: {}})
    async def test_open(
        compartment_id: CompartmentId, body: ReasonBody, session: TechnicianSession
    ) -> dict[str, Any]:
        """Open the door once for a test; audited (`test`, `web:<username>`, the reason)."""
        lockers = service()
        known(lockers, compartment_id)
        try:
            opening = await lockers.test_open(compartment_id, actor=f"web:{session.username}", reason=body.reason)
        except LockerError as exc:
            raise api_error(409, "not_opened", str(exc)) from None
        state = opening.outcome.state
        return {
            "compartment": compartment_id,
            "result": opening.outcome.result.value,
            "op_id": opening.op_id,
            "door": None if state is None else ("closed" if state.locked else "open"),
        }

    return router
