"""The e-ink label part of the cloud contract against what the code really produces and accepts.

Events and tag state come out of a real LabelService on a real SQLite file: base-station messages are fed
as wire bytes into a real (never connected) BaseStationClient, which decodes them and hands them to the
service, and transfers are started by the service's own `_start` and concluded by TRANSFER_DONE /
TRANSFER_FAILED bytes. Only rendering is replaced (a deterministic picture per content) and no base station
is needed. The tag commands run through a real CommandIntake; their JSON Schemas are checked against the
pydantic models, structurally and case by case.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import pytest
from pydantic import BaseModel, ValidationError

from cloud_link import contract
from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.contract import ContractError, validate, validate_command, validate_event
from cloud_link.events import EventClass, classify
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.labels.render import LabelContent
from devices.labels.render_pool import RenderPool, RenderRequest, RenderResult
from devices.labels.updates import LabelService, LabelSettings
from edge_agent.commands.labels import (
    COLOURS,
    TAG_ID_PATTERN,
    TagFlashPayload,
    TagPairing,
    TagPairPayload,
    TagRefreshPayload,
    register_label_commands,
)
from edge_agent.config import ID_PATTERN
from edge_agent.services import catalog as catalog_module
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.storage import Database
from edge_agent.wiring.labels import connect_catalog, product_to_content
from firmware_bridge.base_station.client import BaseStationClient
from firmware_bridge.base_station.messages import (
    ButtonPress,
    FailReason,
    TagCheckin,
    TagDiscovered,
    TransferDone,
    TransferFailed,
)
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import TAG_TYPES, tag_type

# jsonschema ships no type stubs; imported the way cloud_link.contract does, to keep mypy --strict clean.
jsonschema: Any = importlib.import_module("jsonschema")

STORE = "sh-0042"
TOPICS = Topics("retail/v1", STORE)
URGENT = 0  # the channel does not matter to the client's decoding

EVENT_SCHEMAS = {
    "tag.updated": "payload.tag.updated.json",
    "tag.update_failed": "payload.tag.update_failed.json",
    "tag.discovered": "payload.tag.discovered.json",
    "tag.low_battery": "payload.tag.low_battery.json",
    "tag.button": "payload.tag.button.json",
}
COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "command.tag.flash.json": TagFlashPayload,
    "command.tag.refresh.json": TagRefreshPayload,
    "command.tag.pair.json": TagPairPayload,
}

# What docs/cloud-contract.md (tag state) promises about `state` on state/tag-{tag_id}; state.json itself
# only says "an object". Kept here, strict, so that a field added to the state fails this test.
HEX16 = {"type": "string", "pattern": "^[0-9a-f]{16}$"}
TAG_STATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "type", "base_station", "sku", "hash", "battery_mv", "temperature_c", "rssi", "lqi",
                 "fw_version", "last_seen_ms"],
    "properties": {
        "kind": {"const": "tag"},
        "type": {"anyOf": [{"enum": sorted(t.name for t in TAG_TYPES.values())}, {"pattern": "^0x[0-9a-f]{2}$"}]},
        "base_station": {"type": ["string", "null"], "pattern": ID_PATTERN},
        "sku": {"type": ["string", "null"], "pattern": catalog_module.SKU_PATTERN},
        "hash": {"anyOf": [HEX16, {"type": "null"}]},
        "battery_mv": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535},
        "temperature_c": {"type": ["number", "null"]},
        "rssi": {"type": ["integer", "null"], "minimum": -128, "maximum": 127},
        "lqi": {"type": ["integer", "null"], "minimum": 0, "maximum": 255},
        "fw_version": {"type": ["integer", "null"], "minimum": 0, "maximum": 65535},
        "last_seen_ms": {"type": ["integer", "null"], "minimum": 0},
    },
}

# The results the contract page documents for the tag commands (payload.command.result.json says "object").
RESULT_SCHEMAS: dict[str, dict[str, Any]] = {
    "tag.flash": {
        "type": "object", "additionalProperties": False, "required": ["tag_id", "flashing"],
        "properties": {"tag_id": HEX16, "flashing": {"const": True}},
    },
    "tag.refresh": {
        "type": "object", "additionalProperties": False, "required": ["queued", "unchanged", "unknown"],
        "properties": {
            "queued": {"type": "integer", "minimum": 0},
            "unchanged": {"type": "integer", "minimum": 0},
            "unknown": {"type": "array", "items": {"type": "string"}},
        },
    },
    "tag.pair": {
        "type": "object", "additionalProperties": False, "required": ["changed", "unchanged", "problems"],
        "properties": {
            "changed": {"type": "array", "items": HEX16},
            "unchanged": {"type": "integer", "minimum": 0},
            "problems": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["index", "field", "message"],
                "properties": {"index": {"type": "integer", "minimum": 0}, "field": {"enum": ["tag_id", "sku"]},
                               "message": {"type": "string"}},
            }},
        },
    },
}

TAG_A = "4a3f0c12d5e6b788"
TAG_B = "4a3f0c12d5e6b789"
TAG_C = "00000000000000c0"


# -- the schema files -----------------------------------------------------------------------------


def test_the_label_schemas_are_shipped_and_valid() -> None:
    names = set(contract.schema_names())
    assert set(EVENT_SCHEMAS.values()) | set(COMMAND_MODELS) <= names
    for name in [*EVENT_SCHEMAS.values(), *COMMAND_MODELS]:
        contract.check_schema(name)
        schema = contract.load_schema(name)
        assert schema["$id"] == f"urn:store-edge-agent:cloud-contract:v1:{name}"
        assert schema["examples"]
        for example in schema["examples"]:
            validate(name, example)
    jsonschema.Draft202012Validator.check_schema(TAG_STATE_SCHEMA)


@pytest.mark.parametrize("name", list(EVENT_SCHEMAS.values()))
def test_event_schemas_are_strict_and_require_every_field(name: str) -> None:
    # The agent always sends every field (null where documented), so all of them are required.
    schema = contract.load_schema(name)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


@pytest.mark.parametrize("event_type", list(EVENT_SCHEMAS))
def test_tag_events_are_standard_class(event_type: str) -> None:
    assert classify(event_type) is EventClass.STANDARD


def test_schema_patterns_are_the_codes_patterns() -> None:
    def props(name: str) -> dict[str, Any]:
        return cast(dict[str, Any], contract.load_schema(name)["properties"])

    assert TAG_ID_PATTERN == catalog_module.TAG_ID_PATTERN
    for name in EVENT_SCHEMAS.values():
        assert props(name)["tag_id"]["pattern"] == TAG_ID_PATTERN
    for name in ("payload.tag.updated.json", "payload.tag.update_failed.json"):
        assert props(name)["sku"]["pattern"] == catalog_module.SKU_PATTERN
        assert props(name)["hash"]["pattern"] == "^[0-9a-f]{16}$"
    discovered = props("payload.tag.discovered.json")
    assert discovered["base_station"]["pattern"] == ID_PATTERN
    assert discovered["type"]["anyOf"][0]["enum"] == [t.name for t in TAG_TYPES.values()]
    assert props("command.tag.flash.json")["colour"]["enum"] == list(COLOURS)
    assert list(COLOURS) == list(get_args(TagFlashPayload.model_fields["colour"].annotation))


# -- command schemas against the pydantic models --------------------------------------------------

_FACETS = ("const", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
           "default", "additionalProperties")


def _canon(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The validation-relevant content of a schema node: types as a set, constraints, nested properties.

    Pydantic spells `X | None` as anyOf [X, null] and names its $defs after the classes; the contract
    spells it as a type list and names $defs its own way. Both reduce to the same canonical form.
    """
    if "$ref" in node:
        node = _resolve(node["$ref"], root)
    out: dict[str, Any] = {}
    types: set[str] = set()
    for branch in [node, *(_resolve(b["$ref"], root) if "$ref" in b else b for b in node.get("anyOf", []))]:
        declared = branch.get("type", [])
        types.update([declared] if isinstance(declared, str) else declared)
        out.update({k: branch[k] for k in _FACETS if k in branch})
        if "items" in branch:
            out["items"] = _canon(branch["items"], root)
        if "properties" in branch:
            out["properties"] = {k: _canon(v, root) for k, v in branch["properties"].items()}
            out["required"] = sorted(branch.get("required", []))
    out["type"] = sorted(types)
    return out


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    assert ref.startswith("#/$defs/"), ref
    return cast(dict[str, Any], root["$defs"][ref.removeprefix("#/$defs/")])


@pytest.mark.parametrize(("name", "model"), list(COMMAND_MODELS.items()))
def test_command_schemas_are_the_models_schemas(name: str, model: type[BaseModel]) -> None:
    ours = contract.load_schema(name)
    theirs = model.model_json_schema()
    assert _canon(ours, ours) == _canon(theirs, theirs)


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


def _cases() -> Iterator[tuple[str, Any]]:
    flash = "command.tag.flash.json"
    for payload in [
        {"tag_id": TAG_A},
        {"tag_id": TAG_A, "colour": "red", "count": 1},
        {"tag_id": TAG_A, "colour": "white", "count": 60},
        *({"tag_id": TAG_A, "colour": c} for c in COLOURS),
        {"tag_id": TAG_A, "count": 5.0},  # an integral number is an integer in both
        {},
        {"tag_id": None},
        {"tag_id": TAG_A.upper()},
        {"tag_id": TAG_A[:-1]},
        {"tag_id": TAG_A + "0"},
        {"tag_id": TAG_A + "\n"},
        {"tag_id": "4a3f0c12-d5e6b78"},
        {"tag_id": int(TAG_A, 16)},
        {"tag_id": TAG_A, "colour": "yellow"},
        {"tag_id": TAG_A, "colour": "Red"},
        {"tag_id": TAG_A, "colour": None},
        {"tag_id": TAG_A, "colour": 1},
        {"tag_id": TAG_A, "count": 0},
        {"tag_id": TAG_A, "count": 61},
        {"tag_id": TAG_A, "count": -1},
        {"tag_id": TAG_A, "count": 2.5},
        {"tag_id": TAG_A, "count": None},
        {"tag_id": TAG_A, "count": [5]},
        {"tag_id": TAG_A, "period_ms": 100},
        {"tag_ids": [TAG_A]},
    ]:
        yield flash, payload
    refresh = "command.tag.refresh.json"
    for payload in [
        {},
        {"tag_ids": None},
        {"tag_ids": []},
        {"tag_ids": [TAG_A, TAG_B]},
        {"tag_ids": ["not a tag", ""]},  # not checked: counted as unchanged
        {"tag_ids": [TAG_A] * 10_000},
        {"tag_ids": [TAG_A] * 10_001},
        {"tag_ids": TAG_A},
        {"tag_ids": [1]},
        {"tag_ids": [None]},
        {"tag_ids": {"a": TAG_A}},
        {"tag_id": TAG_A},
        {"tag_ids": [], "all": True},
    ]:
        yield refresh, payload
    pair = "command.tag.pair.json"
    for payload in [
        {"pairs": [{"tag_id": TAG_A, "sku": "6901234567892"}]},
        {"pairs": [{"tag_id": TAG_A, "sku": None}]},
        {"pairs": [{"tag_id": TAG_A}]},
        {"pairs": [{"tag_id": TAG_A, "sku": "not a sku"}]},  # reported in problems, not refused
        {"pairs": [{"tag_id": TAG_A, "sku": ""}]},
        {"pairs": [{"tag_id": TAG_A, "sku": "A"}] * 10_000},
        {"pairs": [{"tag_id": TAG_A, "sku": "A"}] * 10_001},
        {"pairs": []},
        {},
        {"pairs": None},
        {"pairs": {"tag_id": TAG_A}},
        {"pairs": [TAG_A]},
        {"pairs": [None]},
        {"pairs": [{"sku": "A"}]},
        {"pairs": [{"tag_id": TAG_A.upper(), "sku": "A"}]},
        {"pairs": [{"tag_id": TAG_A + "\n", "sku": "A"}]},
        {"pairs": [{"tag_id": TAG_A, "sku": 5}]},
        {"pairs": [{"tag_id": TAG_A, "sku": "A", "rotation": 90}]},
        {"pairs": [{"tag_id": TAG_A, "sku": "A"}], "replace_all": True},
    ]:
        yield pair, payload


@pytest.mark.parametrize(("name", "payload"), list(_cases()))
def test_command_schemas_agree_with_the_models(name: str, payload: Any) -> None:
    assert _schema_accepts(name, payload) == _accepts(COMMAND_MODELS[name], payload)


@pytest.mark.parametrize("count", ["5", True])
def test_the_schema_is_stricter_than_the_models_lax_coercion(count: object) -> None:
    # The contract says `count` is a JSON integer. TagFlashPayload is a lax pydantic model, which today
    # also takes "5" (and true as 1); the schema does not promise that, so the cloud must not rely on it.
    assert not _schema_accepts("command.tag.flash.json", {"tag_id": TAG_A, "count": count})


def test_tag_commands_validate_in_their_envelopes() -> None:
    validate_command({"command_id": "c-1", "type": "tag.flash", "payload": {"tag_id": TAG_A, "colour": "red"}})
    validate_command({"command_id": "c-2", "type": "tag.refresh"})
    validate_command({"command_id": "c-3", "type": "tag.pair", "payload": {"pairs": [{"tag_id": TAG_A}]}})
    for doc, path in [
        ({"command_id": "c-4", "type": "tag.flash"}, "$.payload"),
        ({"command_id": "c-5", "type": "tag.flash", "payload": {"tag_id": TAG_A, "count": 99}}, "$.payload.count"),
        ({"command_id": "c-6", "type": "tag.refresh", "payload": {"tag_ids": "all"}}, "$.payload.tag_ids"),
        ({"command_id": "c-7", "type": "tag.pair", "payload": {"pairs": [{"tag_id": "x"}]}},
         "$.payload.pairs[0].tag_id"),
    ]:
        with pytest.raises(ContractError) as info:
            validate_command(doc)
        assert info.value.path == path, info.value


def test_how_many_ids_fit_the_default_command_size() -> None:
    # command.tag.refresh.json and command.tag.pair.json give these numbers: keep them honest.
    for separators in ((", ", ": "), (",", ":")):  # json.dumps' default, and compact
        def size(doc: Any, separators: tuple[str, str] = separators) -> int:
            return len(json.dumps(doc, separators=separators))

        one_id = size([TAG_A] * 2) - size([TAG_A])
        assert 3200 <= 65536 // one_id <= 3500
        pairing = {"tag_id": TAG_A, "sku": "6901234567892"}
        one_pair = size([pairing] * 2) - size([pairing])
        assert 1100 <= 65536 // one_pair <= 1300
    assert "3300" in contract.load_schema("command.tag.refresh.json")["properties"]["tag_ids"]["description"]
    assert "1200" in contract.load_schema("command.tag.pair.json")["properties"]["pairs"]["description"]


# -- bad event payloads ---------------------------------------------------------------------------

GOOD: dict[str, dict[str, Any]] = {
    "tag.updated": {"tag_id": TAG_A, "sku": "A-1", "hash": "9c1e5b0a77d2f341", "bytes": 100, "attempts": 1,
                    "duration_ms": 0},
    "tag.update_failed": {"tag_id": TAG_A, "sku": None, "hash": "9c1e5b0a77d2f341", "reason": "busy",
                          "attempts": 6},
    "tag.discovered": {"tag_id": TAG_A, "type": "2.9-bwr", "base_station": "bs1", "firmware": 0},
    "tag.low_battery": {"tag_id": TAG_A, "battery_mv": 2300, "threshold_mv": 2450},
    "tag.button": {"tag_id": TAG_A, "button": 0},
}


_DROP = object()  # a field to leave out


def _with(event_type: str, **changes: Any) -> dict[str, Any]:
    doc = dict(GOOD[event_type])
    for key, value in changes.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize("event_type", list(GOOD))
def test_the_good_payloads_pass(event_type: str) -> None:
    validate(EVENT_SCHEMAS[event_type], GOOD[event_type])


@pytest.mark.parametrize(
    ("event_type", "payload", "path"),
    [
        ("tag.updated", _with("tag.updated", tag_id=TAG_A.upper()), "$.payload.tag_id"),
        ("tag.updated", _with("tag.updated", tag_id=TAG_A + "\n"), "$.payload.tag_id"),
        ("tag.updated", _with("tag.updated", sku="bad sku"), "$.payload.sku"),
        ("tag.updated", _with("tag.updated", sku=_DROP), "$.payload"),
        ("tag.updated", _with("tag.updated", hash=None), "$.payload.hash"),
        ("tag.updated", _with("tag.updated", hash="9c1e5b0a77d2f34"), "$.payload.hash"),
        ("tag.updated", _with("tag.updated", bytes=0), "$.payload.bytes"),
        ("tag.updated", _with("tag.updated", attempts=0), "$.payload.attempts"),
        ("tag.updated", _with("tag.updated", duration_ms=1.5), "$.payload.duration_ms"),
        ("tag.updated", _with("tag.updated", shown="9c1e5b0a77d2f341"), "$.payload"),
        ("tag.update_failed", _with("tag.update_failed", reason=""), "$.payload.reason"),
        ("tag.update_failed", _with("tag.update_failed", reason=None), "$.payload.reason"),
        ("tag.update_failed", _with("tag.update_failed", attempts="6"), "$.payload.attempts"),
        ("tag.update_failed", _with("tag.update_failed", hash=_DROP), "$.payload"),
        ("tag.discovered", _with("tag.discovered", type="2.9-BWR"), "$.payload.type"),
        ("tag.discovered", _with("tag.discovered", type="0x7"), "$.payload.type"),
        ("tag.discovered", _with("tag.discovered", type=None), "$.payload.type"),
        ("tag.discovered", _with("tag.discovered", base_station="bs 1"), "$.payload.base_station"),
        ("tag.discovered", _with("tag.discovered", firmware=-1), "$.payload.firmware"),
        ("tag.discovered", _with("tag.discovered", firmware=65536), "$.payload.firmware"),
        ("tag.low_battery", _with("tag.low_battery", battery_mv=2.3), "$.payload.battery_mv"),
        ("tag.low_battery", _with("tag.low_battery", threshold_mv=0), "$.payload.threshold_mv"),
        ("tag.low_battery", _with("tag.low_battery", threshold_mv=_DROP), "$.payload"),
        ("tag.button", _with("tag.button", button=256), "$.payload.button"),
        ("tag.button", _with("tag.button", button="1"), "$.payload.button"),
        ("tag.button", _with("tag.button", pressed=True), "$.payload"),
    ],
)
def test_bad_tag_payloads_are_refused_with_the_path(event_type: str, payload: dict[str, Any], path: str) -> None:
    event = {"v": 1, "event_id": "019ad2c4-5b2a-7c3d-9e41-2f6a8b0c1d2e", "seq": 1, "boot": 1, "store_id": STORE,
             "type": event_type, "ts": "2026-11-22T18:13:00.123Z", "payload": payload}
    with pytest.raises(ContractError) as info:
        validate_event(event)
    assert (info.value.schema, info.value.path) == (EVENT_SCHEMAS[event_type], path)


# -- the real LabelService ------------------------------------------------------------------------


class _InlineRenderer:
    """Stands in for the RenderPool: a deterministic picture of the right size per content, no processes."""

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        results = []
        for request in requests:
            size = tag_type(request.type_code).raw_bytes
            seed = hashlib.sha256(repr((request.content, request.type_code, request.scan_url)).encode()).digest()
            raw = (seed * (size // len(seed) + 1))[:size]
            results.append(RenderResult(raw, picture_hash(raw)))
        return results


class _Sink:
    """The service's event bus: records what it is given and stores it in the real outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: list[tuple[str, dict[str, Any]]] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))
        await self.outbox.publish(event_type, payload)

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        self.states.append((device_id, state))
        await self.outbox.put_state(device_id, state)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]


@dataclass
class _Station:
    """A base station for tag.flash only: answers LED_FLASH with `status`, or not at all."""

    status: int | None

    async def led_flash(self, tag: bytes, *, colour: int, count: int, period_ms: int) -> int:
        if self.status is None:
            raise TimeoutError
        return self.status


@dataclass
class _Rig:
    db: Database
    outbox: Outbox
    catalog: ProductCatalog
    labels: LabelService
    sink: _Sink
    client: BaseStationClient
    intake: CommandIntake


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[_Rig]:
    db = Database(tmp_path / "data")
    outbox = Outbox(db, TOPICS, max_bytes=64 * 1024 * 1024)
    await outbox.open()
    catalog = ProductCatalog(db)
    sink = _Sink(outbox)

    def content(sku: str) -> LabelContent | None:
        product = catalog.get(sku)
        return None if product is None else product_to_content(product, "zh_CN")

    labels = LabelService(
        db, content=content, events=sink, renderer=cast(RenderPool, _InlineRenderer()),
        settings=LabelSettings(low_battery_mv=2450, max_attempts=2),
    )
    client = labels.add_station("bs1", "socket://127.0.0.1:9")  # never run: messages are fed by hand
    connect_catalog(labels, catalog)
    registry = CommandRegistry()
    register_label_commands(registry, labels, catalog)
    intake = CommandIntake(db, outbox, registry)
    yield _Rig(db, outbox, catalog, labels, sink, client, intake)
    db.close()


async def _settle(labels: LabelService) -> None:
    """Wait for the tasks the service started (event handling, transfers) to finish."""
    for _ in range(100):
        pending = [t for t in labels._tasks if not t.done()]
        if not pending:
            return
        await asyncio.wait(pending, timeout=5)
    raise AssertionError("label tasks did not settle")


def _feed(rig: _Rig, *messages: Any) -> None:
    for msg in messages:
        rig.client._on_message(URGENT, msg.to_bytes())


def _checkin(tag: str, *, type_code: int = 0x03, battery_mv: int = 2950, shown: bytes = bytes(8)) -> TagCheckin:
    return TagCheckin(bytes.fromhex(tag), type_code, battery_mv, -35, -61, 200, 263, shown, 0)


async def _command(
    rig: _Rig, command_id: str, command_type: str, payload: dict[str, Any], *, valid: bool = True
) -> dict[str, Any]:
    command = {"command_id": command_id, "type": command_type, "payload": payload}
    if valid:
        validate_command(command)
    else:
        with pytest.raises(ContractError):
            validate_command(command)
    answer = await rig.intake.handle(json.dumps(command).encode())
    validate("payload.command.result.json", answer)
    if answer["status"] == "ok":
        jsonschema.validate(answer["result"], RESULT_SCHEMAS[command_type])
    return answer


def _job(rig: _Rig, tag_id: str) -> tuple[str, int, str]:
    row = rig.db.read(lambda c: c.execute(
        "SELECT target_hash, attempts, state FROM tag_jobs WHERE tag_id = ?", (tag_id,)).fetchone())
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


async def _transfer(rig: _Rig, tag_id: str, answer: Any) -> None:
    """Start the queued job's transfer the way the sender does, then let the base station answer it."""
    target, attempts, _ = _job(rig, tag_id)
    await rig.labels._start(rig.client, tag_id, target, attempts)
    transfer = rig.labels._in_flight["bs1"][tag_id]
    _feed(rig, answer(transfer.xfer, bytes.fromhex(tag_id), bytes.fromhex(target)))
    await _settle(rig.labels)


def _check_outbox(rig: _Rig) -> None:
    """Everything the service stored, as the wire bytes the cloud gets, matches the contract."""
    for message in rig.outbox.read_events(0, 10_000):
        validate_event(message.body)
    for state in rig.outbox.read_states(10_000):
        validate("state.json", state.body)
        body = json.loads(state.body)
        assert state.topic == f"retail/v1/{STORE}/state/{body['device_id']}"
        jsonschema.validate(body["state"], TAG_STATE_SCHEMA)


async def test_checkin_discovery_and_button_events_and_tag_state(rig: _Rig) -> None:
    _feed(
        rig,
        _checkin(TAG_A, battery_mv=2300, shown=bytes.fromhex("0f0e0d0c0b0a0908")),  # new and low
        TagDiscovered(bytes.fromhex(TAG_B), 0x2A, 7),  # a model the agent does not know
        ButtonPress(bytes.fromhex(TAG_A), 1),
    )
    await _settle(rig.labels)
    _feed(rig, _checkin(TAG_A, battery_mv=2310), _checkin(TAG_B, type_code=0x2A))  # still low: no second event
    await _settle(rig.labels)

    assert sorted(t for t, _ in rig.sink.events) == [
        "tag.button", "tag.discovered", "tag.discovered", "tag.low_battery",
    ]
    for event_type, payload in rig.sink.events:
        validate(EVENT_SCHEMAS[event_type], payload)
    assert sorted(rig.sink.of("tag.discovered"), key=lambda p: p["tag_id"]) == [
        {"tag_id": TAG_A, "type": "2.9-bwr", "base_station": "bs1", "firmware": 263},
        {"tag_id": TAG_B, "type": "0x2a", "base_station": "bs1", "firmware": 7},
    ]
    assert rig.sink.of("tag.low_battery") == [{"tag_id": TAG_A, "battery_mv": 2300, "threshold_mv": 2450}]
    assert rig.sink.of("tag.button") == [{"tag_id": TAG_A, "button": 1}]

    # State: one per tag per check-in here (the picture changed, or the first one), coalesced otherwise.
    assert sorted(d for d, _ in rig.sink.states) == [f"tag-{TAG_A}", f"tag-{TAG_A}", f"tag-{TAG_B}"]
    for _, state in rig.sink.states:
        jsonschema.validate(state, TAG_STATE_SCHEMA)
    first = rig.sink.states[0][1]
    assert first["kind"] == "tag" and first["type"] == "2.9-bwr" and first["sku"] is None
    assert first["hash"] == "0f0e0d0c0b0a0908" and first["battery_mv"] == 2300 and first["temperature_c"] == -3.5
    [state_b] = [s for d, s in rig.sink.states if d == f"tag-{TAG_B}"]
    assert state_b["type"] == "0x2a"  # an unknown model is named by its code, as in tag.discovered
    _feed(rig, _checkin(TAG_A, battery_mv=2310))  # same picture, same product, soon after: no state
    await _settle(rig.labels)
    assert len(rig.sink.states) == 3
    _check_outbox(rig)


async def test_updates_confirmed_and_failed_and_the_tag_commands(rig: _Rig) -> None:
    _feed(rig, _checkin(TAG_A), _checkin(TAG_B), _checkin(TAG_C, type_code=0x01))
    await _settle(rig.labels)
    await rig.catalog.upsert([
        Product.model_validate({"sku": "6901234567892", "name": "东方树叶 茉莉花茶 500ml", "price": "4.50",
                                "currency": "CNY"}),
        Product.model_validate({"sku": "A-1002", "name": "Organic apples", "price": "12.80", "currency": "CNY"}),
    ])

    # tag.pair: applied pairs queue a picture each; a bad sku, an unknown product and an unknown tag are problems.
    answer = await _command(rig, "c-pair", "tag.pair", {"pairs": [
        {"tag_id": TAG_A, "sku": "6901234567892"},
        {"tag_id": TAG_B, "sku": "A-1002"},
        {"tag_id": TAG_C, "sku": "no such sku"},
        {"tag_id": TAG_C, "sku": "B-404"},
        {"tag_id": TAG_C, "sku": "A-1002"},
        {"tag_id": "ffffffffffffffff", "sku": "A-1002"},
    ]})
    assert answer["status"] == "ok"
    result = answer["result"]
    assert result["changed"] == [TAG_A, TAG_B, TAG_C] and result["unchanged"] == 0
    assert [(p["index"], p["field"]) for p in result["problems"]] == [(2, "sku"), (3, "sku"), (5, "tag_id")]
    await _settle(rig.labels)
    assert {_job(rig, t)[2] for t in (TAG_A, TAG_B, TAG_C)} == {"queued"}

    # Confirmed: the tag reports exactly the target hash.
    await _transfer(rig, TAG_A, TransferDone)
    [updated] = rig.sink.of("tag.updated")
    target, attempts, state = _job(rig, TAG_A)
    assert state == "confirmed" and updated["hash"] == target and updated["attempts"] == attempts == 1
    assert updated["tag_id"] == TAG_A and updated["sku"] == "6901234567892" and updated["bytes"] > 0
    record = rig.labels.registry.get(TAG_A)
    assert record is not None and record.current_hash == target
    # A check-in the tag sent before the update (the old picture), overtaken by the confirmation on the urgent
    # channel: it does not undo the confirmation, and nothing is sent again.
    _feed(rig, _checkin(TAG_A))
    await _settle(rig.labels)
    record = rig.labels.registry.get(TAG_A)
    assert record is not None and record.current_hash == target and _job(rig, TAG_A)[2] == "confirmed"
    # Whatever else the tag reports is believed: a picture we did not send is made right.
    _feed(rig, _checkin(TAG_A, shown=b"\x11" * 8))
    await _settle(rig.labels)
    record = rig.labels.registry.get(TAG_A)
    assert record is not None and record.current_hash == "11" * 8 and _job(rig, TAG_A)[2] == "queued"
    await _transfer(rig, TAG_A, TransferDone)
    assert _job(rig, TAG_A)[2] == "confirmed"

    # Not confirmed: the tag shows another picture (retried), then the base station gives up: update_failed.
    def wrong(xfer: int, tag: bytes, target: bytes) -> TransferDone:
        return TransferDone(xfer, tag, bytes(b ^ 0xFF for b in target))

    def out_of_range(xfer: int, tag: bytes, _target: bytes) -> TransferFailed:
        return TransferFailed(xfer, tag, FailReason.OUT_OF_RANGE)

    await _transfer(rig, TAG_B, wrong)
    assert rig.sink.of("tag.update_failed") == [] and _job(rig, TAG_B)[2] == "queued"
    await _transfer(rig, TAG_B, out_of_range)
    [failed] = rig.sink.of("tag.update_failed")
    assert failed == {"tag_id": TAG_B, "sku": "A-1002", "hash": _job(rig, TAG_B)[0], "reason": "out_of_range",
                      "attempts": 2}
    assert _job(rig, TAG_B)[2] == "failed"

    # The wrong-hash reason on the last attempt, the tag having been unpaired meanwhile: sku null.
    await _transfer(rig, TAG_C, out_of_range)
    answer = await _command(rig, "c-unpair", "tag.pair", {"pairs": [{"tag_id": TAG_C}]})
    assert answer["result"] == {"changed": [TAG_C], "unchanged": 0, "problems": []}
    await _settle(rig.labels)
    await _transfer(rig, TAG_C, wrong)
    last = rig.sink.of("tag.update_failed")[-1]
    assert last["tag_id"] == TAG_C and last["sku"] is None and last["attempts"] == 2
    assert re.fullmatch(r"tag reports hash [0-9a-f]{16}, expected [0-9a-f]{16}", last["reason"])

    for event_type, payload in rig.sink.events:
        validate(EVENT_SCHEMAS[event_type], payload)

    # tag.refresh over all tags: TAG_A shows its picture, TAG_B's failed update is queued again, TAG_C is unpaired.
    answer = await _command(rig, "c-refresh-all", "tag.refresh", {})
    assert answer["result"] == {"queued": 1, "unchanged": 2, "unknown": []}
    assert _job(rig, TAG_B)[2] == "queued"
    answer = await _command(
        rig, "c-refresh-unknown", "tag.refresh", {"tag_ids": ["ffffffffffffffff", "x", "x", TAG_A]}
    )
    assert answer["result"] == {"queued": 0, "unchanged": 1, "unknown": ["ffffffffffffffff", "x"]}

    # tag.flash and its own error codes.
    await rig.labels.registry.ensure("00000000000000d1", 0x03, "bs-ok")
    await rig.labels.registry.ensure("00000000000000d2", 0x03, "bs-busy")
    await rig.labels.registry.ensure("00000000000000d3", 0x03, "bs-gone")
    await rig.labels.registry.ensure("00000000000000d4", 0x03, "bs-not-configured")
    rig.labels.stations["bs-ok"] = cast(BaseStationClient, _Station(0))
    rig.labels.stations["bs-busy"] = cast(BaseStationClient, _Station(2))
    rig.labels.stations["bs-gone"] = cast(BaseStationClient, _Station(None))
    answer = await _command(rig, "c-flash", "tag.flash", {"tag_id": "00000000000000d1", "colour": "red"})
    assert answer["result"] == {"tag_id": "00000000000000d1", "flashing": True}
    for command_id, tag_id, code in [
        ("c-flash-unknown", "ffffffffffffffff", "unknown_tag"),
        ("c-flash-nostation", "00000000000000d4", "unknown_tag"),
        ("c-flash-busy", "00000000000000d2", "refused"),
        ("c-flash-gone", "00000000000000d3", "base_station_unreachable"),
    ]:
        answer = await _command(rig, command_id, "tag.flash", {"tag_id": tag_id})
        assert answer["status"] == "error" and answer["error"]["code"] == code, answer
    answer = await _command(rig, "c-flash-bad", "tag.flash", {"tag_id": TAG_A, "count": 0}, valid=False)
    assert answer["error"]["code"] == "invalid_payload"

    _check_outbox(rig)
    topics = {m.topic for m in rig.outbox.read_events(0, 10_000)}
    assert topics == {f"retail/v1/{STORE}/events/{t}" for t in ("tag.discovered", "tag.updated", "tag.update_failed")
                      } | {f"retail/v1/{STORE}/commands/result"}


# -- the contract page ----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)


def test_the_contract_page_shows_every_tag_message() -> None:
    text = DOC.read_text(encoding="utf-8")
    examples = DOC_EXAMPLE_RE.findall(text)
    for name in EVENT_SCHEMAS.values():
        assert any(target == name for target, _ in examples), f"no validated example of {name}"
    commands = [json.loads(body) for target, body in examples if target == "command"]
    for command_type in ("tag.flash", "tag.refresh", "tag.pair"):
        assert any(c["type"] == command_type for c in commands), f"no validated example of {command_type}"
        assert f"`{command_type}`" in text
    results = [json.loads(body) for target, body in examples if target == "payload.command.result.json"]
    for result in results:
        if result.get("status") == "ok" and result["type"] in RESULT_SCHEMAS:
            jsonschema.validate(result["result"], RESULT_SCHEMAS[result["type"]])
    states = [json.loads(body) for target, body in examples if target == "state.json"]
    tag_states = [s for s in states if s["device_id"].startswith("tag-")]
    assert tag_states, "no validated example of a tag state"
    for state in tag_states:
        jsonschema.validate(state["state"], TAG_STATE_SCHEMA)
    for field in TAG_STATE_SCHEMA["properties"]:
        assert f"`{field}`" in text
    for event_type in EVENT_SCHEMAS:
        assert f"`{event_type}`" in text
    for code in ("unknown_tag", "base_station_unreachable", "refused"):
        assert f"`{code}`" in text


def test_tag_pairing_model_fields_are_the_schemas() -> None:
    pairing = contract.load_schema("command.tag.pair.json")["$defs"]["pairing"]
    assert set(pairing["properties"]) == set(TagPairing.model_fields)
