"""Pickup shelves through the running agent, in a store with no lock board: labels on the base-station emulator
over a real pty, `pickup.create` and the pickup.* events on a real cloud broker, the staff API and the kiosk's
code entry over HTTP. Load by two scans -> the label shows exactly the slot page -> the code at the kiosk
flashes that label only -> the staff handover -> pickup.collected, the label empty again, audit chain intact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from devices.labels.pages import SlotPage, render_page
from edge_agent.services.pickup_shelves import FLASH_COLOUR, HOLD_FAST_S, format_hold
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.tag_types import tag_type
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber
from tests.support.web import signed_in

COMMANDS = "retail/v1/store-0001/commands"
KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "cd" * 32}


def _shown(emu: BaseStationEmulator, tag: str) -> bytes:
    return emu.tag_picture(bytes.fromhex(tag))


async def test_a_shelf_order_from_load_to_handover(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu = BaseStationEmulator(mixed(4, seed=5), checkin_interval=1.0, air_rate=200_000, seed=5)
    port = PtyPort(tmp_path / "bs0")
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(
        tmp_path / "data",
        cloud_broker,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        labels={"public_base_url": "https://shop.example/store-0001"},
        lockers={"enabled": True},  # pickups and codes, no lock board at all
        kiosks=[{"id": "k1", "name": "Entrance", "lang": "en"}],
    )
    async with emu.running(port), running_agent(config, env=KEY_ENV) as agent:
        assert agent.labels is not None and agent.lockers is not None and agent.shelves is not None
        labels, lockers = agent.labels, agent.lockers
        await wait_until(lambda: len(labels.registry.all()) == 4, timeout=20)
        recs = {t: labels.registry.get(t) for t in tags}

        def page(t: str, p: SlotPage) -> bytes:
            rec = recs[t]
            assert rec is not None
            return render_page(p, tag_type(rec.type_code), rotation=rec.rotation).raw

        async with signed_in(agent, "tech", Role.TECHNICIAN) as tech, signed_in(agent, "anna", Role.STAFF) as staff:
            # Staff may not define shelves; the technician scans three labels in slot order: a tag id, a scan
            # code and a scan-link URL.
            scans = [tags[0], recs[tags[1]].scan_code, f"https://shop.example/store-0001/s/{recs[tags[2]].scan_code}"]  # type: ignore[union-attr]
            body = {"shelf_id": "B", "name": "B", "tags": scans}
            assert (await staff.post("/api/shelves", json=body)).status_code == 403
            answer = await tech.post("/api/shelves", json=body)
            assert answer.status_code == 201, answer.text
            assert [(s["slot_id"], s["tag_id"], s["state"]) for s in answer.json()["slots"]] == [
                ("B-1", tags[0], "empty"), ("B-2", tags[1], "empty"), ("B-3", tags[2], "empty")
            ]
            again = await tech.post("/api/shelves", json={"shelf_id": "C", "name": "C", "tags": [tags[0]]})
            assert again.status_code == 409 and again.json()["detail"]["error"] == "tag_in_use"
            # Empty slots show their empty page, so staff find them.
            for n in range(3):
                await wait_until(lambda n=n: _shown(emu, tags[n]) == page(tags[n], SlotPage("B", str(n + 1))), 30)

            # The cloud creates the order with the customer's name and phone; only the mask is kept.
            subscriber.publish(COMMANDS, json.dumps({"command_id": "p1", "type": "pickup.create", "payload": {
                "order_id": "order-9", "size": "M", "customer_name": "王小明", "customer_phone": "138-0013-1234"}}))
            await wait_until(lambda: lockers.pickup("order-9") is not None, timeout=20)
            stored = agent.db.read(lambda c: c.execute("SELECT customer FROM pickups").fetchall())  # type: ignore[union-attr]
            assert stored == [("王** 1234",)]

            # Loading: the slot's label first, then the order (either order works).
            loaded = await staff.post("/api/shelves/load", json={"order": recs[tags[1]].scan_code, "slot": "order-9"})  # type: ignore[union-attr]
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["slot_id"] == "B-2" and loaded.json()["state"] == "ready"
            ready = (await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready"))[0]["payload"]
            assert ready["slot"] == "B-2" and ready["shelf"] == "B" and "compartment" not in ready
            code = ready["code"]
            pickup = lockers.pickup("order-9")
            assert pickup is not None and pickup.state == "ready"
            expected = SlotPage("B", "2", "order-9", "王** 1234", format_hold(pickup.hold_until_ms))
            await wait_until(lambda: _shown(emu, tags[1]) == page(tags[1], expected), 30)
            # The loaded slot's label is kept in fast check-in, so the customer's code flashes it at once.
            await wait_until(lambda: HOLD_FAST_S in emu.fast_requests.get(bytes.fromhex(tags[1]), []), 10)
            assert emu.tags[bytes.fromhex(tags[1])].always_listening
            taken = await staff.post("/api/shelves/load", json={"order": "order-9", "slot": "B-2"})
            assert taken.status_code == 409 and taken.json()["detail"]["error"] == "not_created"

            # A handover before the customer typed a code is refused.
            early = await staff.post("/api/shelves/handover", json={"code": "order-9"})
            assert early.status_code == 409 and early.json()["detail"]["error"] == "not_released"

            # The customer types the code at the kiosk: slot B-2's label flashes, no other.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.web_port}") as kiosk:
                wrong = await kiosk.post("/kiosk/k1/api/pickup", json={"code": "00000000"})
                assert wrong.status_code == 200 and wrong.json()["status"] == "wrong"
                right = await kiosk.post("/kiosk/k1/api/pickup", json={"code": code})
                assert right.status_code == 200, right.text
                assert right.json()["status"] == "shelf" and right.json()["slot"]["slot_id"] == "B-2"
                assert right.json()["message"].startswith("Shelf B, slot 2 is flashing")
                await wait_until(lambda: bool(emu.led_flashes.get(bytes.fromhex(tags[1]))), 2)
                flash = emu.led_flashes[bytes.fromhex(tags[1])][0]
                assert flash.colour == FLASH_COLOUR and flash.count * flash.period_ms >= 60_000
                assert all(not emu.led_flashes.get(bytes.fromhex(t)) for t in tags if t != tags[1])
                view = (await staff.get("/api/shelves")).json()["shelves"][0]["slots"][1]
                assert view["state"] == "released" and view["released_by"] == "kiosk:k1"
                assert view["customer"] == "王** 1234"

                # The staff scan of the slot's label confirms the handover: the code is dead for good.
                done = await staff.post("/api/shelves/handover", json={"code": tags[1]})
                assert done.status_code == 200, done.text
                assert done.json()["order_id"] == "order-9" and done.json()["state"] == "collected"
                collected = (await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.collected"))[0]
                assert collected["payload"] == {"order_id": "order-9", "slot": "B-2", "shelf": "B"}
                dead = await kiosk.post("/kiosk/k1/api/pickup", json={"code": code})
                assert dead.json()["status"] == "wrong"

            # The label is empty again and its LED told to stop.
            await wait_until(lambda: _shown(emu, tags[1]) == page(tags[1], SlotPage("B", "2")), 30)
            await wait_until(lambda: emu.led_flashes[bytes.fromhex(tags[1])][-1].colour == 0, 30)
            # Release and handover are in the hash chain, and reach the cloud like door openings.
            assert agent.audit is not None and agent.audit.verify().ok
            kinds = [(r.kind, r.compartment, r.actor) for r in agent.audit.records()]
            assert kinds == [("shelf_release", "B-2", "kiosk:k1"), ("shelf_handover", "B-2", "web:anna")]
            audits = await asyncio.to_thread(subscriber.wait_events, 2, 20, "audit.door_opened")
            assert [a["payload"]["kind"] for a in audits] == ["shelf_release", "shelf_handover"]

            # A shelf holding no order can be removed; its labels leave the slot pages.
            removed = await tech.delete("/api/shelves/B")
            assert removed.status_code == 200
            assert (await staff.get("/api/shelves")).json() == {"shelves": []}
