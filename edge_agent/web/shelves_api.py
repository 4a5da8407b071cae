"""The pickup shelves' JSON API (`/api/shelves...`): the shelves with each slot's order, and what staff and
technicians do with them (docs/pickup-shelves.md).

- GET /api/shelves (staff): every shelf, slot by slot: state empty|ready|released|retrieval, the order, the
  customer's masked name, the hold deadline, when and where a code released it;
- POST /api/shelves (technician): define a shelf from its labels scanned in slot order;
- DELETE /api/shelves/{shelf_id} (technician): remove a shelf that holds no order;
- POST /api/shelves/load (staff): an order into a slot, from two scans (the order's id and the slot's label,
  in either field);
- POST /api/shelves/handover (staff): the scan confirming a released order was handed over;
- POST /api/shelves/retrieve (staff): the scan taking an expired or cancelled order off its slot.
Every change goes through `PickupShelves` (edge_agent.services.pickup_shelves): labels, LEDs, events, audit
and the live stream (`shelf` on /api/live) follow from it; the acting user is recorded as `web:<username>`.
Refusals are `{"detail": {"error", "message"}}`: 404 unknown shelf/slot/order, 409 state conflicts, 422 bad
input, 503 when the store runs no pickup shelves.
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.pickup_shelves import MAX_SLOTS, NAME_MAX, PickupShelves, ShelfError
from edge_agent.services.web_sessions import WebSession
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.api_errors import api_error, refuse
from edge_agent.web.auth import require

StaffSession = Annotated[WebSession, Depends(require(Role.STAFF))]
TechnicianSession = Annotated[WebSession, Depends(require(Role.TECHNICIAN))]
ShelfId = Annotated[str, Path(min_length=1, max_length=32, description="The shelf's id.")]
# A code as a scanner types it: printable, no control characters.
CODE_PATTERN = r"^[^\x00-\x1f\x7f]+$"

ERROR_STATUS = {
    "unknown_shelf": 404,
    "unknown_slot": 404,
    "unknown_order": 404,
    "unknown_tag": 422,
    "invalid_shelf": 422,
    "invalid_name": 422,
    "invalid_slots": 422,
    "invalid_code": 422,
    "duplicate_tag": 422,
    "duplicate_shelf": 409,
    "tag_in_use": 409,
    "shelf_in_use": 409,
    "not_created": 409,
    "slot_taken": 409,
    "slot_empty": 409,
    "not_ready": 409,
    "not_released": 409,
    "not_retrieval": 409,
}


class ShelfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shelf_id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$",
                          description="The shelf's id; slot ids are '<shelf_id>-<position>'.")
    name: str = Field(min_length=1, max_length=NAME_MAX, description="The name on its labels, e.g. 'B'.")
    tags: list[Annotated[str, Field(min_length=1, max_length=512, pattern=CODE_PATTERN)]] = Field(
        min_length=1, max_length=MAX_SLOTS,
        description="The slot labels in slot order (slot 1 first): tag ids, scan codes or scan-link URLs.",
    )


class LoadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order: str = Field(min_length=1, max_length=512, pattern=CODE_PATTERN,
                       description="The order's id as scanned (the two fields may come in either order).")
    slot: str = Field(min_length=1, max_length=512, pattern=CODE_PATTERN,
                      description="The slot's label as scanned: tag id, scan code or scan-link URL, or a slot id.")


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=512, pattern=CODE_PATTERN,
                      description="The order's id or its slot's label, as scanned.")


def _refused(exc: ShelfError) -> NoReturn:
    refuse(ERROR_STATUS, exc.code, exc.message)


def shelves_router(admin: AdminServices) -> APIRouter:
    router = APIRouter(prefix="/api/shelves", tags=["pickup shelves"], dependencies=[Depends(require(Role.STAFF))])

    def service() -> PickupShelves:
        shelves = admin.shelves
        if shelves is None:
            raise api_error(503, "no_shelves", "this store runs no pickup shelves ([lockers] enabled = false)")
        return shelves

    @router.get("")
    def list_shelves() -> dict[str, Any]:
        return {"shelves": [s.as_json() for s in service().shelves()]}

    @router.post("", status_code=201)
    async def define(body: ShelfIn, session: TechnicianSession) -> dict[str, Any]:
        try:
            view = await service().define_shelf(body.shelf_id, body.name, list(body.tags))
        except ShelfError as exc:
            _refused(exc)
        return view.as_json()

    @router.delete("/{shelf_id}")
    async def remove(shelf_id: ShelfId, session: TechnicianSession) -> dict[str, Any]:
        try:
            await service().remove_shelf(shelf_id)
        except ShelfError as exc:
            _refused(exc)
        return {"shelf_id": shelf_id, "removed": True}

    @router.post("/load")
    async def load(body: LoadIn, session: StaffSession) -> dict[str, Any]:
        try:
            view = await service().load(body.order, body.slot, actor=f"web:{session.username}")
        except ShelfError as exc:
            _refused(exc)
        return view.as_json()

    @router.post("/handover")
    async def handover(body: CodeIn, session: StaffSession) -> dict[str, Any]:
        try:
            view = await service().handover(body.code, actor=f"web:{session.username}")
        except ShelfError as exc:
            _refused(exc)
        return view.as_json()

    @router.post("/retrieve")
    async def retrieve(body: CodeIn, session: StaffSession) -> dict[str, Any]:
        try:
            view = await service().retrieve(body.code, actor=f"web:{session.username}")
        except ShelfError as exc:
            _refused(exc)
        return view.as_json()

    return router
