"""The devices page's JSON API (`/api/devices/...`): base stations with their link statistics, shelf tags
(paged list, detail, picture preview, find / re-send / unpair), and, from the sibling modules, lock boards
and compartments (devices_api_lockers.py), kiosks, MQTT devices and GPIO (devices_api_kiosks.py).

Actions go through the same service calls as the cloud's commands (`tag.flash`, `tag.refresh`, `tag.pair`,
`device.*`): the web UI is one more caller, not a second implementation. Errors are
`{"detail": {"error", "message"}}` with a 4xx status, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandFailedError
from devices.labels.stations import TAG_TYPES, BaseStationClient, BaseStationError
from devices.labels.updates import LabelService, type_name
from edge_agent.commands.labels import (
    TAG_ID_PATTERN,
    TagFlashPayload,
    TagPairing,
    TagPairPayload,
    TagRefreshPayload,
    flash_tag,
    pair_tags,
    refresh_tags,
)
from edge_agent.services.tag_listing import ListedTag
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.api_errors import api_error, refuse
from edge_agent.web.auth import require
from edge_agent.web.devices_api_kiosks import kiosks_router
from edge_agent.web.devices_api_lockers import lockers_router

MAX_PAGE = 200
# A cloud command's failure code -> the HTTP status the web API answers it with.
FAILURE_STATUS = {
    "unknown_tag": 404,
    "unknown_device": 404,
    "not_adopted": 409,
    "device_offline": 409,
    "refused": 409,
    "base_station_unreachable": 503,
    "broker_unavailable": 503,
}

TagId = Annotated[str, Path(pattern=TAG_ID_PATTERN, description="16 lowercase hex characters.")]


def command_failed(exc: CommandFailedError) -> NoReturn:
    """A shared command's refusal, as the web API's 4xx/503 answer."""
    refuse(FAILURE_STATUS, exc.code, exc.message)


class FlashBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    colour: Literal["red", "green", "blue", "white"] = Field("green", description="LED colour.")
    count: int = Field(5, ge=1, le=60, description="Flashes.")


def _tag_json(tag: ListedTag, *, detail: bool = False) -> dict[str, Any]:
    info = TAG_TYPES.get(tag.type_code)
    pending = tag.update_pending
    out: dict[str, Any] = {
        "tag_id": tag.tag_id,
        "type": type_name(tag.type_code),
        "size": None if info is None else {"diagonal_in": info.diagonal_in, "width": info.width, "height": info.height},
        "base_station": tag.base_station,
        "product": None if tag.sku is None else {"sku": tag.sku, "name": tag.product_name},
        "battery_mv": tag.battery_mv,
        "rssi": tag.rssi,
        "lqi": tag.lqi,
        "last_seen_ms": tag.last_seen_ms,
        "scan_code": tag.scan_code,
        "adopted": bool(tag.adopted),
        "shows_picture": tag.shown_hash is not None,
        "job": None if not pending else {
            "state": tag.job_state, "reason": tag.job_reason, "attempts": tag.job_attempts, "error": tag.job_error,
            "updated_ms": tag.job_updated_ms,
        },
    }
    if detail:
        out.update(
            temperature_c=tag.temperature_c, fw_version=tag.fw_version, rotation=tag.rotation, template=tag.template,
            shown_hash=tag.shown_hash, pending_hash=tag.job_target_hash if pending else None,
        )
    return out


def station_json(name: str, station: Any, tag_counts: dict[str, int]) -> dict[str, Any]:
    serial = isinstance(station, BaseStationClient)
    info = station.info if serial else None
    return {
        "name": name,
        "kind": "serial" if serial else "wifi",
        "url": station.url if serial else None,
        "connected": bool(station.connected),
        "firmware": None if info is None else info.firmware,
        "serial": None if info is None else info.serial.hex(),
        "radio_channel": None if info is None else info.radio_channel,
        "max_transfers": station.max_held,
        "link": station.link_statistics() if serial else None,
        "last_error": station.stats.last_error if serial else None,
        "tags": tag_counts.get(name, 0),
    }


def devices_router(admin: AdminServices) -> APIRouter:
    router = APIRouter(prefix="/api/devices", tags=["devices"])
    technician = [Depends(require(Role.TECHNICIAN))]

    def labels_or_404() -> LabelService:
        if admin.labels is None:
            raise api_error(404, "no_labels", "this store has no base stations or Wi-Fi labels")
        return admin.labels

    def tag_row(tag_id: str) -> ListedTag:
        row = admin.tag_listing.get(tag_id)
        if row is None:
            raise api_error(404, "unknown_tag", f"no tag {tag_id}")
        return row

    @router.get("/base-stations", dependencies=technician)
    def base_stations() -> dict[str, Any]:
        """Every label station: serial base stations with their link statistics, and the Wi-Fi labels."""
        labels = admin.labels
        if labels is None:
            return {"base_stations": [], "progress": None}
        counts = admin.tag_listing.counts_by_station()
        stations = [station_json(n, s, counts) for n, s in sorted(labels.stations.items())]
        stats = labels.stats
        return {
            "base_stations": stations,
            "progress": labels.progress(),
            "updates": {
                "rendered": stats.rendered, "unchanged": stats.unchanged, "sent": stats.sent,
                "confirmed": stats.confirmed, "retried": stats.retried, "failed": stats.failed,
                "wrong_hash": stats.wrong_hash, "bytes_sent": stats.bytes_sent,
            },
        }

    @router.get("/tags", dependencies=technician)
    def tags(
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        q: Annotated[str | None, Query(max_length=100, description="Part of a tag id, sku, name or scan code.")] = None,
        station: Annotated[str | None, Query(max_length=100)] = None,
        paired: Annotated[bool | None, Query()] = None,
    ) -> dict[str, Any]:
        """Tags, one page at a time (by tag id), with their product, telemetry and pending update job."""
        total, rows = admin.tag_listing.page(
            limit=limit, offset=offset, text=(q or "").strip(), station=station, paired=paired
        )
        return {"total": total, "limit": limit, "offset": offset, "tags": [_tag_json(r) for r in rows]}

    @router.get("/tags/{tag_id}", dependencies=technician)
    def tag(tag_id: TagId) -> dict[str, Any]:
        body = _tag_json(tag_row(tag_id), detail=True)
        labels = admin.labels
        body["scan_url"] = labels.settings.scan_url(body["scan_code"]) if labels is not None else None
        body["station_connected"] = (
            labels is not None and body["base_station"] in labels.stations
            and bool(labels.stations[body["base_station"]].connected)
        )
        return body

    @router.get(
        "/tags/{tag_id}/preview.png",
        dependencies=technician,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {}},
    )
    def preview(
        tag_id: TagId,
        picture: Annotated[Literal["shown", "pending"], Query(description="What the tag shows / will show.")] = "shown",
    ) -> Response:
        labels = labels_or_404()
        row = tag_row(tag_id)
        target = row.job_target_hash if picture == "pending" and row.update_pending else None
        if picture == "pending" and target is None:
            raise api_error(404, "no_picture", f"tag {tag_id} has no update waiting")
        png = labels.preview_png(tag_id, scale=2, picture_hash=target)
        if png is None:
            raise api_error(404, "no_picture", f"no picture of tag {tag_id} is known yet")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.post("/tags/{tag_id}/flash", dependencies=technician, responses={404: {}, 409: {}, 502: {}, 503: {}})
    async def flash(tag_id: TagId, body: FlashBody | None = None) -> dict[str, Any]:
        """Flash the tag's LED so it can be found on the shelf (as the cloud's `tag.flash`)."""
        labels = labels_or_404()
        tag_row(tag_id)
        options = body or FlashBody(colour="green", count=5)
        try:
            return await flash_tag(labels, TagFlashPayload(tag_id=tag_id, colour=options.colour, count=options.count))
        except CommandFailedError as exc:
            command_failed(exc)
        except BaseStationError as exc:  # an answer that is not one (a firmware bug): the station's fault, not ours
            raise api_error(502, "base_station_error", str(exc)) from None

    @router.post("/tags/{tag_id}/resend", dependencies=technician, responses={404: {}})
    async def resend(tag_id: TagId) -> dict[str, Any]:
        """Render the tag's picture again and send it if it differs from what the tag shows (`tag.refresh`)."""
        labels = labels_or_404()
        tag_row(tag_id)
        return await refresh_tags(labels, TagRefreshPayload(tag_ids=[tag_id]))

    @router.post("/tags/{tag_id}/unpair", dependencies=technician, responses={404: {}})
    async def unpair(tag_id: TagId) -> dict[str, Any]:
        """Remove the tag's product (`tag.pair` with sku null)."""
        tag_row(tag_id)
        return await pair_tags(admin.catalog, TagPairPayload(pairs=[TagPairing(tag_id=tag_id, sku=None)]))

    router.include_router(lockers_router(admin))
    router.include_router(kiosks_router(admin))
    return router
