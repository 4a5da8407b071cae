"""The dashboard's JSON snapshot (GET /api/dashboard) and the web UI's live stream (GET /api/live, server-sent
events), both for staff and up. What they carry is described in docs/web-ui.md ("Dashboard")."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from edge_agent.services.store_health import LiveClient, LiveHub, sse_frame
from edge_agent.services.web_users import Role
from edge_agent.web.auth import SESSION_COOKIE, WebAuth, require
from edge_agent.web.responses import NO_STORE, event_stream

# How often a quiet stream checks whether its client went away (the hub's pings come every 15 s).
IDLE_CHECK_S = 1.0
# How often an open stream checks that its session still holds (signed out, password or role changed, user
# removed, 12 hours over): the stream then ends, and the page's next request goes to the sign-in page. The
# check counts as activity, so an open dashboard keeps its session (up to the 12-hour limit).
SESSION_CHECK_S = 30.0


def dashboard_router(live: LiveHub) -> APIRouter:
    router = APIRouter(dependencies=[Depends(require(Role.STAFF))], tags=["dashboard"])

    # async: the snapshot reads the services' in-memory state, which only the event loop may touch.
    @router.get("/api/dashboard", summary="The store at a glance: cloud link, devices, alarms, tag updates")
    async def dashboard() -> JSONResponse:
        return JSONResponse(live.health.snapshot(), headers=NO_STORE)

    @router.get(
        "/api/live",
        summary="Server-sent events: dashboard (changed snapshot), device, compartment, alarm, progress, ping",
        response_class=StreamingResponse,
    )
    async def live_stream(request: Request) -> StreamingResponse:
        try:
            client = live.subscribe()
        except OverflowError:
            raise HTTPException(
                status_code=429, detail={"error": "too_many_streams", "message": "too many live streams"}
            ) from None
        return event_stream(_frames(live, client, request))

    return router


async def _frames(live: LiveHub, client: LiveClient, request: Request) -> AsyncIterator[bytes]:
    try:
        # The current state first, so a page needs no separate request; then whatever changes.
        yield b"retry: 2000\n\n" + sse_frame("dashboard", live.health.snapshot())
        next_check = time.monotonic() + SESSION_CHECK_S
        while True:
            frame = await client.get(IDLE_CHECK_S)
            if frame is not None:
                yield frame
            elif client.closed or await request.is_disconnected():
                return
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + SESSION_CHECK_S
                if not await _session_holds(request):
                    return
    finally:
        live.unsubscribe(client)


async def _session_holds(request: Request) -> bool:
    auth: WebAuth = request.app.state.auth
    token = request.cookies.get(SESSION_COOKIE)
    session = await auth.sessions.use(token) if token else None
    return session is not None and session.role.allows(Role.STAFF)
