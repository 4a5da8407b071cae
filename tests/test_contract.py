"""The cloud contract's JSON Schemas against what the code really produces and accepts (no broker needed).

Messages are built by the real functions (render_envelope, render_state, status_payload) and, where the
shape comes out of a flow, by the real components on a real SQLite file: the outbox, the command intake
with the built-in commands, and the device gateway's relay. Every rendered body is validated as bytes,
so it must also be strict JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from cloud_link import contract
from cloud_link.commands import (
    COMMAND_ID_RE,
    COMMAND_TYPE_RE,
    CommandFailedError,
    CommandIntake,
    CommandRegistry,
)
from cloud_link.contract import ContractError, validate, validate_command, validate_event
from cloud_link.events import (
    ENVELOPE_VERSION,
    EVENT_TYPE_RE,
    Event,
    encode_payload,
    new_event_id,
    now_ms,
    render_envelope,
)
from cloud_link.outbox import Outbox, OutboxFullError, render_state
from cloud_link.session import status_payload
from cloud_link.topics import ID_RE, Topics
from devices.mqtt_gateway import DEVICE_ID_RE, KIND_RE, MqttDeviceGateway
from edge_agent.commands.builtin import ConfigGetPayload, PingPayload, register_builtin_commands
from edge_agent.config import parse_config
from edge_agent.storage import Database
from mqtt_io.driver import Endpoint

STORE = "sh-0042"
TOPICS = Topics("retail/v1", STORE)
TS = "2026-11-22T18:13:00.123Z"


def envelope(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "event_id": new_event_id(),
        "seq": 7,
        "boot": 2,
        "store_id": STORE,
        "type": "order.created",
        "ts": TS,
        "payload": {"order_id": "o-1"},
    }
    doc.update(changes)
    return doc


def rendered(event_type: str, payload: dict[str, Any], *, seq: int = 1, boot: int = 1) -> bytes:
    return render_envelope(
        event_id=new_event_id(),
        seq=seq,
        boot=boot,
        store_id=STORE,
        event_type=event_type,
        ts_ms=now_ms(),
        payload_json=encode_payload(payload),
    )


# -- the schema files themselves ------------------------------------------------------------------


def test_the_expected_schemas_are_shipped() -> None:
    assert set(contract.schema_names()) >= {
        "event.json",
        "state.json",
        "status.json",
        "command.json",
        "command.ping.json",
        "command.config.get.json",
        "payload.command.result.json",
        "payload.telemetry.device.json",
        "payload.device.event.json",
        "payload.alarm.outbox_full.json",
    }


@pytest.mark.parametrize("name", contract.schema_names())
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = contract.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    contract.check_schema(name)


@pytest.mark.parametrize("name", contract.schema_names())
def test_every_schema_example_matches_its_schema(name: str) -> None:
    examples = contract.load_schema(name).get("examples", [])
    assert examples, f"{name} has no examples"
    for example in examples:
        validate(name, example)


def test_schema_patterns_are_the_codes_patterns() -> None:
    def prop(name: str, *path: str) -> dict[str, Any]:
        node: dict[str, Any] = contract.load_schema(name)
        for key in path:
            node = node["properties"][key]
        return node

    assert prop("event.json", "type")["pattern"] == EVENT_TYPE_RE.pattern
    assert prop("payload.alarm.outbox_full.json", "refused_type")["pattern"] == EVENT_TYPE_RE.pattern
    for name in ("event.json", "state.json", "status.json"):
        assert prop(name, "store_id")["pattern"] == ID_RE.pattern
    assert prop("state.json", "device_id")["pattern"] == ID_RE.pattern
    for name in ("payload.telemetry.device.json", "payload.device.event.json"):
        assert prop(name, "device_id")["pattern"] == DEVICE_ID_RE.pattern
    assert prop("payload.device.event.json", "kind")["pattern"] == KIND_RE.pattern
    assert prop("command.json", "command_id")["pattern"] == COMMAND_ID_RE.pattern
    assert prop("payload.command.result.json", "command_id")["pattern"] == COMMAND_ID_RE.pattern
    assert prop("command.json", "type")["pattern"] == COMMAND_TYPE_RE.pattern
    assert prop("event.json", "v")["const"] == ENVELOPE_VERSION


# -- events ---------------------------------------------------------------------------------------


def test_render_envelope_matches_the_event_schema() -> None:
    body = rendered("test.note", {"order_id": "o-1", "name": "东方树叶 500ml", "total": 12.8}, seq=1842, boot=3)
    validate("event.json", body)
    validate_event(body)


def test_event_to_wire_matches_the_rendered_envelope() -> None:
    event = Event(new_event_id(), 5, 1, STORE, "test.note", 1_795_000_000_123, {"code": "1234"})
    wire = event.to_wire()
    validate_event(wire)
    body = render_envelope(
        event_id=event.event_id,
        seq=event.seq,
        boot=event.boot,
        store_id=event.store_id,
        event_type=event.type,
        ts_ms=event.ts_ms,
        payload_json=encode_payload(event.payload),
    )
    assert json.loads(body) == wire


def test_ts_has_milliseconds_even_when_they_are_zero() -> None:
    body = render_envelope(
        event_id=new_event_id(), seq=1, boot=1, store_id=STORE, event_type="test.note",
        ts_ms=1_795_000_000_000, payload_json="{}",
    )
    assert json.loads(body)["ts"].endswith(".000Z")
    validate_event(body)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("telemetry.device", {"device_id": "fridge-7", "readings": {"temperature_c": 4.2},
                              "msg_key": "5f0c2a9be41d7a3380c6e2f1"}),
        ("device.event", {"device_id": "scanner-3", "kind": "button.pressed", "data": {},
                          "msg_key": "0d3e9a27c11b4f6a8e5d7c90"}),
        ("alarm.outbox_full", {"max_bytes": 1 << 30, "refused_type": "device.event"}),
        ("command.result", {"command_id": "c-1", "type": "ping", "status": "ok", "result": {"pong": True}}),
        ("test.note", {"anything": ["goes", 1, None]}),  # no payload schema: envelope only
    ],
)
def test_rendered_events_with_their_payloads(event_type: str, payload: dict[str, Any]) -> None:
    validate_event(rendered(event_type, payload))


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({k: v for k, v in envelope().items() if k != "event_id"}, "$"),
        ({k: v for k, v in envelope().items() if k != "payload"}, "$"),
        (envelope(extra="field"), "$"),
        (envelope(seq="7"), "$.seq"),
        (envelope(seq=0), "$.seq"),
        (envelope(seq=1.5), "$.seq"),
        (envelope(boot=0), "$.boot"),
        (envelope(v=2), "$.v"),
        (envelope(event_id="6f1c1b9e-2d4f-4a3b-8c5d-7e6f8a9b0c1d"), "$.event_id"),  # a UUIDv4
        (envelope(event_id="019A7C0E-5B2A-7C3D-9E41-2F6A8B0C1D2E"), "$.event_id"),  # upper case
        (envelope(ts="2026-11-22T18:13:00Z"), "$.ts"),  # no milliseconds
        (envelope(ts="2026-11-22T18:13:00.123+00:00"), "$.ts"),
        (envelope(ts="\uff12\uff10\uff12\uff16-11-22T18:13:00.123Z"), "$.ts"),  # full-width digits (Python's \d)
        (envelope(type="Order.Created"), "$.type"),
        (envelope(type="order"), "$.type"),
        (envelope(type="order.created\n"), "$.type"),  # Python's $ would take a trailing newline
        (envelope(store_id="sh 0042"), "$.store_id"),
        (envelope(payload=[1, 2]), "$.payload"),
        (envelope(payload=None), "$.payload"),
    ],
)
def test_bad_envelopes_are_refused_with_the_path(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(ContractError) as info:
        validate_event(doc)
    assert info.value.schema == "event.json"
    assert info.value.path == path
    assert str(info.value).startswith(f"event.json: {path}: ")


@pytest.mark.parametrize(
    ("event_type", "payload", "schema", "path"),
    [
        ("telemetry.device", {"device_id": "d1"}, "payload.telemetry.device.json", "$.payload"),
        ("telemetry.device", {"device_id": "d1", "readings": [1], "msg_key": "0" * 24},
         "payload.telemetry.device.json", "$.payload.readings"),
        ("device.event", {"device_id": "d1", "kind": "Button", "data": {}, "msg_key": "0" * 24}, "payload.device.event.json",
         "$.payload.kind"),
        ("device.event", {"device_id": "d1", "kind": "button", "data": {}, "x": 1}, "payload.device.event.json",
         "$.payload"),
        ("alarm.outbox_full", {"max_bytes": "1GB", "refused_type": "order.created"},
         "payload.alarm.outbox_full.json", "$.payload.max_bytes"),
        ("command.result", {"command_id": "c-1", "type": "ping", "status": "ok"}, "payload.command.result.json",
         "$.payload"),
    ],
)
def test_bad_payloads_are_refused_with_the_path(
    event_type: str, payload: dict[str, Any], schema: str, path: str
) -> None:
    with pytest.raises(ContractError) as info:
        validate_event(envelope(type=event_type, payload=payload))
    assert (info.value.schema, info.value.path) == (schema, path)


def test_wire_bytes_must_be_strict_json() -> None:
    body = rendered("telemetry.device", {"device_id": "d1", "readings": {}}).replace(b"{}", b"{\"t\":NaN}")
    with pytest.raises(ContractError, match="not strict UTF-8 JSON"):
        validate_event(body)
    with pytest.raises(ContractError, match="not strict UTF-8 JSON"):
        validate_event(b"\xff")


def test_unknown_schema_names_are_refused() -> None:
    with pytest.raises(ContractError, match="no such schema"):
        validate("payload.no.such.json", {})
    with pytest.raises(ContractError, match="not a schema name"):
        validate("../pyproject.toml", {})


# -- command results ------------------------------------------------------------------------------


def result_event(payload: dict[str, Any]) -> bytes:
    return rendered("command.result", payload)


ERROR_CODES = [
    "too_large", "malformed_json", "invalid_envelope", "unsupported_version", "unknown_type",
    "invalid_payload", "timeout", "failed", "interrupted",
]


@pytest.mark.parametrize("code", ERROR_CODES)
def test_hand_built_error_results(code: str) -> None:
    # The shape of CommandIntake.handle: {"command_id", "type", **_error(code, message)}.
    result = {"command_id": "c-9", "type": "ping", "status": "error", "error": {"code": code, "message": "why"}}
    validate("payload.command.result.json", result)
    validate_event(result_event(result))
    validate_event(result_event({**result, "duplicate": True}))


def test_hand_built_results_without_a_usable_id() -> None:
    result = {"command_id": None, "type": None, "status": "error",
              "error": {"code": "malformed_json", "message": "not valid UTF-8 JSON"}}
    validate_event(result_event(result))


@pytest.mark.parametrize(
    ("result", "path"),
    [
        ({"command_id": "c", "type": "ping", "status": "ok"}, "$"),  # ok without result
        ({"command_id": "c", "type": "ping", "status": "error", "result": {}}, "$"),  # error without error
        ({"command_id": "c", "type": "ping", "status": "ok", "result": {},
          "error": {"code": "failed", "message": ""}}, "$"),
        ({"command_id": "c", "type": "ping", "status": "done", "result": {}}, "$.status"),
        ({"command_id": "c", "type": "ping", "status": "error", "error": {"code": "failed"}}, "$.error"),
        ({"command_id": "c", "type": "ping", "status": "ok", "result": {}, "duplicate": False}, "$.duplicate"),
        ({"command_id": 5, "type": "ping", "status": "ok", "result": {}}, "$.command_id"),
        ({"type": "ping", "status": "ok", "result": {}}, "$"),
    ],
)
def test_bad_results_are_refused(result: dict[str, Any], path: str) -> None:
    with pytest.raises(ContractError) as info:
        validate("payload.command.result.json", result)
    assert info.value.path == path


# -- state and status -----------------------------------------------------------------------------


def test_render_state_matches_the_state_schema() -> None:
    state_json = encode_payload({"online": True, "名": "扫码枪"})
    body = render_state(store_id=STORE, device_id="scanner-3", rev=977, boot=3, ts_ms=now_ms(), state_json=state_json)
    validate("state.json", body)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"rev": 0}, "$.rev"),
        ({"state": "on"}, "$.state"),
        ({"device_id": "dev1\n"}, "$.device_id"),
        ({"extra": 1}, "$"),
    ],
)
def test_bad_states_are_refused(changes: dict[str, Any], path: str) -> None:
    doc = json.loads(render_state(store_id=STORE, device_id="d1", rev=1, boot=1, ts_ms=now_ms(), state_json="{}"))
    doc.update(changes)
    with pytest.raises(ContractError) as info:
        validate("state.json", doc)
    assert info.value.path == path


def test_status_payloads_match_the_status_schema() -> None:
    validate("status.json", status_payload("online", TOPICS, 3, "0.1.0"))
    validate("status.json", status_payload("offline", TOPICS, 3, "0.1.0", "shutdown"))
    validate("status.json", status_payload("offline", TOPICS, 3, "0.1.0", "connection lost"))  # the Will


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"status": "away"}, "$.status"),
        ({"reason": "why not"}, "$"),  # online never carries a reason
        ({"boot": 0}, "$.boot"),
        ({"agent_version": 1}, "$.agent_version"),
    ],
)
def test_bad_statuses_are_refused(changes: dict[str, Any], path: str) -> None:
    doc = json.loads(status_payload("online", TOPICS, 3, "0.1.0"))
    doc.update(changes)
    with pytest.raises(ContractError) as info:
        validate("status.json", doc)
    assert info.value.path == path


def test_missing_status_field_is_refused() -> None:
    doc = json.loads(status_payload("online", TOPICS, 3, "0.1.0"))
    del doc["agent_version"]
    with pytest.raises(ContractError, match=r"^status\.json: \$: 'agent_version' is a required property"):
        validate("status.json", doc)


# -- commands from the cloud ----------------------------------------------------------------------


def test_commands_and_their_payloads() -> None:
    validate_command({"command_id": "c-1", "type": "ping"})
    validate_command({"v": 1, "command_id": "2026-11-22:ab_c.1", "type": "ping", "payload": {"echo": "hi"}})
    validate_command({"command_id": "c-2", "type": "config.get", "payload": {"section": None}})
    validate_command({"command_id": "c-3", "type": "tag.update", "payload": {"x": 1}})  # no payload schema yet
    validate_command({"command_id": "c-4", "type": "ping", "sent_by": "ops-console"})  # unknown fields allowed


@pytest.mark.parametrize(
    ("doc", "schema", "path"),
    [
        ({"type": "ping"}, "command.json", "$"),
        ({"command_id": "c 1", "type": "ping"}, "command.json", "$.command_id"),
        ({"command_id": "c\n", "type": "ping"}, "command.json", "$.command_id"),
        ({"command_id": "x" * 129, "type": "ping"}, "command.json", "$.command_id"),
        ({"command_id": "c-1", "type": "Ping"}, "command.json", "$.type"),
        ({"command_id": "c-1", "type": "ping", "v": 2}, "command.json", "$.v"),
        ({"command_id": "c-1", "type": "ping", "payload": [1]}, "command.json", "$.payload"),
        ({"command_id": "c-1", "type": "ping", "payload": {"echo": 5}}, "command.ping.json", "$.payload.echo"),
        ({"command_id": "c-1", "type": "ping", "payload": {"bogus": 1}}, "command.ping.json", "$.payload"),
        ({"command_id": "c-1", "type": "config.get", "payload": {"section": "secrets"}}, "command.config.get.json",
         "$.payload.section"),
    ],
)
def test_bad_commands_are_refused(doc: dict[str, Any], schema: str, path: str) -> None:
    with pytest.raises(ContractError) as info:
        validate_command(doc)
    assert (info.value.schema, info.value.path) == (schema, path)


def _accepts(model: type[BaseModel], payload: Any) -> bool:
    try:
        model.model_validate(payload)
    except ValidationError:
        return False
    return True


def _schema_accepts(name: str, payload: Any) -> bool:
    try:
        validate(name, payload)
    except ContractError:
        return False
    return True


@pytest.mark.parametrize(
    ("model", "schema", "payload"),
    [
        (PingPayload, "command.ping.json", {}),
        (PingPayload, "command.ping.json", {"echo": "hi"}),
        (PingPayload, "command.ping.json", {"echo": None}),
        (PingPayload, "command.ping.json", {"echo": "x" * 256}),
        (PingPayload, "command.ping.json", {"echo": "价" * 256}),
        (PingPayload, "command.ping.json", {"echo": "x" * 257}),
        (PingPayload, "command.ping.json", {"echo": 5}),
        (PingPayload, "command.ping.json", {"echo": ["x"]}),
        (PingPayload, "command.ping.json", {"other": 1}),
        (ConfigGetPayload, "command.config.get.json", {}),
        (ConfigGetPayload, "command.config.get.json", {"section": None}),
        *[(ConfigGetPayload, "command.config.get.json", {"section": s})
          for s in ("agent", "web", "cloud", "outbox", "commands", "local_broker")],
        (ConfigGetPayload, "command.config.get.json", {"section": "secrets"}),
        (ConfigGetPayload, "command.config.get.json", {"section": "Cloud"}),
        (ConfigGetPayload, "command.config.get.json", {"section": 1}),
        (ConfigGetPayload, "command.config.get.json", {"all": True}),
    ],
)
def test_command_payload_schemas_agree_with_the_pydantic_models(
    model: type[BaseModel], schema: str, payload: dict[str, Any]
) -> None:
    assert _schema_accepts(schema, payload) == _accepts(model, payload)


def test_config_get_sections_are_the_configs_sections() -> None:
    sections = contract.load_schema("command.config.get.json")["properties"]["section"]["enum"]
    config = parse_config({"agent": {"store_id": STORE}})
    assert set(sections) - {None} == set(config.model_dump())


# -- the real components on a real database -------------------------------------------------------


class _Slow(BaseModel):
    pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
async def outbox(db: Database) -> Outbox:
    box = Outbox(db, TOPICS, max_bytes=16 * 1024 * 1024)
    await box.open()
    return box


def sent_events(outbox: Outbox) -> list[tuple[str, bytes]]:
    return [(m.topic, m.body) for m in outbox.read_events(0, 10_000)]


async def test_command_intake_results_match_the_contract(db: Database, outbox: Outbox, tmp_path: Path) -> None:
    registry = CommandRegistry()
    register_builtin_commands(registry, parse_config({"agent": {"store_id": STORE}}), lambda: outbox.boot)

    async def slow(_: _Slow) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    async def broken(_: _Slow) -> dict[str, Any]:
        raise RuntimeError("the lock board did not answer")

    async def refusing(_: _Slow) -> dict[str, Any]:
        raise CommandFailedError("door_jammed", "compartment 12 did not open")

    registry.register("test.slow", _Slow, slow, timeout=0.05)
    registry.register("test.broken", _Slow, broken)
    registry.register("test.refusing", _Slow, refusing)
    intake = CommandIntake(db, outbox, registry, max_payload_bytes=2048)

    # A command claimed by an earlier run that died before finishing (the row as that run left it).
    await db.write(lambda conn: conn.execute(
        "INSERT INTO commands(command_id, type, received_ms, status, result) "
        "VALUES ('c-died', 'ping', ?, 'running', NULL)",
        (now_ms(),),
    ))

    cases: list[tuple[bytes, str, str | None]] = [
        (json.dumps({"command_id": "c-ping", "type": "ping", "payload": {"echo": "你好"}}).encode(), "ok", "c-ping"),
        (json.dumps({"command_id": "c-cfg", "type": "config.get", "payload": {"section": "outbox"}}).encode(),
         "ok", "c-cfg"),
        (json.dumps({"command_id": "c-all", "type": "config.get"}).encode(), "ok", "c-all"),
        (b"x" * 4096, "too_large", None),
        (b"{not json", "malformed_json", None),
        (b"\xff\xfe", "malformed_json", None),
        (b"[1]", "invalid_envelope", None),
        (json.dumps({"type": "ping"}).encode(), "invalid_envelope", None),
        (json.dumps({"command_id": "c-notype"}).encode(), "invalid_envelope", "c-notype"),
        (json.dumps({"command_id": "c-v2", "type": "ping", "v": 2}).encode(), "unsupported_version", "c-v2"),
        (json.dumps({"command_id": "c-unknown", "type": "door.open"}).encode(), "unknown_type", "c-unknown"),
        (json.dumps({"command_id": "c-badpay", "type": "ping", "payload": {"echo": 1}}).encode(),
         "invalid_payload", "c-badpay"),
        (json.dumps({"command_id": "c-slow", "type": "test.slow"}).encode(), "timeout", "c-slow"),
        (json.dumps({"command_id": "c-broken", "type": "test.broken"}).encode(), "failed", "c-broken"),
        (json.dumps({"command_id": "c-refusing", "type": "test.refusing"}).encode(), "door_jammed", "c-refusing"),
        (json.dumps({"command_id": "c-died", "type": "ping"}).encode(), "interrupted", "c-died"),
        (json.dumps({"command_id": "c-ping", "type": "ping", "payload": {"echo": "你好"}}).encode(), "ok", "c-ping"),
        (json.dumps({"command_id": "c-v2", "type": "ping"}).encode(), "unsupported_version", "c-v2"),
    ]
    answers = [await intake.handle(raw) for raw, _, _ in cases]
    for (_, expected, command_id), answer in zip(cases, answers, strict=True):
        assert answer["command_id"] == command_id
        assert (answer["error"]["code"] if answer["status"] == "error" else "ok") == expected
        validate("payload.command.result.json", answer)
    assert [a.get("duplicate") for a in answers[-3:]] == [True, True, True]
    assert set(ERROR_CODES) <= {a["error"]["code"] for a in answers if a["status"] == "error"}

    events = sent_events(outbox)
    assert len(events) == len(cases)
    for topic, body in events:
        assert topic == "retail/v1/sh-0042/commands/result"
        validate_event(body)
        assert json.loads(body)["type"] == "command.result"
    # Results are events: one seq each, in order.
    assert [json.loads(body)["seq"] for _, body in events] == list(range(1, len(cases) + 1))


async def test_builtin_commands_shipped_as_examples_run_ok(db: Database, outbox: Outbox) -> None:
    registry = CommandRegistry()
    register_builtin_commands(registry, parse_config({"agent": {"store_id": STORE}}), lambda: outbox.boot)
    intake = CommandIntake(db, outbox, registry)
    for example in contract.load_schema("command.json")["examples"]:
        validate_command(example)
        answer = await intake.handle(json.dumps(example).encode())
        assert answer["status"] == "ok", answer


class _Sink:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.bad: list[tuple[str, str]] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        await self.outbox.publish(event_type, payload)

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        return await self.outbox.publish_from_message(event_type, payload, key, redelivered=redelivered) is not None

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        await self.outbox.put_state(device_id, state)

    def bad_input(self, source: str, reason: str) -> None:
        self.bad.append((source, reason))


async def test_device_gateway_output_matches_the_contract(outbox: Outbox) -> None:
    sink = _Sink(outbox)
    gateway = MqttDeviceGateway(Endpoint("127.0.0.1", 1, "unused"), sink, topic_prefix="store/v1")
    base = "store/v1/devices/scanner-3"
    announce = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan"]}
    assert await gateway.relay(f"{base}/announce", json.dumps(announce).encode())
    assert await gateway.relay(f"{base}/availability", b"online")
    assert await gateway.relay(f"{base}/state", json.dumps({"online": True, "battery_mv": 2950}).encode())
    assert await gateway.relay(f"{base}/telemetry", json.dumps({"temperature_c": 4.2, "n": 1}).encode())
    assert await gateway.relay(f"{base}/event", json.dumps({"kind": "button.pressed", "data": {"b": 1}}).encode())
    assert await gateway.relay(f"{base}/event", json.dumps({"kind": "door.opened"}).encode())
    assert await gateway.relay(f"{base}/event", json.dumps({"kind": "scan", "data": {"code": "6901234567892"}}).encode())
    assert await gateway.relay(f"{base}/event", json.dumps({"kind": "tap", "data": {"target": "help"}}).encode())
    assert not await gateway.relay(f"{base}/event", json.dumps({"kind": "Door"}).encode())
    # Devices validate strictly since issue 5: an unknown top-level field is refused, not ignored.
    assert not await gateway.relay(f"{base}/event", json.dumps({"kind": "door.opened", "extra": 1}).encode())
    assert sink.bad == [("mqtt_device", "bad_event")] * 2

    events = sent_events(outbox)
    assert [t for t, _ in events] == [
        "retail/v1/sh-0042/events/telemetry.device",
        "retail/v1/sh-0042/events/device.event",
        "retail/v1/sh-0042/events/device.event",
        "retail/v1/sh-0042/events/scan.device",
        "retail/v1/sh-0042/events/device.tap",
    ]
    for _, body in events:
        validate_event(body)
    payloads = [json.loads(body)["payload"] for _, body in events]
    keys = [p.pop("msg_key") for p in payloads]  # one per device message, each its own
    assert len(set(keys)) == len(keys) and all(len(k) == 24 for k in keys)
    assert payloads[2] == {"device_id": "scanner-3", "kind": "door.opened", "data": {}}
    assert payloads[3] == {"device_id": "scanner-3", "code": "6901234567892", "symbology": None}

    await gateway.states.flush()  # state is coalesced; the gateway's task would flush it within a window
    states = outbox.read_states(10)
    assert [s.topic for s in states] == ["retail/v1/sh-0042/state/scanner-3"]
    validate("state.json", states[0].body)
    state = json.loads(states[0].body)["state"]
    assert state["online"] is True and state["kind"] == "scanner" and state["battery_mv"] == 2950


async def test_outbox_full_alarm_matches_the_contract(db: Database) -> None:
    box = Outbox(db, TOPICS, max_bytes=4096)
    await box.open()
    with pytest.raises(OutboxFullError):
        await box.publish("order.created", {"blob": "x" * 5000})
    events = sent_events(box)
    assert [t for t, _ in events] == ["retail/v1/sh-0042/events/alarm.outbox_full"]
    validate_event(events[0][1])
    assert json.loads(events[0][1])["payload"] == {"max_bytes": 4096, "refused_type": "order.created"}


async def test_seq_and_boot_from_the_outbox(db: Database, outbox: Outbox) -> None:
    first = await outbox.publish("scan.recorded", {"code": "A1"})
    second = await outbox.publish("scan.recorded", {"code": "A2"})
    assert (first.seq, second.seq, first.boot) == (1, 2, outbox.boot)
    for _, body in sent_events(outbox):
        validate_event(body)
        assert re.fullmatch(r"[0-9a-f-]{36}", json.loads(body)["event_id"])


# -- the examples in the docs ---------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)


def test_the_contract_pages_examples_match_the_schemas() -> None:
    examples = DOC_EXAMPLE_RE.findall(DOC.read_text(encoding="utf-8"))
    assert len(examples) >= 8
    for target, text in examples:
        body = text.encode()
        if target == "event":
            validate_event(body)
        elif target == "command":
            validate_command(body)
        else:
            validate(target, body)
