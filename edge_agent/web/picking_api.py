"""The picking board's JSON API (`/api/picking...`, staff and up): active pick lists with their lines, the lists
finished today, and what staff do on the board: confirm a line (picked in full, short, or substituted), confirm
by scanning a product at the board (a keyboard-wedge scanner), cancel a list.

Every change goes through `PickingService` (edge_agent.services.picking), the same path as a handheld scan or a
tag's button, so the LEDs, pages, events and the board's live updates (`picking` on /api/live) follow from it;
the confirming user is recorded as `web:<username>`. PickingError codes map to 404 (unknown list or line),
409 (no longer open, duplicate) and 422 (bad quantity, unknown product).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.picking import PickingError, PickingService, PickLine, PickList
from edge_agent.services.web_sessions import WebSession
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.api_errors import api_error, refuse
from edge_agent.web.auth import require

# Module level, not inside the router factory: FastAPI resolves these annotations from the module's globals.
StaffSession = Annotated[WebSession, Depends(require(Role.STAFF))]
ListId = Annotated[str, Path(min_length=1, max_length=128, description="The pick list's id (from pick.start).")]
LineNo = Annotated[int, Path(ge=0, le=100_000, description="The line's number in its list.")]
# A code as a scanner types it: printable, no control characters.
CODE_PATTERN = r"^[^\x00-\x1f\x7f]+$"

ERROR_STATUS = {
    "unknown_list": 404,
    "unknown_line": 404,
    "not_open": 409,
    "duplicate_list": 409,
    "bad_quantity": 422,
    "unknown_sku": 422,
    "no_tags": 422,
    "invalid_payload": 422,
}
RECENT_LIMIT = 200


class ConfirmBody(BaseModel):
    """Nothing: picked in full. `picked_qty` below the line's quantity: short. `substitute_sku`: substituted."""

    model_config = ConfigDict(extra="forbid")
    picked_qty: int | None = Field(None, ge=0, le=1_000_000, description="How many were actually taken.")
    substitute_sku: str | None = Field(
        None, min_length=1, max_length=128, pattern=CODE_PATTERN,
        description="The product taken instead: its sku or its barcode.",
    )


class ScanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=512, pattern=CODE_PATTERN, description="A product's barcode or sku.")


def _refused(exc: PickingError) -> NoReturn:
    refuse(ERROR_STATUS, exc.code, exc.message)


def _start_of_today_ms() -> int:
    """Local midnight: "today" as the store's staff mean it."""
    midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * 1000)


def picking_router(admin: AdminServices) -> APIRouter:
    router = APIRouter(prefix="/api/picking", tags=["picking"], dependencies=[Depends(require(Role.STAFF))])

    def service() -> PickingService:
        picking = admin.picking
        if picking is None:
            raise api_error(404, "picking_off", "pick-to-light picking is not running in this store")
        return picking

    def names(skus: set[str]) -> dict[str, str]:
        return {sku: p.name for sku, p in admin.catalog.get_many(skus).items()}

    def line_json(line: PickLine, known: dict[str, str]) -> dict[str, Any]:
        return {
            "line_no": line.line_no,
            "order_id": line.order_id,
            "sku": line.sku,
            "name": known.get(line.sku),
            "quantity": line.quantity,
            "tags": list(line.tags),
            "state": line.state,
            "picked_qty": line.picked_qty,
            "substitute_sku": line.substitute_sku,
            "substitute_name": known.get(line.substitute_sku) if line.substitute_sku else None,
            "confirmed_by": line.confirmed_by,
            "confirmed_ms": line.confirmed_ms,
        }

    def lists_json(lists: list[PickList]) -> list[dict[str, Any]]:
        skus = {line.sku for pl in lists for line in pl.lines}
        skus |= {line.substitute_sku for pl in lists for line in pl.lines if line.substitute_sku}
        known = names(skus)
        return [
            {
                "list_id": pl.list_id,
                "picker": pl.picker,
                "colour": pl.colour,
                "order_ids": list(pl.order_ids),
                "state": pl.state,
                "created_ms": pl.created_ms,
                "finished_ms": pl.finished_ms,
                "lines": [line_json(line, known) for line in pl.lines],
            }
            for pl in lists
        ]

    @router.get("")
    def board(
        recent: Annotated[bool, Query(description="Also the lists completed or cancelled today.")] = False,
    ) -> dict[str, Any]:
        """The active pick lists (oldest first) and, with `recent=1`, today's finished ones (latest first).
        `now_ms` is the agent's clock, so the board's elapsed times do not depend on the browser's."""
        picking = admin.picking
        if picking is None:
            return {"enabled": False, "now_ms": int(time.time() * 1000), "lists": [], "recent": []}
        active = sorted(picking.lists(active_only=True, limit=1000), key=lambda pl: pl.created_ms)
        body: dict[str, Any] = {"enabled": True, "now_ms": int(time.time() * 1000), "lists": lists_json(active)}
        if recent:
            since = _start_of_today_ms()
            done = [
                pl for pl in picking.lists(active_only=False, limit=RECENT_LIMIT)
                if pl.state != "active" and (pl.finished_ms or pl.created_ms) >= since
            ]
            done.sort(key=lambda pl: pl.finished_ms or pl.created_ms, reverse=True)
            body["recent"] = lists_json(done)
        return body

    @router.get("/{list_id}", responses={404: {}})
    def one(list_id: ListId) -> dict[str, Any]:
        pick_list = service().get(list_id)
        if pick_list is None:
            raise api_error(404, "unknown_list", f"no pick list {list_id}")
        return lists_json([pick_list])[0]

    @router.post("/{list_id}/lines/{line_no}/confirm", responses={404: {}, 409: {}, 422: {}})
    async def confirm(
        list_id: ListId, line_no: LineNo, session: StaffSession, body: ConfirmBody | None = None
    ) -> dict[str, Any]:
        """Confirm an open line: in full (no body), short (`picked_qty` below the quantity) or substituted."""
        picking = service()
        options = body or ConfirmBody(picked_qty=None, substitute_sku=None)
        try:
            # The service takes the substitute's sku or barcode (staff may scan it) and records the sku.
            line = await picking.confirm(
                list_id, line_no, by=f"web:{session.username}", picked_qty=options.picked_qty,
                substitute_sku=options.substitute_sku,
            )
        except PickingError as exc:
            _refused(exc)
        skus = {line.sku} | ({line.substitute_sku} if line.substitute_sku else set())
        return {"list_id": list_id, **line_json(line, names(skus))}

    @router.post("/scan", responses={404: {}, 409: {}, 422: {}})
    async def scan(body: ScanBody, session: StaffSession) -> dict[str, Any]:
        """A product scanned at the board: confirms the matching open line as a handheld scan does."""
        picking = service()
        code = body.code.strip()
        try:
            line = await picking.scanned(f"web:{session.username}", code)
        except PickingError as exc:
            _refused(exc)
        if line is None:
            raise api_error(404, "no_open_line", f"no open pick line is waiting for {code}")
        return {"list_id": line.list_id, **line_json(line, names({line.sku}))}

    @router.post("/{list_id}/cancel", responses={404: {}, 409: {}})
    async def cancel(list_id: ListId, session: StaffSession) -> dict[str, Any]:
        """Cancel the whole list: its lit tags go dark and back to their price pages."""
        try:
            pick_list = await service().cancel(list_id, actor=f"web:{session.username}")
        except PickingError as exc:
            _refused(exc)
        return lists_json([pick_list])[0]

    return router
