"""The FastAPI application factory. Dependencies come in; the agent's runtime owns their lifetimes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_link.outbox import Outbox
from cloud_link.session import CloudSession
from edge_agent import __version__
from edge_agent.metrics import AgentMetrics
from edge_agent.services.locker_staff import LockerStaff
from edge_agent.services.lockers import LockerService
from edge_agent.services.scan_links import ScanLinkService
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import Role, WebUsers
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.admin_pages import admin_pages_router
from edge_agent.web.api_docs import api_docs_router
from edge_agent.web.auth import WebAuth, check_route_policy, install_auth, is_loopback, require
from edge_agent.web.auth_api import auth_router, users_router
from edge_agent.web.body_limit import BodyLimit
from edge_agent.web.config_api import config_router
from edge_agent.web.dashboard_api import dashboard_router
from edge_agent.web.devices_api import devices_router
from edge_agent.web.diagnostics import diagnostics_router
from edge_agent.web.discovery_api import discovery_router
from edge_agent.web.events_api import events_router
from edge_agent.web.kiosk_api import KioskApi, kiosk_api_router
from edge_agent.web.kiosk_screen import kiosk_screen_router
from edge_agent.web.locker_api import locker_router
from edge_agent.web.locker_screen import locker_screen_router
from edge_agent.web.locker_staff_api import locker_staff_router
from edge_agent.web.pairing_api import pairing_router
from edge_agent.web.picking_api import picking_router
from edge_agent.web.scan_links import ScanLinkLane, scan_links_router, scan_route
from edge_agent.web.shelves_api import shelves_router
from edge_agent.web.validation_errors import install_validation_errors

# Unsent events older than this make /healthz say "degraded" while the link is down.
STALE_OUTBOX_S = 300.0


@dataclass
class WebContext:
    store_id: str
    outbox: Outbox
    metrics: AgentMetrics
    session: CloudSession | None
    metrics_loopback_only: bool = False
    started_at: float = 0.0
    lockers: LockerService | None = None
    locker_staff: LockerStaff | None = None
    scan_links: ScanLinkService | None = None
    # Where scan links are published ({public_base_url}/s/{code}) and the locale prices are shown in.
    public_base_url: str = "http://127.0.0.1:8080"
    price_locale: str = "zh_CN"
    # The kiosks' JSON API and live stream (/kiosk/{id}/api, docs/kiosk-api.md); None without [[kiosks]].
    kiosk_api: KioskApi | None = None
    # The technician web UI: accounts, sessions, and the agent's parts its pages show and drive.
    users: WebUsers | None = None
    sessions: WebSessions | None = None
    admin: AdminServices | None = None
    https_port: int | None = None
    # Every configured device link that is not working, with why (StoreHealth.link_problems): in /healthz.
    device_problems: Callable[[], list[dict[str, str]]] | None = None
    # The wall clock's state (AgentClock.describe): a clock not trusted is a problem in /healthz.
    clock: Callable[[], dict[str, Any]] | None = None


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(title="Store Edge Agent", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_validation_errors(app)
    # Scan links first: the router tries routes in order, and every phone that scans a shelf tag's QR code
    # comes here (the hot path, bench.kiosk); behind the admin routes each scan paid for ~30 failed matches.
    # No other route shares the /s prefix, so the order changes nothing else.
    if ctx.scan_links is not None:
        scan_router = scan_links_router(
            ctx.scan_links, ctx.metrics, price_locale=ctx.price_locale, public_base_url=ctx.public_base_url
        )
        app.include_router(scan_router)
    if ctx.users is not None and ctx.sessions is not None:
        install_auth(app, WebAuth(ctx.users, ctx.sessions, https_port=ctx.https_port))
        app.include_router(auth_router(ctx.users, ctx.sessions))
        app.include_router(users_router(ctx.users, ctx.sessions))
        app.include_router(admin_pages_router(ctx.store_id, ctx.users))

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require(Role.TECHNICIAN))])
        def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        app.include_router(api_docs_router())

    def health_body() -> dict[str, Any]:
        stats = ctx.outbox.stats()
        oldest_age = None if stats.oldest_ms is None else round(time.time() - stats.oldest_ms / 1000.0, 3)
        connected = ctx.session.connected if ctx.session is not None else False
        problems = []
        if ctx.outbox.alarm_active:
            problems.append("outbox full")
        if not connected and oldest_age is not None and oldest_age > STALE_OUTBOX_S:
            problems.append("cloud unreachable with events waiting")
        devices = ctx.device_problems() if ctx.device_problems is not None else []
        problems += [f"{d['device'].replace('_', ' ')} {d['name']}: {d['reason']}" for d in devices]
        clock = ctx.clock() if ctx.clock is not None else None
        if clock is not None and clock["state"] != "ok":
            problems.append(f"wall clock {clock['state']}: {clock['reason']} (pickup holds do not expire meanwhile)")
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "store_id": ctx.store_id,
            "version": __version__,
            "boot": ctx.outbox.boot,
            "uptime_s": round(time.monotonic() - ctx.started_at, 1),
            "cloud": {
                "connected": connected,
                "protocol": ctx.session.protocol_in_use.value
                if ctx.session is not None and ctx.session.protocol_in_use
                else None,
                "last_ack_ms": ctx.session.last_ack_ms if ctx.session is not None else None,
            },
            "devices": devices,
            "clock": clock,
            "outbox": {
                "depth": stats.events,
                "bytes": stats.bytes,
                "oldest_age_s": oldest_age,
                "last_seq": stats.last_seq,
            },
        }
        return body

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        # The process is alive and serving either way: degraded is information, not failure.
        return JSONResponse(health_body())

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        if ctx.metrics_loopback_only and not is_loopback(request.client.host if request.client else None):
            return PlainTextResponse("metrics are served to loopback clients only\n", status_code=403)
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if ctx.lockers is not None:
        app.include_router(locker_router(ctx.lockers))
        app.include_router(locker_screen_router(ctx.lockers))
        if ctx.locker_staff is not None:
            app.include_router(locker_staff_router(ctx.lockers, ctx.locker_staff))
    if ctx.kiosk_api is not None:
        app.include_router(kiosk_api_router(ctx.kiosk_api))
        app.include_router(kiosk_screen_router(ctx.kiosk_api.hub))
    if ctx.admin is not None and ctx.users is not None and ctx.admin.live is not None:
        app.include_router(dashboard_router(ctx.admin.live))
    if ctx.admin is not None and ctx.users is not None:
        # Configuration, events and audit, the diagnostics bundle.
        app.include_router(config_router(ctx.admin))
        app.include_router(events_router(ctx.outbox, ctx.admin.audit, ctx.admin.bus, db_path=ctx.admin.db.path))
        app.include_router(diagnostics_router(ctx.admin, ctx.outbox, ctx.users, health_body, ctx.metrics.registry))
    if ctx.admin is not None and ctx.users is not None:
        app.include_router(devices_router(ctx.admin))
        app.include_router(discovery_router(ctx.admin))
        app.include_router(pairing_router(ctx.admin))
        app.include_router(picking_router(ctx.admin))
        app.include_router(shelves_router(ctx.admin))
    check_route_policy(app.routes)
    if ctx.scan_links is not None:
        # Outermost but one: scans skip the rest of the stack (ScanLinkLane says why).
        app.add_middleware(ScanLinkLane, route=scan_route(scan_router))
    # Last added, so outermost: no body is read past its route's limit, on any route (web/body_limit.py).
    app.add_middleware(BodyLimit, on_refused=lambda path: ctx.metrics.bad_input("web", "body_too_large"))
    return app
