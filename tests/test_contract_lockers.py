"""The pickup-locker part of the cloud contract against what the code really produces and accepts.

Events come out of a real LockerService on a real SQLite file, driving the Kerong emulator over a pty with
scripted people (as tests/test_lockers.py does); door openings go through the real DoorOpener into the real
hash-chained AuditLog and on to the cloud through the agent's own `AuditToCloud`, so `audit.door_opened` is
what the agent sends. Every payload is validated against its schema and, wrapped by the real envelope
renderer, as a whole event. The two commands run through a real CommandIntake; their JSON Schemas are
checked against the pydantic models, structurally and case by case.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
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
from cloud_link.events import EventClass, classify, encode_payload, new_event_id, render_envelope
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.lockers.kerong import KerongBoard
from edge_agent.commands.lockers import (
    ORDER_ID_PATTERN,
    PickupCancelPayload,
    PickupCreatePayload,
    register_locker_commands,
)
from edge_agent.config import ID_PATTERN
from edge_agent.services.audit import AUDIT_KINDS, GENESIS_HASH, AuditLog, canonical_json, row_hash
from edge_agent.services.doors import DoorOpener
from edge_agent.services.lockers import DAY_MS, SIZES, CollectStatus, CompartmentSpec, LockerService
from edge_agent.services.pickup_codes import PickupCodes
from edge_agent.storage import Database
from edge_agent.wiring.lockers import AuditToCloud, assemble_locker_service
from firmware_bridge.emulators.kerong import DEFAULT_LINE_RATE, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.kerong.bus import KerongBus
from tests.test_contract_labels import _canon
from tests.test_lockers import FAST, KEY, LOCK, LOOK, PLACE, SPECS, T0, TAKE, Clock, alarm_loop

# jsonschema ships no type stubs; imported the way cloud_link.contract does, to keep mypy --strict clean.
jsonschema: Any = importlib.import_module("jsonschema")

STORE = "sh-0042"
TOPICS = Topics("retail/v1", STORE)

EVENT_SCHEMAS = {
    t: f"payload.{t}.json"
    for t in (
        "pickup.ready", "pickup.collected", "pickup.not_collected", "pickup.load_failed", "pickup.reminder",
        "pickup.expired", "pickup.cancelled", "pickup.retrieved", "pickup.retrieval_failed",
        "alarm.door_forced", "alarm.door_left_open", "alarm.lock_jammed", "alarm.state_mismatch",
        "alarm.code_guessing", "audit.door_opened",
    )
}
# Optional fields the agent leaves out rather than sending null (documented on the contract page).
OPTIONAL = {"payload.pickup.ready.json": {"code"}, "payload.alarm.state_mismatch.json": {"order_id"}}
# Where an order waits: a locker's compartment, or a pickup shelf's slot and shelf (exactly one of the two forms).
PLACED = ("ready", "collected", "expired", "cancelled", "retrieved", "reminder")
PLACE_FIELDS = {"compartment", "slot", "shelf"}
PLACE_ONE_OF = [{"required": ["compartment"]}, {"required": ["slot", "shelf"]}]
SHELF_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
SLOT_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}-[0-9]{1,3}$"
for _t in PLACED:
    OPTIONAL[f"payload.pickup.{_t}.json"] = OPTIONAL.get(f"payload.pickup.{_t}.json", set()) | PLACE_FIELDS

# The shipped payload.pickup.ready.json must be exactly this (a second, independent statement of the contract).
PICKUP_READY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:store-edge-agent:cloud-contract:v1:payload.pickup.ready.json",
    "title": "Payload of a pickup.ready event",
    "description": "The parcel is in its compartment and the door closed with an item inside "
    "(edge_agent.services.lockers.LockerService); the customer can collect it. Critical class. `code` is present "
    "only when the agent issued the code (pickup.create without one); a code the cloud issued is never sent back. "
    "An order on a pickup shelf carries slot and shelf instead of compartment (exactly one of the two forms).",
    "type": "object",
    "required": ["order_id", "hold_until"],
    "oneOf": PLACE_ONE_OF,
    "additionalProperties": False,
    "properties": {
        "order_id": {"description": "The order (order_id of pickup.create).", "type": "string",
                     "pattern": ORDER_ID_PATTERN},
        "compartment": {"description": "The compartment the parcel is in.", "type": "string", "pattern": ID_PATTERN},
        "slot": {"description": "A pickup-shelf order: the slot it waits in, \"<shelf>-<position>\" "
                 "(edge_agent.services.pickup_shelves); instead of compartment.", "type": "string",
                 "pattern": SLOT_PATTERN},
        "shelf": {"description": "A pickup-shelf order: the shelf of its slot; with slot, instead of compartment.",
                  "type": "string", "pattern": SHELF_PATTERN},
        "hold_until": {"description": "End of the hold: UTC, Unix epoch milliseconds (an integer, not a time "
                       "string).", "type": "integer", "minimum": 0},
        "code": {"description": "The customer's pickup code, only when the agent issued it: 8-12 digits (leading "
                 "zeros kept). It is sent once; handle it as a secret.", "type": "string",
                 "pattern": "^[0-9]{8,12}$"},
    },
    "examples": [
        {"order_id": "ORD-20261122-0042", "compartment": "A-12", "hold_until": 1795464000000, "code": "04718263"},
        {"order_id": "ORD-20261122-0043", "compartment": "A-03", "hold_until": 1795464000000},
        {"order_id": "ORD-20261122-0051", "slot": "B-7", "shelf": "B", "hold_until": 1795464000000,
         "code": "04718263"},
    ],
}

COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "command.pickup.create.json": PickupCreatePayload,
    "command.pickup.cancel.json": PickupCancelPayload,
}
ISO_Z = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$"
RESULT_SCHEMAS: dict[str, dict[str, Any]] = {
    "pickup.create": {
        "type": "object", "additionalProperties": False, "required": ["order_id", "hold_until", "code_issued_by"],
        "properties": {
            "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
            "hold_until": {"type": "string", "pattern": ISO_Z},
            "code_issued_by": {"enum": ["cloud", "agent"]},
        },
    },
    "pickup.cancel": {
        "type": "object", "additionalProperties": False, "required": ["order_id", "state"],
        "properties": {"order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
                       "state": {"enum": ["cancelled", "retrieval"]}},
    },
}


def _schema(name: str) -> dict[str, Any]:
    if name == "payload.pickup.ready.json" and not contract.has_schema(name):
        return PICKUP_READY_SCHEMA
    return contract.load_schema(name)


def _check_payload(name: str, payload: Any) -> None:
    """The contract's validator when the schema ships; the same checks (ECMA patterns aside) otherwise."""
    if contract.has_schema(name):
        validate(name, payload)
        return
    cls = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"pattern": contract._ecma_pattern_keyword}  # ECMA `$`, as validate()
    )
    error = jsonschema.exceptions.best_match(cls(_schema(name)).iter_errors(payload))
    if error is not None:
        raise ContractError(name, "$" + str(error.json_path)[1:], str(error.message))


# -- the schema files -----------------------------------------------------------------------------


def test_the_locker_schemas_are_shipped_and_valid() -> None:
    names = set(contract.schema_names())
    shipped = [n for n in EVENT_SCHEMAS.values() if n != "payload.pickup.ready.json"]
    assert set(shipped) | set(COMMAND_MODELS) <= names
    if "payload.pickup.ready.json" in names:
        assert contract.load_schema("payload.pickup.ready.json") == PICKUP_READY_SCHEMA
    jsonschema.Draft202012Validator.check_schema(PICKUP_READY_SCHEMA)
    for name in [*EVENT_SCHEMAS.values(), *COMMAND_MODELS]:
        schema = _schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"] == f"urn:store-edge-agent:cloud-contract:v1:{name}"
        assert schema["examples"]
        for example in schema["examples"]:
            _check_payload(name, example)


@pytest.mark.parametrize("name", list(EVENT_SCHEMAS.values()))
def test_event_schemas_are_strict_and_require_every_field_but_the_documented_ones(name: str) -> None:
    schema = _schema(name)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - set(schema["required"]) == OPTIONAL.get(name, set())


@pytest.mark.parametrize("event_type", list(EVENT_SCHEMAS))
def test_locker_events_are_critical(event_type: str) -> None:
    assert classify(event_type) is EventClass.CRITICAL


def test_schema_patterns_are_the_codes_patterns() -> None:
    for name in EVENT_SCHEMAS.values():
        props = _schema(name)["properties"]
        if name == "payload.audit.door_opened.json":
            continue  # the audit log's own rule: 1-200 characters (edge_agent.services.audit.TEXT_MAX)
        if "order_id" in props:
            assert props["order_id"]["pattern"] == ORDER_ID_PATTERN, name
        if "compartment" in props:
            assert props["compartment"]["pattern"] == ID_PATTERN, name
    for name in COMMAND_MODELS:
        assert _schema(name)["properties"]["order_id"]["pattern"] == ORDER_ID_PATTERN
    create = _schema("command.pickup.create.json")["properties"]
    assert create["size"]["enum"] == list(SIZES) == list(get_args(PickupCreatePayload.model_fields["size"].annotation))
    audit = _schema("payload.audit.door_opened.json")["properties"]
    assert audit["kind"]["enum"] == list(AUDIT_KINDS)


# -- events from the real service -----------------------------------------------------------------


class _Sink:
    """Both the locker service's event sink and the bus `AuditToCloud` publishes to."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, json.loads(encode_payload(payload))))  # as it goes on the wire

    async def publish(self, event_type: str, payload: dict[str, Any]) -> None:
        await self.publish_event(event_type, payload)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]

    async def wait(self, event_type: str, count: int = 1, timeout: float = 8.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type)) < count:
                await asyncio.sleep(0.02)
        return self.of(event_type)


# A compartment on a board that is not configured: recover reports it unreadable.
GHOST = CompartmentSpec("B-01", "B", "kerong-9", 1, "L", 1, 1)


@dataclass
class _Rig:
    data: Path
    emulator: LockBoardEmulator
    bus: KerongBus
    db: Database
    clock: Clock
    sink: _Sink
    svc: LockerService
    audit: AuditLog

    def person(self, compartment: str, person: Person) -> None:
        self.emulator.set_person(0, LOCK[compartment], person)

    def new_service(self) -> LockerService:
        self.db = Database(self.data)
        self.svc, self.audit = _service(self.db, self.bus, self.clock, self.sink)
        return self.svc


def _service(db: Database, bus: KerongBus, clock: Clock, sink: _Sink) -> tuple[LockerService, AuditLog]:
    boards = {"kerong-0": KerongBoard(bus, 0)}
    audit_log = AuditLog(db, clock=clock)
    audit = AuditToCloud(audit_log, cast(Any, sink))
    svc = assemble_locker_service(
        db, boards, DoorOpener(db, boards, audit), PickupCodes(db, KEY, clock=clock), audit=audit, events=sink,
        timings=FAST, clock=clock,
    )
    return svc, audit_log


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[_Rig]:
    emulator = LockBoardEmulator(1)
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)
    path = tmp_path / "lockers0"
    data = tmp_path / "data"
    data.mkdir()
    async with emulator.running(PtyPort(path, line_rate=DEFAULT_LINE_RATE)):
        bus = KerongBus(str(path), reopen_interval_s=0.1)
        async with bus.running(connect_timeout=5):
            db = Database(data)
            clock, sink = Clock(), _Sink()
            svc, audit = _service(db, bus, clock, sink)
            await svc.add_compartments([*SPECS, GHOST])
            r = _Rig(data, emulator, bus, db, clock, sink, svc, audit)
            try:
                yield r
            finally:
                await r.svc.close()
                r.db.close()


def _check_events(events: list[tuple[str, dict[str, Any]]]) -> None:
    for seq, (event_type, payload) in enumerate(events, start=1):
        name = EVENT_SCHEMAS[event_type]  # a locker event without a schema fails here
        _check_payload(name, payload)
        body = render_envelope(
            event_id=new_event_id(), seq=seq, boot=1, store_id=STORE, event_type=event_type, ts_ms=T0,
            payload_json=encode_payload(payload),
        )
        validate_event(body)


def _check_audit_chain(records: list[dict[str, Any]]) -> None:
    """What the cloud can do with the audit.door_opened events: verify the chain end to end."""
    prev = GENESIS_HASH
    for expected_seq, record in enumerate(records, start=1):
        assert record["seq"] == expected_seq and record["prev_hash"] == prev
        assert record["hash"] == row_hash(
            prev, seq=record["seq"], ts_ms=record["ts_ms"], kind=record["kind"], compartment=record["compartment"],
            actor=record["actor"], order_id=record["order_id"], detail_json=canonical_json(record["detail"]),
        )
        prev = record["hash"]


async def test_the_pickup_flow_emits_what_the_contract_says(rig: _Rig) -> None:
    r = rig
    hold = T0 + 7 * DAY_MS
    # Agent-issued code: pickup.ready carries it; looked at and closed: not_collected; then collected.
    r.person("A-01", PLACE)
    code = await r.svc.create_pickup("ORD-1", "S", hold)
    assert code is not None
    await r.svc.start_load("ORD-1", "staff-1")
    (ready,) = await r.sink.wait("pickup.ready")
    assert ready == {"order_id": "ORD-1", "compartment": "A-01", "hold_until": hold, "code": code}
    r.person("A-01", LOOK)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    await r.sink.wait("pickup.not_collected")
    await r.svc.wait_idle()
    r.person("A-01", TAKE)
    assert (await r.svc.collect("terminal-A", code)).status is CollectStatus.OK
    await r.sink.wait("pickup.collected")
    await r.svc.wait_idle()

    # Cloud-issued code: pickup.ready without it.
    r.person("A-01", PLACE)
    assert await r.svc.create_pickup("ORD-2", "S", hold, "52718390") is None
    await r.svc.start_load("ORD-2", "staff-1")
    ready = (await r.sink.wait("pickup.ready", 2))[1]
    assert ready == {"order_id": "ORD-2", "compartment": "A-01", "hold_until": hold}

    # A load closed empty, then that order cancelled before it was loaded.
    r.person("A-02", LOOK)
    await r.svc.create_pickup("ORD-3", "S", hold)
    assert (await r.svc.start_load("ORD-3", "staff-1")).compartment == "A-02"
    (failed,) = await r.sink.wait("pickup.load_failed")
    assert failed == {"order_id": "ORD-3", "compartment": "A-02", "reason": "empty"}
    await r.svc.wait_idle()
    await r.svc.cancel_pickup("ORD-3")
    assert r.sink.of("pickup.cancelled") == [{"order_id": "ORD-3", "compartment": None, "retrieval": False}]

    # Reminder, expiry (loaded and never loaded), a failed and a successful retrieval.
    await r.svc.create_pickup("ORD-4", "M", hold)
    r.clock.now = hold - DAY_MS + 1
    await r.svc.tick()
    assert r.sink.of("pickup.reminder") == [{"order_id": "ORD-2", "compartment": "A-01", "hold_until": hold}]
    r.clock.now = hold
    await r.svc.tick()
    assert {p["order_id"]: (p["compartment"], p["retrieval"]) for p in r.sink.of("pickup.expired")} == {
        "ORD-2": ("A-01", True), "ORD-4": (None, False)
    }
    r.person("A-01", LOOK)
    await r.svc.start_retrieval("ORD-2", "staff-1")
    (not_out,) = await r.sink.wait("pickup.retrieval_failed")
    assert not_out == {"order_id": "ORD-2", "compartment": "A-01", "reason": "item_inside"}
    await r.svc.wait_idle()
    r.person("A-01", TAKE)
    await r.svc.start_retrieval("ORD-2", "staff-1")
    assert await r.sink.wait("pickup.retrieved") == [{"order_id": "ORD-2", "compartment": "A-01"}]
    await r.svc.wait_idle()

    # A ready order cancelled: it waits for staff.
    r.person("A-01", PLACE)
    await r.svc.create_pickup("ORD-5", "S", r.clock.now + 7 * DAY_MS)
    await r.svc.start_load("ORD-5", "staff-1")
    await r.sink.wait("pickup.ready", 3)
    await r.svc.wait_idle()
    await r.svc.cancel_pickup("ORD-5")
    assert r.sink.of("pickup.cancelled")[1] == {"order_id": "ORD-5", "compartment": "A-01", "retrieval": True}

    # Somebody trying codes at several terminals.
    for terminal in ("t-1", "t-2", "t-3"):
        for i in range(10):
            assert (await r.svc.collect(terminal, f"5{i:07d}")).status is CollectStatus.WRONG
    (guessing,) = r.sink.of("alarm.code_guessing")
    assert guessing["terminals"] == ["t-1", "t-2", "t-3"]

    seen = {t for t, _ in r.sink.events}
    assert seen == {t for t in EVENT_SCHEMAS if t.startswith("pickup.")} | {"alarm.code_guessing",
                                                                           "audit.door_opened"}
    _check_events(r.sink.events)
    records = r.sink.of("audit.door_opened")
    assert [a["kind"] for a in records] == ["staff", "code", "code", "staff", "staff", "staff", "staff", "staff"]
    _check_audit_chain(records)
    assert r.audit.verify().ok and r.audit.verify().rows == len(records)
    assert [a.as_payload() for a in r.audit.records(0, 100)] == records


async def test_the_alarms_emit_what_the_contract_says(rig: _Rig) -> None:
    r = rig
    async with alarm_loop(r.svc):
        r.emulator.force_open(0, LOCK["A-03"])
        (forced,) = await r.sink.wait("alarm.door_forced", timeout=2.0)
        assert forced == {"compartment": "A-03", "order_id": None, "item": False}
        (left,) = await r.sink.wait("alarm.door_left_open")
        assert left["compartment"] == "A-03" and left["commanded"] is False and isinstance(left["open_s"], float)
        r.emulator.close_door(0, LOCK["A-03"])
        r.emulator.set_jammed(0, LOCK["A-01"], True)
        await r.svc.create_pickup("ORD-J", "S", T0 + 7 * DAY_MS)
        await r.svc.start_load("ORD-J", "staff-1")
        (jam,) = await r.sink.wait("alarm.lock_jammed")
        assert jam == {"compartment": "A-01", "order_id": "ORD-J", "during": "load", "after_s": FAST.jam_s}
        (failed,) = await r.sink.wait("pickup.load_failed")
        assert failed["reason"] == "jammed"
    # A restart finding the sensors at odds with the database, and a board that does not answer.
    r.emulator.set_item(0, LOCK["A-02"], True)
    r.emulator.force_open(0, LOCK["A-03"])
    await r.svc.close()
    r.db.close()
    mismatches = await r.new_service().recover()
    assert {(m["compartment"], m["expected"]) for m in mismatches} == {
        ("A-02", "free, empty"), ("A-03", "free, door closed"), ("B-01", "readable")
    }
    assert [m for m in mismatches if m["compartment"] == "B-01"] == [
        {"compartment": "B-01", "expected": "readable", "found": "no answer"}
    ]
    assert r.sink.of("alarm.state_mismatch") == mismatches
    _check_events(r.sink.events)
    records = r.sink.of("audit.door_opened")
    assert [a["kind"] for a in records] == ["uncommanded"]  # the jammed lock never opened
    assert records[0]["detail"] == {"item": False} and records[0]["actor"] is None
    _check_audit_chain(records)


# -- bad event payloads ---------------------------------------------------------------------------

HASH = "3c23c298d9f33be91c116820329e8581672a082b6293e8ca02c2e6ebae1308e4"
GOOD: dict[str, dict[str, Any]] = {
    "pickup.ready": {"order_id": "O-1", "compartment": "A-01", "hold_until": T0, "code": "01234567"},
    "pickup.collected": {"order_id": "O-1", "compartment": "A-01"},
    "pickup.not_collected": {"order_id": "O-1", "compartment": "A-01"},
    "pickup.load_failed": {"order_id": "O-1", "compartment": "A-01", "reason": "timeout"},
    "pickup.reminder": {"order_id": "O-1", "compartment": "A-01", "hold_until": T0},
    "pickup.expired": {"order_id": "O-1", "compartment": None, "hold_until": T0, "retrieval": False},
    "pickup.cancelled": {"order_id": "O-1", "compartment": "A-01", "retrieval": True},
    "pickup.retrieved": {"order_id": "O-1", "compartment": "A-01"},
    "pickup.retrieval_failed": {"order_id": "O-1", "compartment": "A-01", "reason": "item_inside"},
    "alarm.door_forced": {"compartment": "A-01", "order_id": None, "item": None},
    "alarm.door_left_open": {"compartment": "A-01", "open_s": 60, "commanded": True},
    "alarm.lock_jammed": {"compartment": "A-01", "order_id": "O-1", "during": "retrieval", "after_s": 10.0},
    "alarm.state_mismatch": {"compartment": "A-01", "order_id": "O-1", "expected": "ready, item inside",
                             "found": {"door": "closed", "item": False}},
    "alarm.code_guessing": {"failures": 30, "window_s": 600, "terminals": []},
    "audit.door_opened": {"seq": 1, "ts_ms": T0, "kind": "code", "compartment": "A-01", "actor": "terminal-A",
                          "order_id": "O-1", "detail": {}, "prev_hash": GENESIS_HASH, "hash": HASH},
}
_DROP = object()
BAD: list[tuple[str, str, Any]] = [
    ("pickup.ready", "code", "1234567"),
    ("pickup.ready", "code", "1234567890123"),
    ("pickup.ready", "code", 12345678),
    ("pickup.ready", "code", None),
    ("pickup.ready", "hold_until", "2026-11-29T20:00:00Z"),
    ("pickup.ready", "hold_until", _DROP),
    ("pickup.ready", "compartment", None),
    ("pickup.ready", "order_id", "bad id"),
    ("pickup.ready", "order_id", "O-1\n"),
    ("pickup.ready", "extra", 1),
    ("pickup.collected", "compartment", _DROP),
    ("pickup.load_failed", "reason", "door_open"),
    ("pickup.reminder", "hold_until", -1),
    ("pickup.expired", "retrieval", _DROP),
    ("pickup.expired", "retrieval", "yes"),
    ("pickup.cancelled", "compartment", _DROP),
    ("pickup.retrieval_failed", "reason", "empty"),
    ("alarm.door_forced", "item", "yes"),
    ("alarm.door_forced", "order_id", _DROP),
    ("alarm.door_left_open", "open_s", -0.1),
    ("alarm.door_left_open", "commanded", None),
    ("alarm.lock_jammed", "during", "cancel"),
    ("alarm.lock_jammed", "after_s", 0),
    ("alarm.lock_jammed", "order_id", None),
    ("alarm.state_mismatch", "found", {"door": "ajar", "item": True}),
    ("alarm.state_mismatch", "found", {"door": "open"}),
    ("alarm.state_mismatch", "found", "gone"),
    ("alarm.state_mismatch", "expected", ""),
    ("alarm.code_guessing", "failures", 0),
    ("alarm.code_guessing", "terminals", [""]),
    ("alarm.code_guessing", "window_s", 600.5),
    ("audit.door_opened", "kind", "forced"),
    ("audit.door_opened", "seq", 0),
    ("audit.door_opened", "hash", HASH.upper()),
    ("audit.door_opened", "prev_hash", HASH[:-1]),
    ("audit.door_opened", "detail", "{}"),
    ("audit.door_opened", "actor", ""),
    ("audit.door_opened", "compartment", _DROP),
]


@pytest.mark.parametrize("event_type", list(GOOD))
def test_the_good_payloads_pass(event_type: str) -> None:
    _check_payload(EVENT_SCHEMAS[event_type], GOOD[event_type])


@pytest.mark.parametrize(("event_type", "field", "value"), BAD)
def test_bad_payloads_are_refused(event_type: str, field: str, value: Any) -> None:
    payload = dict(GOOD[event_type])
    if value is _DROP:
        del payload[field]
    else:
        payload[field] = value
    with pytest.raises(ContractError):
        _check_payload(EVENT_SCHEMAS[event_type], payload)


def test_a_mismatch_without_an_order_and_unreadable_is_allowed() -> None:
    validate("payload.alarm.state_mismatch.json",
             {"compartment": "B-01", "expected": "readable", "found": "no answer"})


# -- command schemas against the pydantic models --------------------------------------------------

DATE_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"


@pytest.mark.parametrize(("name", "model"), list(COMMAND_MODELS.items()))
def test_command_schemas_are_the_models_schemas(name: str, model: type[BaseModel]) -> None:
    ours = contract.load_schema(name)
    theirs = model.model_json_schema()
    if name == "command.pickup.create.json":
        # The schema spells out the date-time it wants (format alone is not checked by every validator).
        hold_until = ours["properties"]["hold_until"]
        assert hold_until.pop("pattern") == DATE_TIME_PATTERN and hold_until["format"] == "date-time"
        assert theirs["properties"]["hold_until"]["anyOf"][0]["format"] == "date-time"
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
    create = "command.pickup.create.json"
    for payload in [
        {"order_id": "O-1", "size": "S"},
        {"order_id": "O-1", "size": "L", "hold_until": None, "code": None},
        {"order_id": "O-1", "size": "M", "hold_until": "2026-11-29T20:00:00Z"},
        {"order_id": "O-1", "size": "M", "hold_until": "2026-11-29T20:00:00.5+08:00"},
        {"order_id": "O-1", "size": "M", "code": "00000000"},
        {"order_id": "O-1", "size": "M", "code": "123456789012"},
        {"order_id": "a" * 64, "size": "M"},
        {"order_id": "a" * 65, "size": "M"},
        {"order_id": "-O", "size": "M"},
        {"order_id": "O 1", "size": "M"},
        {"order_id": "O-1\n", "size": "M"},
        {"order_id": 1, "size": "M"},
        {"size": "M"},
        {"order_id": "O-1"},
        {"order_id": "O-1", "size": "XL"},
        {"order_id": "O-1", "size": "s"},
        {"order_id": "O-1", "size": "M", "code": "1234567"},
        {"order_id": "O-1", "size": "M", "code": "1234567890123"},
        {"order_id": "O-1", "size": "M", "code": "1234567a"},
        {"order_id": "O-1", "size": "M", "code": "12345678\n"},
        {"order_id": "O-1", "size": "M", "code": 12345678},
        {"order_id": "O-1", "size": "M", "hold_until": "tomorrow"},
        {"order_id": "O-1", "size": "M", "hold_until": []},
        {"order_id": "O-1", "size": "M", "customer": "x"},
    ]:
        yield create, payload
    cancel = "command.pickup.cancel.json"
    for payload in [{"order_id": "O-1"}, {}, {"order_id": None}, {"order_id": ""}, {"order_id": "O-1", "why": "x"}]:
        yield cancel, payload


@pytest.mark.parametrize(("name", "payload"), list(_cases()))
def test_command_schemas_agree_with_the_models(name: str, payload: Any) -> None:
    assert _schema_accepts(name, payload) == _accepts(COMMAND_MODELS[name], payload)


@pytest.mark.parametrize("hold_until", ["2026-11-29T20:00:00", "2026-11-29 20:00:00Z", 1795464000, "2026-11-29"])
def test_the_schema_is_stricter_than_the_models_lax_parsing(hold_until: object) -> None:
    # PickupCreatePayload is a lax pydantic model: it also parses these (a time without a zone is then refused
    # by the handler). The contract promises only an RFC 3339 date-time with a zone; the cloud must send that.
    payload = {"order_id": "O-1", "size": "M", "hold_until": hold_until}
    assert not _schema_accepts("command.pickup.create.json", payload)


def test_locker_commands_validate_in_their_envelopes() -> None:
    validate_command({"command_id": "c-1", "type": "pickup.create", "payload": {"order_id": "O-1", "size": "S"}})
    validate_command({"command_id": "c-2", "type": "pickup.cancel", "payload": {"order_id": "O-1"}})
    for doc, path in [
        ({"command_id": "c-3", "type": "pickup.create", "payload": {"order_id": "O-1"}}, "$.payload"),
        ({"command_id": "c-4", "type": "pickup.create", "payload": {"order_id": "O-1", "size": "S", "code": "1"}},
         "$.payload.code"),
        ({"command_id": "c-5", "type": "pickup.cancel"}, "$.payload"),
    ]:
        with pytest.raises(ContractError) as info:
            validate_command(doc)
        assert info.value.path == path, info.value


# -- the commands through the real intake ---------------------------------------------------------


@contextlib.asynccontextmanager
async def _intake(r: _Rig) -> AsyncIterator[CommandIntake]:
    outbox = Outbox(r.db, TOPICS, max_bytes=64 * 1024 * 1024)
    await outbox.open()
    registry = CommandRegistry()
    register_locker_commands(registry, r.svc, hold_days=7)
    yield CommandIntake(r.db, outbox, registry)


async def _command(intake: CommandIntake, command_id: str, command_type: str, payload: dict[str, Any],
                   *, valid: bool = True) -> dict[str, Any]:
    command = {"command_id": command_id, "type": command_type, "payload": payload}
    if valid:
        validate_command(command)
    else:
        with pytest.raises(ContractError):
            validate_command(command)
    answer = await intake.handle(json.dumps(command).encode())
    validate("payload.command.result.json", answer)
    if answer["status"] == "ok":
        jsonschema.validate(answer["result"], RESULT_SCHEMAS[command_type])
    return answer


async def test_the_commands_answer_what_the_contract_says(rig: _Rig) -> None:
    rig.clock.now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)  # the handler checks hold_until on the real clock
    async with _intake(rig) as intake:
        answer = await _command(intake, "c-1", "pickup.create", {"order_id": "ORD-1", "size": "M"})
        assert answer["status"] == "ok", answer
        assert answer["result"]["code_issued_by"] == "agent"
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
        answer = await _command(intake, "c-2", "pickup.create", {
            "order_id": "ORD-2", "size": "S", "hold_until": later.isoformat(), "code": "52718390"})
        assert answer["result"] == {"order_id": "ORD-2", "hold_until": later.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                    "code_issued_by": "cloud"}
        answer = await _command(intake, "c-3", "pickup.create", {"order_id": "ORD-1", "size": "S"})
        assert answer["error"]["code"] == "refused"
        past = "2020-01-01T00:00:00Z"
        answer = await _command(intake, "c-4", "pickup.create", {"order_id": "ORD-3", "size": "S", "hold_until": past})
        assert answer["error"]["code"] == "invalid_payload"
        answer = await _command(intake, "c-5", "pickup.create",
                                {"order_id": "ORD-3", "size": "S", "hold_until": "2099-01-01T00:00:00"}, valid=False)
        assert answer["error"]["code"] == "invalid_payload"
        answer = await _command(intake, "c-6", "pickup.create", {"order_id": "ORD-3", "size": "S", "code": "123"},
                                valid=False)
        assert answer["error"]["code"] == "invalid_payload"
        answer = await _command(intake, "c-7", "pickup.cancel", {"order_id": "ORD-1"})
        assert answer["result"] == {"order_id": "ORD-1", "state": "cancelled"}
        for command_id, order_id in (("c-8", "ORD-1"), ("c-9", "no-such-order")):
            answer = await _command(intake, command_id, "pickup.cancel", {"order_id": order_id})
            assert answer["error"]["code"] == "refused"
    _check_events(rig.sink.events)
    assert [t for t, _ in rig.sink.events] == ["pickup.cancelled"]


# -- the contract page ----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)


def test_the_contract_page_shows_every_locker_message() -> None:
    text = DOC.read_text(encoding="utf-8")
    examples = DOC_EXAMPLE_RE.findall(text)
    targets = {target for target, _ in examples}
    for event_type, name in EVENT_SCHEMAS.items():
        assert f"`{event_type}`" in text
        assert f"| `{event_type}` | critical |" in text, f"{event_type} is not in the event table"
        if contract.has_schema(name):
            assert name in targets, f"no validated example of {name}"
    events = [json.loads(body) for target, body in examples if target == "event"]
    for event in events:
        if event["type"] in EVENT_SCHEMAS:
            _check_payload(EVENT_SCHEMAS[event["type"]], event["payload"])
    assert any(e["type"] == "pickup.ready" for e in events), "no validated example of a pickup.ready event"
    commands = [json.loads(body) for target, body in examples if target == "command"]
    for command_type in ("pickup.create", "pickup.cancel"):
        assert any(c["type"] == command_type for c in commands), f"no validated example of {command_type}"
    results = [json.loads(body) for target, body in examples if target == "payload.command.result.json"]
    for result in results:
        if result.get("status") == "ok" and result["type"] in RESULT_SCHEMAS:
            jsonschema.validate(result["result"], RESULT_SCHEMAS[result["type"]])
    assert {r["type"] for r in results} >= set(RESULT_SCHEMAS)
    for code in ("refused", "invalid_payload"):
        assert f"`{code}`" in text
    assert "`prev_hash`" in text and "`hash`" in text


# -- pickup shelves: slot and shelf instead of compartment ----------------------------------------


def test_shelf_orders_carry_slot_and_shelf_instead_of_a_compartment() -> None:
    from edge_agent.services.lockers import place_fields
    from edge_agent.services.pickup_shelves import MAX_SLOTS, SHELF_ID_RE

    assert SHELF_ID_RE.pattern == SHELF_PATTERN and re.fullmatch(SLOT_PATTERN, f"B.2-{MAX_SLOTS}")
    assert place_fields(None, "B.2-7") == {"slot": "B.2-7", "shelf": "B.2"}
    assert place_fields("A-12", None) == {"compartment": "A-12"}
    for t in PLACED:
        schema = _schema(f"payload.pickup.{t}.json")
        assert schema["oneOf"] == PLACE_ONE_OF, t
        assert schema["properties"]["slot"]["pattern"] == SLOT_PATTERN
        assert schema["properties"]["shelf"]["pattern"] == SHELF_PATTERN
        locker = dict(GOOD[f"pickup.{t}"])
        shelf = {k: v for k, v in locker.items() if k != "compartment"} | {"slot": "B-7", "shelf": "B"}
        _check_payload(f"payload.pickup.{t}.json", shelf)
        for bad in (locker | {"slot": "B-7", "shelf": "B"}, {k: v for k, v in shelf.items() if k != "shelf"},
                    shelf | {"slot": "B"}, {k: v for k, v in shelf.items() if k not in PLACE_FIELDS}):
            with pytest.raises(ContractError):
                _check_payload(f"payload.pickup.{t}.json", bad)
    audit = _schema("payload.audit.door_opened.json")["properties"]["kind"]
    assert {"shelf_release", "shelf_handover", "shelf_retrieval"} <= set(audit["enum"])


def test_pickup_create_takes_the_customer_and_keeps_only_the_mask() -> None:
    payload = {"order_id": "O-1", "size": "S", "customer_name": "王小明", "customer_phone": "+86 138 0013 1234"}
    contract.validate("command.pickup.create.json", payload)
    assert PickupCreatePayload.model_validate(payload).customer_phone == "+86 138 0013 1234"
    with pytest.raises(ContractError):
        contract.validate("command.pickup.create.json", payload | {"customer_phone": "call me"})
    with pytest.raises(ValidationError):
        PickupCreatePayload.model_validate(payload | {"customer_phone": "call me"})
