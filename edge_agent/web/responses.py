"""What several routers answer alike: no-store headers, server-sent-event streams, and a pickup code's result as
HTTP (the locker screens and the kiosks check codes through the same LockerService.collect)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from edge_agent.services.lockers import CollectResult, CollectStatus

# Answers with a session's, a kiosk's or a shopper's data: never kept by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def event_stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A server-sent-event stream (frames made by services.store_health.sse_frame), unbuffered by proxies."""
    return StreamingResponse(frames, media_type="text/event-stream", headers={**NO_STORE, "X-Accel-Buffering": "no"})


def collect_answer(result: CollectResult) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A pickup code's result as (HTTP status, headers, fields); the screen adds its own message. 200 for ok,
    wrong and shelf (the slot), 429 with Retry-After when locked out, 409 for an order at another bank (the
    bank), 503 when the door cannot be opened now."""
    fields: dict[str, Any] = {"status": result.status.value}
    if result.status is CollectStatus.OK:
        fields.update(compartment=result.compartment, door=result.door)
    elif result.status is CollectStatus.LOCKED_OUT:
        seconds = max(1, result.seconds_left)
        fields["seconds_left"] = seconds
        return 429, {"Retry-After": str(seconds)}, fields
    elif result.status is CollectStatus.UNAVAILABLE:
        return 503, {}, fields
    elif result.status is CollectStatus.ELSEWHERE:
        fields["bank"] = result.bank
        return 409, {}, fields
    elif result.status is CollectStatus.SHELF:
        fields["slot"] = result.slot  # an order on a pickup shelf: its slot's label flashes
    return 200, {}, fields
