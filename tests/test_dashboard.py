"""The dashboard through the running agent: GET /api/dashboard against what is really there (a cloud Mosquitto,
an in-store Mosquitto with a Wi-Fi device, a Kerong lock board emulated on a pty, kiosks, tags in SQLite), the
live stream (/api/live) delivering a device change within a second, sign-in required, and the page updating
in the system Chromium without a reload.

With EDGE_SCREENSHOTS=1 the browser test also saves docs/screenshots/ui-dashboard.png (1280x800)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser

from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from edge_agent.services.store_health import LiveHub, StoreHealth, stable
from edge_agent.services.web_users import Role
from edge_agent.storage import Database
from edge_agent.web import dashboard_api
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.browser import chromium
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.mqtt_device import HANDHELD, MqttDevice
from tests.support.web import PASSWORD, signed_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "ui-dashboard.png"


def store_config(tmp_path: Path, cloud: Broker, local: Broker, compartments: int = 4, **more: Any) -> Any:
    bank = one_board(
        tmp_path / "lockers0",
        *(compartment(f"A-{i:02d}", i, column=i) for i in range(1, compartments + 1)),
    )
    return agent_config(
        tmp_path / "data", cloud, local, lockers=bank,
        kiosks=[{"id": "k1", "name": "Entrance"}, {"id": "k2", "name": "Back"}], **more,
    )


async def add_tags(agent: Agent, total: int, paired: int, offline: int) -> None:
    """Tags as the registry stores them: `paired` with a product, `offline` not heard from for two hours."""
    assert agent.db is not None and agent.catalog is not None
    await agent.catalog.upsert([Product.model_validate({"sku": "TEA", "name": "东方树叶 茉莉花茶 500ml",
                                                        "price": "4.50", "currency": "CNY"})])
    now = int(time.time() * 1000)
    rows = [
        (f"{i:016x}", 1, "bs1", "TEA" if i < paired else None, f"code{i:06d}",
         now - 7_200_000 if i >= total - offline else now, now)
        for i in range(total)
    ]
    await agent.db.write(lambda c: c.executemany(
        "INSERT INTO tags(tag_id, type_code, base_station, sku, scan_code, last_seen_ms, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows))


def staff_snapshot_boards(agent: Agent) -> list[dict[str, Any]]:
    """The snapshot's lock boards as the API computes them (synchronously, for wait_until)."""
    assert agent.live_hub is not None
    boards: list[dict[str, Any]] = agent.live_hub.health.snapshot()["lock_boards"]
    return boards


class LiveReader:
    """One /api/live stream read in the background: (arrival time, event, data) in order."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.status: int | None = None
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LiveReader]:
        self._task = asyncio.create_task(self._read())
        try:
            await wait_until(lambda: any(e == "dashboard" for _, e, _ in self.events), timeout=10)
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        async with self.client.stream("GET", "/api/live") as response:
            self.status = response.status_code
            event = "message"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.append((time.monotonic(), event, json.loads(line[6:])))
                    event = "message"

    @property
    def ended(self) -> bool:
        """The server ended the stream (the read finished by itself)."""
        return self._task is not None and self._task.done() and not self._task.cancelled()

    def first(self, event: str, predicate: Any) -> tuple[float, dict[str, Any]] | None:
        for at, name, data in self.events:
            if name == event and predicate(data):
                return at, data
        return None


async def test_the_snapshot_matches_the_store_and_needs_a_session(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker
) -> None:
    emulator = idle_emulator()
    station = BaseStationEmulator(mixed(3, seed=5), checkin_interval=1.0, air_rate=200_000, seed=5)
    config = store_config(tmp_path, cloud_broker, local_broker,
                          base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}])
    async with (
        emulator.running(PtyPort(tmp_path / "lockers0")),
        station.running(PtyPort(tmp_path / "bs0")),
        running_agent(config, env=KEY_ENV) as agent,
    ):
        assert agent.labels is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 3, 20)  # the station's own tags, discovered
        base = f"http://127.0.0.1:{agent.web_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
            for path in ("/api/dashboard", "/api/live"):
                assert (await anonymous.get(path)).status_code == 401
        await add_tags(agent, total=30, paired=12, offline=5)
        async with signed_in(agent, "staff1", Role.STAFF) as staff:
            assert agent.lockers is not None
            await wait_until(lambda: all(r is not None for r in agent.lockers.board_readings().values()), 10)
            snap = (await staff.get("/api/dashboard")).json()
            assert snap["cloud"]["connected"] is True and snap["cloud"]["protocol"] is not None
            assert agent.outbox is not None
            assert snap["cloud"]["outbox"]["depth"] == agent.outbox.stats().events
            # 30 added (12 paired, 5 silent for two hours); the station's 3 are discovered, not adopted yet.
            assert snap["tags"] == {"total": 30, "paired": 12, "unpaired": 18, "offline": 5, "discovered": 3}
            (bs1,) = snap["base_stations"]
            assert bs1["name"] == "bs1" and bs1["connected"] is True and bs1["tags"] == 30
            assert bs1["link"]["frames_received"] > 0 and bs1["link"]["crc_errors"] == 0
            assert snap["lock_boards"] == [
                {"id": "kerong-0", "bus": "rs485", "locks": 16, "reachable": True,
                 "reading_age_s": snap["lock_boards"][0]["reading_age_s"]}
            ]
            assert snap["compartments"] == {"total": 4, "enabled": 4, "open": 0, "occupied": 0}
            assert [(k["id"], k["name"], k["online"]) for k in snap["kiosks"]] == [
                ("k1", "Entrance", False), ("k2", "Back", False)]
            assert snap["mqtt_devices"]["broker_connected"] is True and snap["alarms"] == []
            # Staff disable a door: an out-of-service alarm, and one fewer door in service.
            await agent.lockers.set_in_service("A-02", False, "broken hinge")
            snap = (await staff.get("/api/dashboard")).json()
            assert snap["alarms"] == [{"kind": "out_of_service", "compartment": "A-02", "since_ms": None,
                                       "message": "Door A-02 is out of service (broken hinge)."}]
            assert snap["compartments"]["enabled"] == 3
            # A parcel in A-03 and its door opened by hand (no command): item and door state, a forced-door alarm.
            forced = emulator.compartments[(0, 3)]
            forced.item, forced.latched, forced.door_open = True, False, True
            await wait_until(lambda: any(a.kind == "door_forced" for a in agent.lockers.open_alarms()), 10)
            snap = (await staff.get("/api/dashboard")).json()
            assert snap["compartments"]["open"] == 1 and snap["compartments"]["occupied"] == 1
            assert {a["kind"] for a in snap["alarms"]} == {"out_of_service", "door_forced"}
            # The board's line goes dead (every byte dropped): within a few seconds it is not answering...
            emulator.set_line_faults(0.0, 1.0)
            await wait_until(lambda: (staff_snapshot_boards(agent))[0]["reachable"] is False, 8)
            # ... and answers again once the line is back.
            emulator.set_line_faults(0.0, 0.0)
            await wait_until(lambda: (staff_snapshot_boards(agent))[0]["reachable"] is True, 8)
            assert (await staff.get("/api/dashboard")).json()["lock_boards"][0]["reachable"] is True
        # A technician and an admin can read it too (roles rank up); the route is in the OpenAPI document.
        async with signed_in(agent, "admin1", Role.ADMIN) as admin:
            assert (await admin.get("/api/dashboard")).status_code == 200
            assert "/api/dashboard" in (await admin.get("/openapi.json")).json()["paths"]


async def test_the_live_stream_tells_device_changes_within_a_second(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = idle_emulator()
    async with (
        emulator.running(PtyPort(tmp_path / "lockers0")),
        running_agent(store_config(tmp_path, cloud_broker, local_broker), env=KEY_ENV) as agent,
    ):
        assert agent.lockers is not None and agent.gateway is not None
        monkeypatch.setattr(dashboard_api, "SESSION_CHECK_S", 0.5)
        device = MqttDevice(local_broker, "scanner-7").start()
        try:
            async with signed_in(agent, "staff1", Role.STAFF) as staff, LiveReader(staff).running() as live:
                assert live.status == 200
                first = live.events[0][2]
                assert [k["id"] for k in first["kiosks"]] == ["k1", "k2"]
                # A Wi-Fi scanner comes online: a device event within a second of its message.
                sent = time.monotonic()
                await asyncio.to_thread(device.come_online, HANDHELD)
                await wait_until(lambda: live.first("device", lambda d: d["id"] == "scanner-7" and
                                                    d["state"]["online"] is True) is not None, 5)
                got = live.first("device", lambda d: d["id"] == "scanner-7")
                assert got is not None and got[1]["kind"] == "mqtt" and got[0] - sent < 1.0
                # ... and the next snapshot lists it.
                await wait_until(lambda: live.first("dashboard", lambda d: any(
                    m["id"] == "scanner-7" and m["online"] for m in d["mqtt_devices"]["devices"])) is not None, 3)
                # A door taken out of service: compartment and alarm events at once.
                sent = time.monotonic()
                await agent.lockers.set_in_service("A-01", False, "staff")
                await wait_until(lambda: live.first("alarm", lambda d: d["id"] == "out_of_service:A-01") is not None, 3)
                alarm = live.first("alarm", lambda d: d["id"] == "out_of_service:A-01")
                door = live.first("compartment", lambda d: d["id"] == "A-01" and d["state"]["enabled"] is False)
                assert alarm is not None and door is not None and alarm[0] - sent < 1.0
                assert alarm[1]["state"]["compartment"] == "A-01"
                # Back in service: the alarm ends (its state is null).
                await agent.lockers.set_in_service("A-01", True)
                await wait_until(lambda: live.first("alarm", lambda d: d["id"] == "out_of_service:A-01" and
                                                    d["state"] is None) is not None, 3)
                # A kiosk page opens its own stream: the kiosk goes online.
                async with httpx.AsyncClient(base_url=str(staff.base_url), timeout=10) as kiosk, \
                        kiosk.stream("GET", "/kiosk/k2/api/live"):
                    await wait_until(lambda: live.first("device", lambda d: d["id"] == "k2" and
                                                        d["state"]["online"]) is not None, 3)
                assert agent.live_hub is not None and agent.live_hub.clients == 1
                # Signing out ends the open stream (checked every SESSION_CHECK_S, shortened below).
                assert (await staff.post("/api/auth/logout")).status_code == 200
                await wait_until(lambda: live.ended, 5)
                await wait_until(lambda: agent.live_hub is not None and agent.live_hub.clients == 0, 3)
        finally:
            device.stop()
    # The agent stopped with the stream open: the stream ended, the agent did not hang (running_agent waits).


async def realistic_extras(agent: Agent, local_broker: Broker, stack: contextlib.AsyncExitStack) -> None:
    """What a store in business has on top: a kiosk page open, more handhelds (one not adopted), tag updates
    under way."""
    assert agent.db is not None
    kiosk = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}"))
    await stack.enter_async_context(kiosk.stream("GET", "/kiosk/k1/api/live"))
    for name in ("scanner-entrance", "tablet-pickup"):
        extra = MqttDevice(local_broker, name).start()
        stack.callback(extra.stop)
        await asyncio.to_thread(extra.come_online, HANDHELD)
    now = int(time.time() * 1000)
    states = ["confirmed"] * 7 + ["queued", "sending", "failed"]
    await agent.db.write(lambda c: c.executemany(
        "INSERT OR IGNORE INTO tag_jobs(tag_id, state, priority, reason, target_hash, created_ms, updated_ms) "
        "VALUES (?, ?, 1, 'price', ?, ?, ?)",
        [(f"{i:016x}", states[i % len(states)], f"{i:064x}", now, now) for i in range(0, 1240, 3)]))


async def test_the_dashboard_page_updates_live_in_chromium(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker
) -> None:
    emulator = idle_emulator()
    screenshots = os.environ.get("EDGE_SCREENSHOTS") == "1"
    # For the screenshot only (EDGE_SCREENSHOTS=1): a base station too, so every card has something to show.
    more: dict[str, Any] = {"base_stations": [{"name": "bs1", "url": str(tmp_path / "bs0")}]} if screenshots else {}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(emulator.running(PtyPort(tmp_path / "lockers0")))
        if screenshots:
            station = BaseStationEmulator(mixed(8, seed=3), checkin_interval=1.0, air_rate=200_000, seed=3)
            await stack.enter_async_context(station.running(PtyPort(tmp_path / "bs0")))
        agent = await stack.enter_async_context(
            running_agent(store_config(tmp_path, cloud_broker, local_broker, 12, **more), env=KEY_ENV))
        browser = await stack.enter_async_context(chromium())
        await dashboard_page_updates_live(agent, browser, local_broker, screenshots, stack)


async def dashboard_page_updates_live(
    agent: Agent, browser: Browser, local_broker: Broker, screenshots: bool, stack: contextlib.AsyncExitStack
) -> None:
    assert agent.users is not None and agent.lockers is not None
    await agent.users.add("staff1", PASSWORD, Role.STAFF)
    await add_tags(agent, total=1240, paired=1198, offline=17)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    base = f"http://127.0.0.1:{agent.web_port}"
    await page.goto(f"{base}/login")
    await page.fill("input[name=username]", "staff1")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    await page.wait_for_selector("body[data-ready='1'] #dash-mqtt")
    await page.evaluate("window.__marker = 'same page'")
    device = MqttDevice(local_broker, "scanner-7").start()
    try:
        await asyncio.to_thread(device.come_online, HANDHELD)
        await page.wait_for_selector("#dash-mqtt [data-device='scanner-7'] .badge.ok", timeout=5000)
        await agent.lockers.set_in_service("A-04", False, "broken hinge")
        await page.wait_for_selector("#dash-alarms [data-alarm='out_of_service:A-04']", timeout=5000)
        assert await page.evaluate("window.__marker") == "same page"  # updated in place, never reloaded
        # The adopted tags as the database counts them (the screenshot's base station adds discovered ones).
        assert agent.db is not None
        db = agent.db
        total = db.read(lambda c: c.execute("SELECT COUNT(*) FROM tags WHERE adopted != 0").fetchone()[0])
        assert total >= 1240
        deadline = time.monotonic() + 5
        while str(total) not in (await page.inner_text("#dash-tags")).replace(",", "") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            total = db.read(lambda c: c.execute("SELECT COUNT(*) FROM tags WHERE adopted != 0").fetchone()[0])
        assert str(total) in (await page.inner_text("#dash-tags")).replace(",", "")
        # In Chinese, and still live after the page re-rendered itself.
        await page.click("#lang-button")
        await page.wait_for_selector("#dash-cloud h2:text('云端连接')", timeout=5000)
        await agent.lockers.set_in_service("A-04", True)
        await page.wait_for_selector("#dash-alarms .ok-text:text('没有未处理的告警。')", timeout=5000)
        await page.click("#lang-button")
        await page.wait_for_selector("#dash-cloud h2:text('Cloud link')", timeout=5000)
        await agent.lockers.set_in_service("A-04", False, "broken hinge")
        await page.wait_for_selector("#dash-alarms [data-alarm='out_of_service:A-04']", timeout=5000)
        hub = agent.live_hub
        assert hub is not None
        await wait_until(lambda: hub.clients == 1, 5)  # the re-rendered page closed its earlier streams
        if screenshots:
            await realistic_extras(agent, local_broker, stack)
            await page.wait_for_timeout(1500)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=False)
    finally:
        device.stop()


# -- the hub on its own: a real database, no devices ------------------------------------------------------


async def test_the_hub_drops_a_slow_client_and_ends_every_stream_when_closed(tmp_path: Path) -> None:
    db = Database(tmp_path / "data")
    try:
        hub = LiveHub(StoreHealth(db=db, outbox=None, session=None), queue_size=3, max_clients=2)
        slow, quick = hub.subscribe(), hub.subscribe()
        with pytest.raises(OverflowError):
            hub.subscribe()  # a third stream, over max_clients
        for i in range(3):
            hub.broadcast("ping", {"n": i})
            assert await quick.get(0.1) is not None  # this one keeps up
        hub.broadcast("ping", {"n": 3})  # the slow one's fourth frame: over its queue
        assert slow.dropped and slow.closed and hub.clients == 1 and hub.dropped_clients == 1
        assert await slow.get(0.1) is None  # nothing more reaches it; its stream ends
        frame = await quick.get(0.1)
        assert frame == b'event: ping\ndata: {"n":3}\n\n'
        # Close ends the open streams at once (the web server waits for them), and refuses new ones.
        waiting = asyncio.create_task(quick.get(30))
        await asyncio.sleep(0.05)
        hub.close()
        assert await asyncio.wait_for(waiting, 1) is None and quick.closed
        with pytest.raises(OverflowError):
            hub.subscribe()  # none after close
        # The snapshot without devices; clock and ages do not count as a change.
        snap = hub.health.snapshot()
        assert snap["tags"]["total"] == 0 and snap["cloud"]["enabled"] is False and snap["kiosks"] == []
        later = {**snap, "now_ms": snap["now_ms"] + 5000}
        assert stable(later) == stable(snap)
    finally:
        db.close()
