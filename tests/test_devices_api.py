"""The devices JSON API (/api/devices/...) against a running agent: the base-station emulator and the Kerong
lock-board emulator on real ptys, a real in-store broker with a simulated Wi-Fi scanner, real sessions."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from devices.simulators.mqtt_device import SimulatedScanner
from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.kerong import Action, Person
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.web import signed_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
PICKUP_CODE = "58204719"



def error_of(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    detail = body.get("detail", body)
    return str(detail["error"]) if isinstance(detail, dict) else "validation"


async def test_base_stations_and_tags(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(3, seed=5), checkin_interval=0.5, air_rate=200_000, seed=5)
    port = PtyPort(tmp_path / "bs0")
    config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}])
    async with emu.running(port), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 3, timeout=20)
        tags = sorted(t.hex() for t in emu.tags)
        await agent.catalog.upsert(
            [Product.model_validate({"sku": "milk-1", "name": "有机纯牛奶 250ml", "price": "12.80", "currency": "CNY"})]
        )
        await agent.catalog.pair_tags([(tags[0], "milk-1")])
        await wait_until(lambda: labels.progress()["confirmed"] == 1, timeout=60)
        async with signed_in(agent, "tech", Role.TECHNICIAN) as tech, signed_in(agent, "desk", Role.STAFF) as staff:
            stations = (await tech.get("/api/devices/base-stations")).json()
            [bs] = stations["base_stations"]
            assert bs["name"] == "bs1" and bs["connected"] is True and bs["tags"] == 3 and bs["kind"] == "serial"
            assert bs["link"]["frames_sent"] > 0 and bs["link"]["frames_received"] > 0
            assert {"retransmits", "crc_errors", "peer_resets", "queue_bulk"} <= set(bs["link"])
            assert (await staff.get("/api/devices/base-stations")).status_code == 403

            page = (await tech.get("/api/devices/tags", params={"limit": 2})).json()
            assert page["total"] == 3 and [t["tag_id"] for t in page["tags"]] == tags[:2]
            second = (await tech.get("/api/devices/tags", params={"limit": 2, "offset": 2})).json()
            assert [t["tag_id"] for t in second["tags"]] == tags[2:]
            found = (await tech.get("/api/devices/tags", params={"q": "牛奶"})).json()
            assert [t["tag_id"] for t in found["tags"]] == [tags[0]]
            assert found["tags"][0]["product"] == {"sku": "milk-1", "name": "有机纯牛奶 250ml"}
            assert (await tech.get("/api/devices/tags", params={"paired": "false"})).json()["total"] == 2
            assert (await tech.get("/api/devices/tags", params={"station": "bs9"})).json()["total"] == 0
            assert (await tech.get("/api/devices/tags", params={"q": "%_"})).json()["total"] == 0
            assert (await tech.get("/api/devices/tags", params={"limit": 0})).status_code == 422

            detail = (await tech.get(f"/api/devices/tags/{tags[0]}")).json()
            assert detail["battery_mv"] is not None and detail["rssi"] is not None and detail["last_seen_ms"]
            assert detail["type"] and detail["size"]["width"] > 0 and detail["job"] is None
            assert detail["scan_url"].endswith("/s/" + detail["scan_code"])
            png = await tech.get(f"/api/devices/tags/{tags[0]}/preview.png")
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content.startswith(b"\x89PNG")
            assert (await tech.get(f"/api/devices/tags/{tags[1]}/preview.png")).status_code == 404
            assert (await tech.get(f"/api/devices/tags/{tags[0]}/preview.png?picture=pending")).status_code == 404

            # Find it: the LED flash reaches the emulated tag.
            flashed = await tech.post(f"/api/devices/tags/{tags[0]}/flash", json={"colour": "red", "count": 3})
            assert flashed.status_code == 200 and flashed.json() == {"tag_id": tags[0], "flashing": True}
            await wait_until(lambda: bytes.fromhex(tags[0]) in emu.led_flashes, timeout=10)
            assert emu.led_flashes[bytes.fromhex(tags[0])][-1].count == 3
            assert (await tech.post(f"/api/devices/tags/{tags[1]}/flash")).status_code == 200
            assert (await staff.post(f"/api/devices/tags/{tags[0]}/flash")).status_code == 403
            assert (await tech.post(f"/api/devices/tags/{tags[0]}/flash", json={"colour": "pink"})).status_code == 422
            assert (await tech.post(f"/api/devices/tags/{tags[0]}/flash", json={"x": 1})).status_code == 422
            missing = await tech.post("/api/devices/tags/ffffffffffffffff/flash")
            assert missing.status_code == 404 and error_of(missing) == "unknown_tag"
            assert (await tech.get("/api/devices/tags/not-a-tag")).status_code == 422
            assert (await tech.get("/api/devices/tags/ffffffffffffffff")).status_code == 404

            # Re-send: the tag already shows its picture, so nothing needs to go out.
            resent = (await tech.post(f"/api/devices/tags/{tags[0]}/resend")).json()
            assert resent == {"queued": 0, "unchanged": 1, "unknown": []}
            # Unpair: as tag.pair with sku null.
            unpaired = (await tech.post(f"/api/devices/tags/{tags[0]}/unpair")).json()
            assert unpaired["changed"] == [tags[0]] and unpaired["problems"] == []
            assert (await tech.get(f"/api/devices/tags/{tags[0]}")).json()["product"] is None
            # No CSRF token, no action.
            bare = await tech.post(f"/api/devices/tags/{tags[0]}/flash", headers={"X-CSRF-Token": ""})
            assert bare.status_code == 403


async def test_lockers_test_open_enable_disable_and_no_codes(tmp_path: Path) -> None:
    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    bank = one_board(pty, compartment("A-01", 1, size="S"), compartment("A-02", 2, column=2))
    config = agent_config(tmp_path / "data", None, lockers=bank)
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None and agent.audit is not None
        lockers = agent.lockers
        # The alarm poll reads the doors once the start-up reconciliation is over: from then on a load is safe.
        await wait_until(lambda: len(lockers.door_states()) == 2, timeout=20)
        await lockers.create_pickup("order-5", "M", int(time.time() * 1000) + 86_400_000, PICKUP_CODE)
        emulator.compartments[(0, 2)].person = Person(open_after_s=0.1, hold_s=0.2, action=Action.PLACE)
        await lockers.start_load("order-5", actor="staff-1")
        await wait_until(lambda: (p := lockers.pickup("order-5")) is not None and p.state == "ready", timeout=20)
        async with signed_in(agent, "tech", Role.TECHNICIAN) as tech, signed_in(agent, "desk", Role.STAFF) as staff:
            async def snapshot() -> dict[str, Any]:
                answer = await staff.get("/api/devices/lockers")
                assert answer.status_code == 200
                assert PICKUP_CODE not in answer.text
                return dict(answer.json())

            state = await snapshot()
            by_id = {c["id"]: c for c in state["banks"][0]["compartments"]}
            assert by_id["A-01"]["door"] == "closed" and by_id["A-01"]["pickup"] is None
            assert by_id["A-02"]["pickup"]["state"] == "ready" and by_id["A-02"]["item"] is True
            assert state["boards"][0]["board_id"] == "kerong-0" and state["boards"][0]["connected"] is True

            # Staff may look, not test-open or take out of service.
            refused = await staff.post("/api/devices/lockers/compartments/A-01/test-open", json={"reason": "x"})
            assert refused.status_code == 403
            assert (await staff.post("/api/devices/lockers/compartments/A-01/disable",
                                     json={"reason": "x"})).status_code == 403
            # A reason is required; unknown compartments are 404.
            path = "/api/devices/lockers/compartments/A-01/test-open"
            assert (await tech.post(path, json={})).status_code == 422
            assert (await tech.post(path, json={"reason": ""})).status_code == 422
            assert (await tech.post(path, json={"reason": "a\nb"})).status_code == 422
            assert (await tech.post(path, json={"reason": "ok", "extra": 1})).status_code == 422
            missing = await tech.post("/api/devices/lockers/compartments/Z-99/test-open", json={"reason": "check"})
            assert missing.status_code == 404 and error_of(missing) == "unknown_compartment"
            assert emulator.unlock_count(0, 1) == 0

            opened = await tech.post(path, json={"reason": "new hinge, check 检查"})
            assert opened.status_code == 200, opened.text
            assert opened.json()["result"] == "opened" and opened.json()["compartment"] == "A-01"
            assert emulator.unlock_count(0, 1) == 1
            record = agent.audit.records(limit=1000)[-1]
            assert record.kind == "test" and record.compartment == "A-01" and record.actor == "web:tech"
            assert record.detail["reason"] == "new hinge, check 检查" and record.detail["result"] == "opened"
            assert agent.audit.verify().ok
            # The door counts as commanded: no door_forced alarm while it stands open.
            await asyncio.sleep(1.0)
            assert not [a for a in (await snapshot())["alarms"] if a["kind"] == "door_forced"]
            emulator.close_door(0, 1)

            disabled = await tech.post("/api/devices/lockers/compartments/A-01/disable", json={"reason": "broken"})
            assert disabled.json() == {"compartment": "A-01", "enabled": False, "oos_reason": "broken"}
            alarms = (await snapshot())["alarms"]
            assert {"kind": "out_of_service", "compartment": "A-01"}.items() <= alarms[0].items()
            assert (await tech.post("/api/devices/lockers/compartments/A-01/disable", json={})).status_code == 422
            enabled = await tech.post("/api/devices/lockers/compartments/A-01/enable")
            assert enabled.json()["enabled"] is True
            assert (await tech.post("/api/devices/lockers/compartments/Z-9/enable")).status_code == 404


async def test_kiosks_mqtt_devices_and_gpio(tmp_path: Path, local_broker: Broker) -> None:
    config = agent_config(
        tmp_path / "data", None, local_broker, kiosks=[{"id": "k1", "name": "Entrance"}],
        local_broker={"state_coalesce_s": 0.1, "allowed_devices": ["sim-scanner"]},
    )
    stop = threading.Event()
    sim = SimulatedScanner(local_broker.host, local_broker.port, "store/v1", "sim-scanner", kiosk_id="k1")
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        gateway = agent.gateway
        await wait_until(lambda: gateway.connected, timeout=10)
        runner = asyncio.create_task(asyncio.to_thread(sim.run, interval=30, count=0, bad_every=0, stop=stop))
        try:
            await wait_until(lambda: (r := gateway.registry.get("sim-scanner")) is not None and r.online, timeout=10)
            async with signed_in(agent, "tech", Role.TECHNICIAN) as tech:
                listing = (await tech.get("/api/devices/kiosks")).json()
                assert listing["kiosks"][0]["id"] == "k1" and listing["kiosks"][0]["online"] is False
                assert listing["kiosks"][0]["devices"] == ["sim-scanner"]
                [device] = listing["devices"]
                assert device["device_id"] == "sim-scanner" and device["online"] is True and device["adopted"]
                assert device["kind"] == "scanner" and listing["broker"] == {"connected": True}

                assert (await tech.post("/api/devices/kiosks/k1/reload")).json()["sent"] is True
                said = await tech.post("/api/devices/kiosks/k1/message", json={"text": "欢迎光临"})
                assert said.status_code == 200
                assert (await tech.post("/api/devices/kiosks/k9/reload")).status_code == 404
                assert (await tech.post("/api/devices/kiosks/k1/message", json={"text": ""})).status_code == 422

                shown = await tech.post("/api/devices/mqtt/sim-scanner/message", json={"text": "Hi", "seconds": 5})
                assert shown.json() == {"device_id": "sim-scanner", "sent": True}
                assert (await tech.post("/api/devices/mqtt/sim-scanner/reload")).status_code == 200
                await wait_until(lambda: len(sim.commands) == 2, timeout=10)
                assert sim.commands == [{"command": "show_message", "text": "Hi", "seconds": 5},
                                        {"command": "reload"}]
                unknown = await tech.post("/api/devices/mqtt/nobody/reboot")
                assert unknown.status_code == 404 and error_of(unknown) == "unknown_device"
                bad = await tech.post("/api/devices/mqtt/sim-scanner/message", json={"text": "a\u0007"})
                assert bad.status_code == 422
                assert (await tech.post("/api/devices/mqtt/bad id!/reboot")).status_code in (404, 422)
                gpio = (await tech.get("/api/devices/gpio")).json()
                assert gpio == {"boards": [], "alarm_signals": []}
                lockers = (await tech.get("/api/devices/lockers")).json()
                assert lockers["enabled"] is False
        finally:
            stop.set()
            await runner


async def test_gpio_pins_and_a_gpio_test_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    factory = MockFactory()
    previous, Device.pin_factory = Device.pin_factory, factory
    config = agent_config(
        tmp_path / "data", None,
        lockers={
            "enabled": True, "alarm_led_pin": 13, "alarm_buzzer_pin": 19,
            "gpio_boards": [{"id": "gpio-0", "pulse_s": 0.1, "confirm_s": 0.5,
                             "locks": [{"lock_pin": 17, "door_pin": 27, "item_pin": 22}, {"lock_pin": 23, "door_pin": 24}]}],
            "compartments": [{"id": "G-01", "bank": "G", "board": "gpio-0", "lock": 1, "size": "M", "row": 1, "column": 1}],
        },
    )
    try:
        async with running_agent(config, env=KEY_ENV) as agent, signed_in(agent, "tech", Role.TECHNICIAN) as tech:
            factory.pin(27).drive_low()  # the door switch pulls low: closed
            for _ in range(100):  # until the alarm poll saw the door closed (it read it open at start)
                gpio = (await tech.get("/api/devices/gpio")).json()
                if not gpio["alarm_signals"][0]["alarm_on"]:
                    break
                await asyncio.sleep(0.05)
            [board] = gpio["boards"]
            assert board["board_id"] == "gpio-0"
            assert board["locks"][0] == {"lock": 1, "released": False, "door_closed": True, "item": False,
                                         "lock_pin": 17, "door_pin": 27, "item_pin": 22}
            assert board["locks"][1]["item_pin"] is None and board["locks"][1]["item"] is None
            assert gpio["alarm_signals"] == [{"led_pin": 13, "buzzer_pin": 19, "alarm_on": False, "led": False,
                                              "buzzer": False}]
            state = (await tech.get("/api/devices/lockers")).json()
            assert state["boards"][0]["kind"] == "gpio" and state["boards"][0]["locks"] == 2
            # A test-open of a GPIO lock pulses its relay; nobody pushes the door, so it did not open.
            opened = await tech.post("/api/devices/lockers/compartments/G-01/test-open", json={"reason": "relay check"})
            assert opened.status_code == 200 and opened.json()["result"] == "not_opened"
            assert [h[1] for h in factory.pin(17).states if h[1]] == [True], "the relay pulsed once"
    finally:
        factory.reset()
        Device.pin_factory = previous
