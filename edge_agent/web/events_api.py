"""The audit log and the recent events, as JSON API (technician).

Where events live: an event is committed to the outbox (`outbox` table) before anything else sees it, and is
deleted once the cloud broker acknowledged it (cloud_link/outbox.py). So the database holds the events *not
yet sent*, and nothing of the sent ones; `GET /api/events` (state=unsent) lists those and says so. For the
recently sent ones, the web UI keeps the last RECENT_KEPT events published on the event bus since it started,
in memory (a bounded bus subscription, drained on request: no task, nothing on disk); `state=recent` lists them
with `sent` true once the event is gone from the outbox (acknowledged, or telemetry dropped when full). Device
states are separate: one row per device, latest only, with the revision the cloud acknowledged
(`GET /api/device-states`).

Every query is bounded: at most MAX_LIMIT rows answered, and the event filters look at no more than
SCAN_WINDOW of the newest rows below `before_seq` per request (an outbox can hold millions of events after a
long outage); `next_before_seq` pages further back.
"""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from cloud_link.bus import EventBus
from cloud_link.events import Event
from cloud_link.outbox import Outbox
from edge_agent.services.audit import AuditLog, verify_file
from edge_agent.services.web_users import Role
from edge_agent.web.auth import require

MAX_LIMIT = 500
RECENT_KEPT = 1000
# Larger numbers do not fit SQLite's 64-bit integers (and mean nothing as ms or seq).
MAX_INT = 2**62
SCAN_WINDOW = 20_000
# Bodies larger than this are listed without their payload (the list stays small; the cloud gets it all).
MAX_BODY_SHOWN = 16 * 1024

RECENT_NOTE = (
    f"The last {RECENT_KEPT} events published since the web UI started, kept in memory (a restart forgets them); "
    "sent = no longer in the outbox (acknowledged by the cloud, or telemetry dropped when the outbox was full)."
)
EVENTS_NOTE = (
    "Only unsent events are kept: the outbox deletes an event once the cloud broker acknowledged it. "
    "What is listed here is waiting to be sent."
)


def _envelope(body: bytes) -> dict[str, Any] | None:
    if len(body) > MAX_BODY_SHOWN:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unsent_events(
    outbox: Outbox,
    *,
    type_prefix: str | None,
    since_ms: int | None,
    until_ms: int | None,
    before_seq: int | None,
    limit: int,
) -> dict[str, Any]:
    found = outbox.unsent_window(
        below_seq=before_seq if before_seq is not None else MAX_INT, window=SCAN_WINDOW, limit=limit,
        type_prefix=type_prefix, since_ms=since_ms, until_ms=until_ms,
    )
    lowest, scanned, rows = found.lowest_seq, found.scanned, found.events
    if lowest is None:
        return {"events": [], "scanned": 0, "next_before_seq": None}
    events = []
    for row in rows:
        envelope = _envelope(row.body)
        events.append({
            "seq": row.seq, "event_id": row.event_id, "type": row.type, "class": row.cls, "topic": row.topic,
            "created_ms": row.created_ms, "size": row.size,
            "payload": envelope.get("payload") if envelope is not None else None,
            "payload_shown": envelope is not None,
        })
    # A full page, or a full window: there may be more further back (from the last row, or below the window).
    more = len(rows) == limit or scanned == SCAN_WINDOW
    next_before = (rows[-1].seq if len(rows) == limit else lowest) if more else None
    return {"events": events, "scanned": scanned, "next_before_seq": next_before}


class RecentEvents:
    """The last RECENT_KEPT events published since the web UI started. The bus subscription's queue is the
    bound (it drops its oldest when full); each read moves what arrived into the ring."""

    def __init__(self, bus: EventBus, kept: int = RECENT_KEPT) -> None:
        self._sub = bus.subscribe(maxsize=kept)
        self._ring: collections.deque[Event] = collections.deque(maxlen=kept)

    def events(self) -> list[Event]:
        """Newest first."""
        while (event := self._sub.get_nowait()) is not None:
            self._ring.append(event)
        return list(reversed(self._ring))


def _recent(
    recent: RecentEvents,
    outbox: Outbox,
    *,
    type_prefix: str | None,
    since_ms: int | None,
    until_ms: int | None,
    before_seq: int | None,
    limit: int,
) -> dict[str, Any]:
    chosen = [
        e for e in recent.events()
        if (not type_prefix or e.type.startswith(type_prefix))
        and (since_ms is None or e.ts_ms >= since_ms)
        and (until_ms is None or e.ts_ms < until_ms)
        and (before_seq is None or e.seq < before_seq)
    ]
    page = chosen[:limit]
    unsent = outbox.unsent_among(e.seq for e in page)
    events = [
        {
            "seq": e.seq, "event_id": e.event_id, "type": e.type, "class": e.cls.value,
            "created_ms": e.ts_ms, "payload": e.payload, "payload_shown": True, "sent": e.seq not in unsent,
        }
        for e in page
    ]
    return {
        "events": events,
        "scanned": len(chosen),
        "next_before_seq": page[-1].seq if len(chosen) > limit else None,
    }


def events_router(
    outbox: Outbox, audit: AuditLog | None, bus: EventBus | None = None, *, db_path: Path
) -> APIRouter:
    """`db_path`: the agent's database file, which the audit check reads on a connection of its own."""
    router = APIRouter(tags=["events and audit"], dependencies=[Depends(require(Role.TECHNICIAN))])
    recent = RecentEvents(bus) if bus is not None else None

    @router.get("/api/events")
    async def list_events(
        *,
        type: Annotated[str | None, Query(max_length=64, description="Event type prefix, e.g. `pickup.`")] = None,
        since_ms: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Created at or after (Unix ms).")] = None,
        until_ms: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Created before (Unix ms).")] = None,
        before_seq: Annotated[int | None, Query(ge=1, le=MAX_INT, description="Page: events with a lower seq.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        state: Annotated[
            Literal["unsent", "recent"],
            Query(description="unsent: in the outbox (durable); recent: published since the web UI started, "
                  f"the last {RECENT_KEPT}, in memory, each marked sent or not."),
        ] = "unsent",
    ) -> dict[str, Any]:
        """Events newest first, filtered by type prefix and creation time: the unsent ones in the outbox, or
        the recently published ones with whether each has been sent."""
        if state == "recent":
            if recent is None:
                found: dict[str, Any] = {"events": [], "scanned": 0, "next_before_seq": None}
            else:
                found = _recent(recent, outbox, type_prefix=type, since_ms=since_ms, until_ms=until_ms,
                                before_seq=before_seq, limit=limit)
        else:
            found = _unsent_events(
                outbox, type_prefix=type, since_ms=since_ms, until_ms=until_ms, before_seq=before_seq, limit=limit
            )
        stats = outbox.stats()
        return {
            "state": state,
            "note": EVENTS_NOTE if state == "unsent" else RECENT_NOTE,
            "outbox": {"events": stats.events, "bytes": stats.bytes, "last_seq": stats.last_seq,
                       "oldest_ms": stats.oldest_ms},
            **found,
        }

    @router.get("/api/device-states")
    async def list_device_states(
        state: Annotated[Literal["all", "pending", "sent"], Query()] = "all",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        """The latest state of each device (one row per device), newest first; pending = not yet acknowledged."""
        rows = outbox.device_states(pending={"all": None, "pending": True, "sent": False}[state], limit=limit)
        states = []
        for row in rows:
            envelope = _envelope(row.body)
            states.append({
                "device_id": row.device_id, "rev": row.rev, "sent_rev": row.sent_rev, "pending": row.sent_rev < row.rev,
                "updated_ms": row.updated_ms, "state": envelope.get("state") if envelope is not None else None,
            })
        return {"states": states}

    @router.get("/api/audit")
    async def list_audit(
        after_seq: Annotated[int, Query(ge=0, le=MAX_INT, description="Rows with a higher seq, oldest first.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        """The door audit log (append-only, hash-chained). `last_seq` tells where its end is, so a page can
        ask for the newest rows with `after_seq = last_seq - limit`."""
        if audit is None:
            return {"available": False, "records": [], "last_seq": 0}
        last = audit.last_seq()
        return {
            "available": True,
            "records": [r.as_payload() for r in audit.records(after_seq, limit)],
            "last_seq": last,
        }

    @router.get("/api/audit/verify")
    async def verify_audit() -> dict[str, Any]:
        """Recompute the hash chain; names the first row found wrong (changed, missing, or mis-chained)."""
        if audit is None:
            return {"available": False, "ok": True, "rows": 0, "first_bad_seq": None, "reason": None}
        # A long log takes a while: verified in a worker thread on a read-only connection of its own (as
        # `edge-agent audit verify` does), not on the agent's shared reader in the event loop.
        result = await asyncio.to_thread(verify_file, db_path)
        return {
            "available": True, "ok": result.ok, "rows": result.rows,
            "first_bad_seq": result.first_bad_seq, "reason": result.reason,
        }

    return router
