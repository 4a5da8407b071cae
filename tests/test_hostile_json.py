"""Issue 14.7: poison JSON at every JSON intake is a clear, counted rejection, never a crash or a retry loop.

Before the fix an integer of more than 4,300 digits made Python's json raise a bare ValueError inside
`loads_strict`: a device's retained announce with one was taken for "storage refused" and redelivered on
every reconnect, a kiosk order with one answered 500, and a cloud command with one got no result at all.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.mqtt.messages import DeviceMessageError, parse_device_message
from devices.mqtt.registry import AdoptPolicy, DeviceRegistry
from devices.mqtt_gateway import MqttDeviceGateway
from edge_agent.storage import Database
from edge_agent.web.validation_errors import install_validation_errors
from mqtt_io.driver import Endpoint
from mqtt_io.strict_json import StrictJsonError, loads_strict
from tests.conftest import wait_until
from tests.support.broker import Broker
from tests.support.device_sink import RecordingDeviceSink
from tests.support.hostile_json import RAW
from tests.test_kiosk_api import build, db  # noqa: F401 - db is the fixture build needs

CHANNELS = ["announce", "availability", "state", "telemetry", "event"]
HUGE = b"9" * 5000


@settings(max_examples=300, deadline=None)
@given(raw=RAW)
def test_strict_json_gives_a_value_or_its_one_error(raw: bytes) -> None:
    try:
        value = loads_strict(raw)
    except StrictJsonError:
        return
    # What it accepts can always be written back as strict JSON (no infinity, no unbounded int).
    json.dumps(value, allow_nan=False)


def test_the_numbers_that_used_to_escape_are_rejected_with_a_reason() -> None:
    for raw in (HUGE, b'{"a": ' + HUGE + b"}", b"1e999", b"[-1e400]"):
        with pytest.raises(StrictJsonError):
            loads_strict(raw)
    assert loads_strict(b"[12345678901234567890, 0.5, -3]") == [12345678901234567890, 0.5, -3]


@settings(max_examples=300, deadline=None)
@given(raw=RAW, channel=st.sampled_from(CHANNELS))
def test_any_device_payload_is_a_message_or_a_counted_reason(raw: bytes, channel: str) -> None:
    try:
        parse_device_message("store/v1", f"store/v1/devices/d-1/{channel}", raw, 1 << 20)
    except DeviceMessageError as exc:
        assert exc.reason


@pytest.fixture
async def intake(tmp_path: Path) -> Any:
    database = Database(tmp_path / "cmd")
    outbox = Outbox(database, Topics("retail/v1", "sh-0042"), max_bytes=1 << 22)
    await outbox.open()
    yield CommandIntake(database, outbox, CommandRegistry())
    database.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=RAW)
async def test_any_command_gets_an_answer(intake: CommandIntake, raw: bytes) -> None:
    result = await intake.handle(raw)
    assert result["status"] == "error" and result["error"]["code"], result


async def test_a_command_with_a_huge_number_is_answered_malformed_json(intake: CommandIntake) -> None:
    raw = b'{"command_id": "c-1", "type": "ping", "payload": {"echo": ' + HUGE + b"}}"
    result = await intake.handle(raw)
    assert result["error"]["code"] == "malformed_json"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=RAW)
async def test_any_kiosk_order_body_is_answered_4xx(db: Database, raw: bytes) -> None:  # noqa: F811
    async with await build(db) as http:
        answer = await http.post("/kiosk/k1/api/orders", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code in (404, 409, 413, 422), answer.text[:300]


async def test_a_kiosk_order_with_a_huge_quantity_is_a_422(db: Database) -> None:  # noqa: F811
    async with await build(db) as http:
        answer = await http.post("/kiosk/k1/api/orders", headers={"content-type": "application/json"},
                                 content=b'{"items": [{"sku": "TEA", "quantity": ' + HUGE + b"}]}")
    assert answer.status_code == 422 and "not JSON" in answer.text



async def test_a_retained_announce_with_a_huge_number_is_rejected_once_and_relaying_goes_on(
    local_broker: Broker,
) -> None:
    sink = RecordingDeviceSink()
    gateway = MqttDeviceGateway(Endpoint(local_broker.host, local_broker.port, "gw-poison", session_expiry=3600),
                                sink, registry=DeviceRegistry(AdoptPolicy.AUTO))
    poison = paho.Client(CallbackAPIVersion.VERSION2, client_id="poisoner")
    poison.connect(local_broker.host, local_broker.port)
    poison.loop_start()
    try:
        poison.publish("store/v1/devices/anyone/announce", b'{"kind": "other", "fw": ' + HUGE + b"}",
                       qos=1, retain=True).wait_for_publish(5)
        task = asyncio.create_task(gateway.run())
        try:
            await wait_until(lambda: gateway.connected, timeout=10)
            poison.publish("store/v1/devices/d1/event", b'{"kind": "reading", "data": {"seq": 1}}',
                           qos=1).wait_for_publish(5)
            await wait_until(lambda: any(kind == "device.event" for kind, _ in sink.events), timeout=10)
            await asyncio.sleep(1.0)  # time enough for a reconnect loop to show
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        poison.publish("store/v1/devices/anyone/announce", b"", qos=1, retain=True).wait_for_publish(5)
        poison.loop_stop()
        poison.disconnect()
    assert sink.bad == ["malformed_json"]
    assert gateway.connections == 1


async def test_any_body_to_the_locker_screens_public_endpoints_is_answered_without_a_5xx(
    tmp_path: Path, cloud_broker: Broker
) -> None:
    """The locker screen's collect and staff sign-in parse their bodies with FastAPI: hostile JSON gets a
    4xx there too (the agent in-process; Hypothesis drives a client from a thread so the loop stays free)."""
    from firmware_bridge.emulators.pty_line import PtyPort
    from tests.conftest import agent_config, running_agent
    from tests.support.lockers import compartment, idle_emulator, one_board

    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    config = agent_config(tmp_path / "data", cloud_broker, lockers=one_board(pty, compartment("A-01", 1, column=1)))
    async with emulator.running(PtyPort(pty)), running_agent(config, env={"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}) as agent:
        base = f"http://127.0.0.1:{agent.web_port}/locker/A/api"
        answers: list[int] = []

        @settings(max_examples=80, deadline=None)
        @given(raw=RAW, path=st.sampled_from(["/collect", "/staff/sign-in"]))
        def probe(raw: bytes, path: str) -> None:
            answer = httpx.post(base + path, content=raw, headers={"content-type": "application/json"}, timeout=10)
            answers.append(answer.status_code)
            assert answer.status_code < 500, (raw[:80], answer.status_code, answer.text[:300])

        await asyncio.to_thread(probe)
    assert len(answers) >= 80


class SignIn(BaseModel):
    username: str
    password: str
    remember: bool = False


async def test_a_422_says_where_and_what_but_never_echoes_the_input() -> None:
    app = FastAPI()
    install_validation_errors(app)

    @app.post("/sign-in")
    async def sign_in(body: SignIn) -> dict[str, str]:
        return {"ok": body.username}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        secret = "correct horse battery staple " * 1000
        answer = await http.post("/sign-in", json={"username": ["x"], "password": secret, "remember": "maybe"})
        assert answer.status_code == 422
        assert "correct horse" not in answer.text and "maybe" not in answer.text
        assert all(set(d) == {"loc", "msg", "type"} for d in answer.json()["detail"])  # no "input", no "ctx"
        assert {tuple(d["loc"]) for d in answer.json()["detail"]} == {("body", "username"), ("body", "remember")}
        surrogate = await http.post("/sign-in", content=b'{"\\ud800": 1, "username": "\\ud800"}',
                                    headers={"content-type": "application/json"})
        assert surrogate.status_code == 422, surrogate.text
