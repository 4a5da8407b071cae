"""Pickup lockers through the running agent: cloud command, load, collect with the code, events and audit
records on a real cloud broker; the Kerong emulator on a real pty plays the boards and the people."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from edge_agent.services.lockers import CollectStatus
from firmware_bridge.emulators.kerong import Action, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.proxy import FaultProxy
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"
KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}


async def test_create_load_collect_through_the_agent(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    bank = one_board(pty, compartment("A-01", 1, size="S"), compartment("A-02", 2, column=2), door_open_alarm_s=30)
    config = agent_config(tmp_path / "data", cloud_broker, lockers=bank)
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None
        lockers = agent.lockers
        subscriber.publish(COMMANDS, json.dumps({"command_id": "p1", "type": "pickup.create",
                                                 "payload": {"order_id": "order-77", "size": "M"}}))
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "command.result")
        await wait_until(lambda: lockers.pickup("order-77") is not None, timeout=10)
        # Staff loads: the person opens the door, puts the parcel in and closes it.
        emulator.compartments[(0, 2)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.PLACE)
        await lockers.start_load("order-77", actor="staff-1")
        ready = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        code = ready[0]["payload"]["code"]
        assert ready[0]["payload"]["compartment"] == "A-02" and len(code) >= 8
        # The customer types the code; the door opens, the parcel is taken, the door closes.
        emulator.compartments[(0, 2)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)
        result = await lockers.collect("screen-A", code)
        assert result.status is CollectStatus.OK
        assert result.compartment == "A-02" and "first row from the top" in result.message
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.collected")
        audits = await asyncio.to_thread(subscriber.wait_events, 2, 20, "audit.door_opened")
        assert [a["payload"]["kind"] for a in audits] == ["staff", "code"]
        # The code is dead now.
        again = await lockers.collect("screen-A", code)
        assert again.status is CollectStatus.WRONG
        assert emulator.unlock_count(0, 2) == 2


async def test_the_locker_screen_api_opens_a_door_and_throttles(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    import httpx

    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    config = agent_config(tmp_path / "data", cloud_broker, lockers=one_board(pty, compartment("A-05", 5, row=2, column=3)))
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None
        lockers = agent.lockers
        await lockers.create_pickup("order-9", "M", int(time.time() * 1000) + 86_400_000)
        emulator.compartments[(0, 5)].person = Person(open_after_s=0.1, hold_s=0.2, action=Action.PLACE)
        await lockers.start_load("order-9", actor="staff-1")
        ready = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        code = ready[0]["payload"]["code"]
        base = f"http://127.0.0.1:{agent.web_port}/locker/A/api"
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.post(f"http://127.0.0.1:{agent.web_port}/locker/Z/api/collect",
                                      json={"code": code})).status_code == 404
            assert (await client.post(f"{base}/collect", json={"nope": 1})).status_code == 422
            # Ten wrong codes, then the screen is locked out, even for the right code.
            wrong = [await client.post(f"{base}/collect", json={"code": f"{n:08d}"}) for n in range(10)]
            assert all(r.status_code == 200 and r.json()["status"] == "wrong" for r in wrong)
            assert len({r.json()["message"] for r in wrong}) == 1
            locked = await client.post(f"{base}/collect", json={"code": code})
            assert locked.status_code == 429 and locked.json()["seconds_left"] > 0
            assert "Retry-After" in locked.headers
            assert (await client.get(f"{base}/status")).json()["locked_out"] is True
            assert emulator.unlock_count(0, 5) == 1, "no door opened while locked out"


def _bank_a(pty: Path, locks: int = 3) -> dict[str, object]:
    return one_board(pty, *(compartment(f"A-{n:02d}", n, column=n) for n in range(1, locks + 1)))


async def test_collect_while_the_cloud_is_down_then_the_queue_drains(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    import httpx

    emulator = LockBoardEmulator(1)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TOGGLE)
    pty = tmp_path / "lockers0"
    # The store reaches the cloud through a proxy we can cut; the test's subscriber stays on the broker.
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port).start()
    config = agent_config(tmp_path / "data", cloud_broker, cloud={"port": proxy.port}, lockers=_bank_a(pty))
    try:
        async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
            assert agent.lockers is not None and agent.session is not None and agent.outbox is not None
            lockers = agent.lockers
            await lockers.create_pickup("order-offline", "M", int(time.time() * 1000) + 86_400_000, "58204719")
            await lockers.start_load("order-offline", actor="staff:1001")
            await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
            await proxy.stop()
            await wait_until(lambda: not agent.session.connected, timeout=10)
            # The internet is gone: the code is still checked locally, the door opens, the parcel is taken.
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(f"http://127.0.0.1:{agent.web_port}/locker/A/api/collect",
                                           json={"code": "58204719"})
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
            await wait_until(lambda: (p := lockers.pickup("order-offline")) is not None and p.state == "collected")
            # pickup.collected (published right after the state is stored) and audit.door_opened wait on disk.
            await wait_until(lambda: agent.outbox is not None and agent.outbox.stats().events >= 2)
            assert [e for e in subscriber.events() if e["type"] == "pickup.collected"] == []
            await proxy.start()
            await wait_until(lambda: agent.outbox.stats().events == 0, timeout=30)
            collected = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.collected")
            audits = await asyncio.to_thread(subscriber.wait_events, 2, 20, "audit.door_opened")
    finally:
        await proxy.stop()
    assert collected[0]["payload"] == {"order_id": "order-offline", "compartment": "A-01"}
    assert [a["payload"]["kind"] for a in audits] == ["staff", "code"]
    assert emulator.unlock_count(0, 1) == 2


async def test_cancel_retrieval_and_expiry_through_the_agent(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emulator = LockBoardEmulator(1)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TOGGLE)
    pty = tmp_path / "lockers0"
    config = agent_config(tmp_path / "data", cloud_broker, lockers=_bank_a(pty))
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None
        lockers = agent.lockers
        now = int(time.time() * 1000)
        for order in ("order-c", "order-e"):
            await lockers.create_pickup(order, "M", now + 3 * 86_400_000)
            await lockers.start_load(order, actor="staff:1001")
            await wait_until(lambda o=order: (p := lockers.pickup(o)) is not None and p.state == "ready")
        # The cloud cancels a loaded order: the code dies, staff take the parcel out.
        subscriber.publish(COMMANDS, json.dumps({"command_id": "c1", "type": "pickup.cancel",
                                                 "payload": {"order_id": "order-c"}}))
        cancelled = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.cancelled")
        assert cancelled[0]["payload"]["retrieval"] is True
        await lockers.start_retrieval("order-c", actor="staff:1001")
        retrieved = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.retrieved")
        assert retrieved[0]["payload"]["order_id"] == "order-c"
        # The other one: a reminder a day before its hold ends, then expired and waiting for staff.
        await lockers.tick(now + 2 * 86_400_000 + 1000)
        reminders = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.reminder")
        assert reminders[0]["payload"]["order_id"] == "order-e"
        await lockers.tick(now + 3 * 86_400_000 + 1000)
        expired = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.expired")
        assert expired[0]["payload"] == {"order_id": "order-e", "compartment": "A-02",
                                         "hold_until": now + 3 * 86_400_000, "retrieval": True}
        assert [p.order_id for p in lockers.retrievals("A")] == ["order-e"]
        audits = await asyncio.to_thread(subscriber.wait_events, 3, 20, "audit.door_opened")
    assert [a["payload"]["compartment"] for a in audits] == ["A-01", "A-02", "A-01"]
