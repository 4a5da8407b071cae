"""Staff and courier sign-in on the locker screen, through the running agent: the HTTP API on the real app,
doors on the Kerong emulator over a real pty, events and audit records on a real cloud broker, courier codes
from cloud commands through the real command intake."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge_agent.runtime import Agent
from edge_agent.services.locker_staff import LockerStaff
from edge_agent.services.lockers import LockerService
from firmware_bridge.emulators.kerong import Action, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"
KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
STAFF, PIN = "1234", "482915"
DAY_MS = 86_400_000


@dataclass
class Rig:
    agent: Agent
    lockers: LockerService
    staff: LockerStaff
    emulator: LockBoardEmulator
    client: httpx.AsyncClient
    root: str

    def url(self, path: str, bank: str = "A") -> str:
        return f"{self.root}/locker/{bank}/api/staff/{path}"

    async def sign_in(self, body: dict[str, Any], bank: str = "A") -> httpx.Response:
        return await self.client.post(self.url("sign-in", bank), json=body)

    async def token(self, body: dict[str, Any] | None = None, bank: str = "A") -> str:
        r = await self.sign_in(body or {"kind": "staff", "staff_number": STAFF, "pin": PIN}, bank)
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    async def post(self, path: str, token: str | None, body: Any = None, bank: str = "A") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return await self.client.post(self.url(path, bank), json=body, headers=headers)

    def place(self, lock: int) -> None:
        """The next person at `lock` opens the door, puts a parcel in and closes it."""
        self.emulator.compartments[(0, lock)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.PLACE)

    def take(self, lock: int) -> None:
        self.emulator.compartments[(0, lock)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, cloud_broker: Broker) -> AsyncIterator[Rig]:
    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    bank = one_board(pty, compartment("A-01", 1, size="S"), compartment("A-02", 2, column=2),
                     compartment("B-01", 3, bank="B"))
    config = agent_config(tmp_path / "data", cloud_broker, lockers=bank)
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV) as agent:
        assert agent.lockers is not None and agent.locker_staff is not None
        await agent.locker_staff.add_staff(STAFF, PIN, "Wang Fang")
        async with httpx.AsyncClient(timeout=15) as client:
            yield Rig(agent, agent.lockers, agent.locker_staff, emulator, client, f"http://127.0.0.1:{agent.web_port}")


def _unlocks(r: Rig) -> int:
    return sum(r.emulator.unlock_count(0, n) for n in range(1, 17))


async def test_staff_sign_in_then_load_opens_one_door_and_reports_ready_with_the_staff_actor(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        await r.lockers.create_pickup("order-1", "S", int(time.time() * 1000) + DAY_MS)
        signed = await r.sign_in({"kind": "staff", "staff_number": STAFF, "pin": PIN})
        assert signed.status_code == 200
        body = signed.json()
        assert body["role"] == "staff" and body["actor"] == f"staff:{STAFF}" and body["idle_s"] == 60
        assert len(body["token"]) >= 43 and signed.headers["cache-control"] == "no-store"
        assert "set-cookie" not in signed.headers  # the token is never a cookie: no CSRF surface
        r.place(1)
        loaded = await r.post("load", body["token"], {"order_id": "order-1"})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["status"] == "ok" and loaded.json()["compartment"] == "A-01"
        assert loaded.json()["message"].startswith("Door 1 is open")
        ready = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        assert ready[0]["payload"]["order_id"] == "order-1" and ready[0]["payload"]["compartment"] == "A-01"
        audits = await asyncio.to_thread(subscriber.wait_events, 1, 20, "audit.door_opened")
        assert [(a["payload"]["kind"], a["payload"]["actor"]) for a in audits] == [("staff", f"staff:{STAFF}")]
        assert r.emulator.unlock_count(0, 1) == 1 and _unlocks(r) == 1
        # Loading it again is refused with the service's reason; nothing opens.
        again = await r.post("load", body["token"], {"order_id": "order-1"})
        assert again.status_code == 409 and again.json() == {
            "status": "error", "message": "order order-1 is ready; only a created order can be loaded"}
        unknown = await r.post("load", body["token"], {"order_id": "no-such-order"})
        assert unknown.status_code == 409 and "no order no-such-order" in unknown.json()["message"]
        assert _unlocks(r) == 1
        # Signed out: the token is dead.
        assert (await r.post("sign-out", body["token"])).json() == {"status": "signed_out"}
        after = await r.post("load", body["token"], {"order_id": "order-1"})
        assert after.status_code == 401
        assert after.json() == {"status": "signed_out", "message": "Please sign in again."}


async def test_a_courier_code_signs_in_once_loads_and_cannot_see_tasks_or_retrieve(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        await r.lockers.create_pickup("order-2", "M", int(time.time() * 1000) + DAY_MS)
        issued = await r.staff.issue_courier_code("sf-courier-7")
        signed = await r.sign_in({"kind": "courier", "code": issued.code})
        assert signed.status_code == 200, signed.text
        assert signed.json()["role"] == "courier" and signed.json()["actor"] == "courier:sf-courier-7"
        token = signed.json()["token"]
        assert (await r.client.get(r.url("tasks"), headers={"Authorization": f"Bearer {token}"})).status_code == 403
        forbidden = await r.post("retrieve", token, {"order_id": "order-2"})
        assert forbidden.status_code == 403 and forbidden.json()["status"] == "forbidden"
        r.place(2)
        loaded = await r.post("load", token, {"order_id": "order-2"})
        assert loaded.status_code == 200 and loaded.json()["compartment"] == "A-02"
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        audits = await asyncio.to_thread(subscriber.wait_events, 1, 20, "audit.door_opened")
        assert audits[0]["payload"]["actor"] == "courier:sf-courier-7"
        # One use only: the same code is refused the second time, with the one answer for every failure.
        second = await r.sign_in({"kind": "courier", "code": issued.code})
        assert second.status_code == 401
        assert second.json() == {"status": "wrong", "message": "Sign-in failed. Please check and try again."}
        assert _unlocks(r) == 1


async def test_staff_see_retrievals_and_take_an_expired_parcel_out(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        await r.lockers.create_pickup("order-3", "M", int(time.time() * 1000) + DAY_MS)
        token = await r.token()
        r.place(2)
        assert (await r.post("load", token, {"order_id": "order-3"})).status_code == 200
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        await r.lockers.cancel_pickup("order-3")  # loaded, then cancelled: it waits for staff
        tasks = await r.client.get(r.url("tasks"), headers={"Authorization": f"Bearer {token}"})
        assert tasks.status_code == 200
        assert tasks.json()["retrievals"] == [
            {"order_id": "order-3", "compartment": "A-02", "message": "Take order order-3 out of door A-02."}]
        assert tasks.json()["alarms"] == []
        # Bank B's screen does not list it, and its staff cannot open it from there.
        token_b = await r.token(bank="B")
        tasks_b = await r.client.get(r.url("tasks", "B"), headers={"Authorization": f"Bearer {token_b}"})
        assert tasks_b.json()["retrievals"] == []
        elsewhere = await r.post("retrieve", token_b, {"order_id": "order-3"}, bank="B")
        assert elsewhere.status_code == 409 and "locker A" in elsewhere.json()["message"]
        r.take(2)
        out = await r.post("retrieve", token, {"order_id": "order-3"})
        assert out.status_code == 200 and out.json()["compartment"] == "A-02"
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.retrieved")
        audits = await asyncio.to_thread(subscriber.wait_events, 2, 20, "audit.door_opened")
        assert [a["payload"]["actor"] for a in audits] == [f"staff:{STAFF}", f"staff:{STAFF}"]
        assert r.emulator.unlock_count(0, 2) == 2 and _unlocks(r) == 2
        again = await r.post("retrieve", token, {"order_id": "order-3"})
        assert again.status_code == 409 and again.json()["message"] == "order order-3 is not waiting for retrieval"


async def test_bad_requests_and_bad_tokens_open_nothing(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        await r.lockers.create_pickup("order-4", "S", int(time.time() * 1000) + DAY_MS)
        token = await r.token()
        r.place(1)
        sign_in = r.url("sign-in")
        cases = [
            await r.client.post(sign_in, content=b"{not json", headers={"Content-Type": "application/json"}),
            await r.client.post(sign_in, json={"kind": "staff", "staff_number": STAFF, "pin": PIN, "role": "admin"}),
            await r.client.post(sign_in, json={"kind": "admin", "staff_number": STAFF, "pin": PIN}),
            await r.client.post(sign_in, json={"kind": "courier"}),
            await r.client.post(sign_in, json=[1, 2]),
            await r.post("load", token, {"order_id": "order-4", "compartment": "A-02"}),
            await r.post("load", token, {"order": "order-4"}),
            await r.post("load", token, {"order_id": ""}),
            await r.client.post(r.url("load"), content=b"\xff\xfe", headers={"Authorization": f"Bearer {token}",
                                                                            "Content-Type": "application/json"}),
        ]
        assert [c.status_code for c in cases] == [422] * len(cases)
        assert (await r.client.post(r.url("sign-in", "Z"), json={"kind": "courier", "code": "12345678"})).status_code == 404
        # Tokens: none, garbage, another scheme, and bank A's token at bank B's API: all signed out.
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": token}):
            res = await r.client.post(r.url("load"), json={"order_id": "order-4"}, headers=headers)
            assert res.status_code == 401 and res.json()["status"] == "signed_out"
        other_bank = await r.post("load", token, {"order_id": "order-4"}, bank="B")
        assert other_bank.status_code == 401
        assert _unlocks(r) == 0
        # The token still works at its own bank (a refused request does not end the session).
        assert (await r.post("load", token, {"order_id": "order-4"})).status_code == 200
        assert _unlocks(r) == 1


async def test_ten_wrong_sign_ins_lock_the_screen_even_for_the_right_pin(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        # Different staff numbers, so the per-number limit (5 a minute) is not what trips.
        wrong = [await r.sign_in({"kind": "staff", "staff_number": f"90{n}", "pin": "730194"}) for n in range(4)]
        wrong += [await r.sign_in({"kind": "courier", "code": f"{n:08d}"}) for n in range(4)]
        wrong += [await r.sign_in({"kind": "staff", "staff_number": STAFF, "pin": "730194"}) for _ in range(2)]
        assert [w.status_code for w in wrong] == [401] * 10
        assert len({w.text for w in wrong}) == 1, "every failure reads the same"
        locked = await r.sign_in({"kind": "staff", "staff_number": STAFF, "pin": PIN})
        assert locked.status_code == 429
        assert locked.json()["status"] == "locked_out" and 0 < locked.json()["seconds_left"] <= 30
        assert locked.headers["retry-after"] == str(locked.json()["seconds_left"])
        # Another bank's screen is another terminal: the right PIN works there.
        assert (await r.sign_in({"kind": "staff", "staff_number": STAFF, "pin": PIN}, bank="B")).status_code == 200
        # The lockout raised alarm.code_guessing naming the staff terminal.
        alarms = await asyncio.to_thread(subscriber.wait_events, 1, 20, "alarm.code_guessing")
        assert alarms[0]["payload"]["terminals"] == ["locker-staff:A"]
        assert _unlocks(r) == 0


async def test_courier_codes_from_cloud_commands_sign_in_and_revoke(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    async with rig(tmp_path, cloud_broker) as r:
        subscriber.publish(COMMANDS, json.dumps({"command_id": "cc-1", "type": "courier.code.create",
                                                 "payload": {"courier_id": "jd-courier-3"}}))
        subscriber.publish(COMMANDS, json.dumps({"command_id": "cc-2", "type": "courier.code.create",
                                                 "payload": {"courier_id": "jd-courier-4", "code": "5501928374"}}))
        results = await asyncio.to_thread(subscriber.wait_events, 2, 20, "command.result")
        first, second = (next(e["payload"] for e in results if e["payload"]["command_id"] == i) for i in ("cc-1", "cc-2"))
        assert first["status"] == "ok" and len(first["result"]["code"]) == 8
        assert abs(first["result"]["valid_until"] - (time.time() * 1000 + 12 * 3600 * 1000)) < 60_000
        assert second["status"] == "ok" and "code" not in second["result"], "a cloud-issued code is never sent back"
        signed = await r.sign_in({"kind": "courier", "code": first["result"]["code"]})
        assert signed.status_code == 200 and signed.json()["actor"] == "courier:jd-courier-3"
        # Revoked before use: the cloud's code for courier 4 no longer signs in.
        subscriber.publish(COMMANDS, json.dumps({"command_id": "cc-3", "type": "courier.code.revoke",
                                                 "payload": {"courier_id": "jd-courier-4"}}))
        await wait_until(lambda: r.staff.courier_codes("jd-courier-4") == [("revoked", r.staff.courier_codes(
            "jd-courier-4")[0][1])], timeout=20)
        results = await asyncio.to_thread(subscriber.wait_events, 3, 20, "command.result")
        revoke = next(e["payload"] for e in results if e["payload"]["command_id"] == "cc-3")
        assert revoke["result"] == {"courier_id": "jd-courier-4", "revoked": 1}
        assert (await r.sign_in({"kind": "courier", "code": "5501928374"})).status_code == 401
        # Revoking a courier also ends its open sessions.
        subscriber.publish(COMMANDS, json.dumps({"command_id": "cc-4", "type": "courier.code.revoke",
                                                 "payload": {"courier_id": "jd-courier-3"}}))
        await asyncio.to_thread(subscriber.wait_events, 4, 20, "command.result")
        gone = await r.post("load", signed.json()["token"], {"order_id": "x-1"})
        assert gone.status_code == 401
