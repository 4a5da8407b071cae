"""Authorisation everywhere (issue 6): a full agent, with every part that mounts a router (lockers on the Kerong
emulator, a base station on its emulator, kiosks, the in-store broker), walked route by route by
`tests/support/route_walk.py`; and an app with a route that has no access policy is never built."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import APIRouter

from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from edge_agent.metrics import AgentMetrics
from edge_agent.services.web_sessions import WebSession, WebSessions
from edge_agent.services.web_users import Role, WebUsers
from edge_agent.storage import Database
from edge_agent.web import app as app_module
from edge_agent.web.app import WebContext, create_app
from edge_agent.web.auth import is_public, require
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent
from tests.support.broker import Broker
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.route_walk import fill_path, walk_routes

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "cd" * 32}
ACCOUNTS = {
    "staff": ("walk-staff", "staff password 1"),
    "technician": ("walk-tech", "technician password 1"),
    "admin": ("walk-admin", "admin password 1"),
}


async def test_every_route_refuses_who_may_not_use_it(tmp_path: Path, local_broker: Broker) -> None:
    lock_emulator = idle_emulator()
    station = BaseStationEmulator(mixed(3, seed=5), checkin_interval=5.0, air_rate=200_000, seed=5)
    config = agent_config(
        tmp_path / "data",
        None,
        local_broker,
        lockers=one_board(tmp_path / "lockers0", compartment("A-01", 1)),
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        kiosks=[{"id": "k1", "name": "Entrance"}],
        local_broker={"adopt": "auto"},
    )
    async with (
        lock_emulator.running(PtyPort(tmp_path / "lockers0")),
        station.running(PtyPort(tmp_path / "bs0")),
        running_agent(config, env=KEY_ENV) as agent,
    ):
        assert agent.users is not None and agent.web_app is not None
        for role, (username, password) in ACCOUNTS.items():
            await agent.users.add(username, password, Role(role))
        base = f"http://127.0.0.1:{agent.web_port}"
        walk = await asyncio.to_thread(walk_routes, base, agent.web_app, ACCOUNTS)
        # The walk notices a guard that does not hold at run time: here the admin check is overridden (as a
        # test or a debugging aid might), so the admin's routes answer anyone; the policy check cannot see it.
        app = agent.web_app
        app.dependency_overrides[require(Role.ADMIN)] = lambda: WebSession("x", "walk-admin", Role.ADMIN, "c", 0, 0)
        try:
            holed = await asyncio.to_thread(walk_routes, base, app, ACCOUNTS)
        finally:
            app.dependency_overrides.clear()
    assert walk.unauthorized == []
    assert "GET /api/users (as anonymous: 200)" in holed.unauthorized
    assert "GET /api/users (as technician: 200)" in holed.unauthorized
    assert any(h.startswith("POST /api/users (as admin without CSRF") for h in holed.unauthorized)
    # It did walk the agent: the admin API, the pages, each device kind's public screens.
    assert walk.checked > 30
    assert "GET /kiosk/{kiosk_id}" in walk.public and "GET /locker/{bank_id}" in walk.public
    assert "GET /healthz" in walk.public


def test_path_parameters_get_plausible_values() -> None:
    assert fill_path("/api/users/{username}") == "/api/users/nobody-here"
    assert fill_path("/kiosk/{kiosk_id}/api/orders/{order_id}") == "/kiosk/k1/api/orders/1"
    assert fill_path("/x/{n:int}/{p:path}") == "/x/1/a/b"
    assert is_public("/kiosk/{kiosk_id}") and not is_public("/api/users")


async def test_an_app_with_an_unguarded_route_is_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(tmp_path / "data")
    try:
        outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1 << 20)
        await outbox.open()
        real_users_router = app_module.users_router
        ctx = WebContext(store_id="s1", outbox=outbox, metrics=AgentMetrics(), session=None,
                         users=WebUsers(db), sessions=WebSessions(db))
        create_app(ctx)  # as shipped: builds

        def with_an_unguarded_route(users: WebUsers, sessions: WebSessions) -> APIRouter:
            router = APIRouter()
            router.include_router(real_users_router(users, sessions))

            @router.post("/api/unguarded")  # no require(...): nobody decided who may call it
            def unguarded() -> dict[str, str]:
                return {"done": "yes"}

            return router

        monkeypatch.setattr(app_module, "users_router", with_an_unguarded_route)
        with pytest.raises(RuntimeError, match=r"routes without an access policy.*POST.*/api/unguarded"):
            create_app(ctx)
    finally:
        db.close()
