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

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.mqtt_driver import Endpoint
from cloud_link.outbox import Outbox
from cloud_link.strict_json import StrictJsonError, loads_strict
from cloud_link.topics import Topics
from devices.mqtt.messages import DeviceMessageError, parse_device_message
from devices.mqtt.registry import AdoptPolicy, DeviceRegistry
from devices.mqtt_gateway import MqttDeviceGateway
from edge_agent.storage import Database
from tests.conftest import wait_until
from tests.support.broker import Broker
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



class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bad: list[str] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        await self.publish_event(event_type, payload)
        return True

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        return None

    def bad_input(self, source: str, reason: str) -> None:
        self.bad.append(reason)


async def test_a_retained_announce_with_a_huge_number_is_rejected_once_and_relaying_goes_on(
    local_broker: Broker,
) -> None:
    sink = _Sink()
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
