"""The courier-code commands of the cloud contract against what the code accepts and answers: the JSON Schemas
against the pydantic models (structurally and case by case), and the commands through a real CommandIntake
on a real LockerStaff and SQLite file, every answer checked against the documented result shape."""

from __future__ import annotations

import importlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from pydantic import BaseModel, ValidationError

from cloud_link import contract
from cloud_link.commands import CommandIntake, CommandRegistry
from cloud_link.contract import ContractError, validate, validate_command
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from edge_agent.commands.courier import (
    COURIER_ID_PATTERN,
    CourierCodeCreatePayload,
    CourierCodeRevokePayload,
    register_courier_commands,
)
from edge_agent.services.locker_staff import COURIER_ID_RE, LockerStaff, SignInStatus
from edge_agent.storage import Database
from tests.test_contract_labels import _canon

jsonschema: Any = importlib.import_module("jsonschema")

KEY = bytes(range(32))
COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "command.courier.code.create.json": CourierCodeCreatePayload,
    "command.courier.code.revoke.json": CourierCodeRevokePayload,
}
RESULT_SCHEMAS: dict[str, dict[str, Any]] = {
    "courier.code.create": {
        "type": "object", "additionalProperties": False, "required": ["courier_id", "valid_until"],
        "properties": {"courier_id": {"type": "string", "pattern": COURIER_ID_PATTERN},
                       "valid_until": {"type": "integer", "minimum": 0},
                       "code": {"type": "string", "pattern": "^[0-9]{8,12}$"},
                       "redacted": {"const": ["code"]}},
    },
    "courier.code.revoke": {
        "type": "object", "additionalProperties": False, "required": ["courier_id", "revoked"],
        "properties": {"courier_id": {"type": "string", "pattern": COURIER_ID_PATTERN},
                       "revoked": {"type": "integer", "minimum": 0}},
    },
}
DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize(("name", "model"), list(COMMAND_MODELS.items()))
def test_the_schemas_are_the_models_schemas(name: str, model: type[BaseModel]) -> None:
    ours = contract.load_schema(name)
    theirs = model.model_json_schema()
    assert _canon(ours, ours) == _canon(theirs, theirs)


def test_the_patterns_are_the_services() -> None:
    assert f"^{COURIER_ID_RE.pattern}$" == COURIER_ID_PATTERN


def _cases() -> list[tuple[str, Any]]:
    create = "command.courier.code.create.json"
    revoke = "command.courier.code.revoke.json"
    return [
        *[(create, p) for p in [
            {"courier_id": "c-1"}, {"courier_id": "c-1", "valid_until": None, "code": None},
            {"courier_id": "c-1", "valid_until": 1795464000000}, {"courier_id": "c-1", "code": "00000000"},
            {"courier_id": "c-1", "code": "123456789012"}, {"courier_id": "a" * 64}, {"courier_id": "a" * 65},
            {"courier_id": "-c"}, {"courier_id": "c 1"}, {"courier_id": "c-1\n"}, {"courier_id": 7}, {},
            {"courier_id": "c-1", "valid_until": -1}, {"courier_id": "c-1", "valid_until": "1795464000000"},
            {"courier_id": "c-1", "valid_until": True}, {"courier_id": "c-1", "code": "1234567"},
            {"courier_id": "c-1", "code": "1234567890123"}, {"courier_id": "c-1", "code": 12345678},
            {"courier_id": "c-1", "code": "12345678\n"}, {"courier_id": "c-1", "name": "x"},
        ]],
        *[(revoke, p) for p in [{"courier_id": "c-1"}, {}, {"courier_id": None}, {"courier_id": ""},
                                {"courier_id": "c-1", "code": "12345678"}]],
    ]


@pytest.mark.parametrize(("name", "payload"), _cases())
def test_the_schemas_agree_with_the_models(name: str, payload: Any) -> None:
    try:
        validate(name, payload)
        schema_ok = True
    except ContractError:
        schema_ok = False
    try:
        COMMAND_MODELS[name].model_validate(payload)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert schema_ok == model_ok


def test_the_contract_page_shows_both_commands_and_their_results() -> None:
    examples = DOC_EXAMPLE_RE.findall(DOC.read_text(encoding="utf-8"))
    commands = [json.loads(b) for t, b in examples if t == "command"]
    results = [json.loads(b) for t, b in examples if t == "payload.command.result.json"]
    for command_type, result_schema in RESULT_SCHEMAS.items():
        assert any(c["type"] == command_type for c in commands), command_type
        ours = [r for r in results if r["type"] == command_type]
        assert ours, command_type
        for r in ours:
            jsonschema.validate(r["result"], result_schema)


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[tuple[CommandIntake, LockerStaff]]:
    db = Database(tmp_path / "data")
    staff = LockerStaff(db, KEY, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    outbox = Outbox(db, Topics("retail/v1", "sh-0042"), max_bytes=16 * 1024 * 1024)
    await outbox.open()
    registry = CommandRegistry()
    register_courier_commands(registry, staff)
    yield CommandIntake(db, outbox, registry), staff
    db.close()


async def _command(intake: CommandIntake, command_id: str, command_type: str, payload: dict[str, Any]) -> Any:
    command = {"command_id": command_id, "type": command_type, "payload": payload}
    answer = await intake.handle(json.dumps(command).encode())
    validate("payload.command.result.json", answer)
    if answer["status"] == "ok":
        jsonschema.validate(answer["result"], RESULT_SCHEMAS[command_type])
    return answer


async def test_the_commands_answer_what_the_contract_says(intake: tuple[CommandIntake, LockerStaff]) -> None:
    handler, staff = intake
    now = int(time.time() * 1000)
    drawn = await _command(handler, "c-1", "courier.code.create", {"courier_id": "sf-1"})
    assert drawn["status"] == "ok" and abs(drawn["result"]["valid_until"] - now - 12 * 3600 * 1000) < 60_000
    given = await _command(handler, "c-2", "courier.code.create",
                           {"courier_id": "sf-2", "valid_until": now + 3600_000, "code": "5501928374"})
    assert given["result"] == {"courier_id": "sf-2", "valid_until": now + 3600_000}
    for command_id, payload in (("c-3", {"courier_id": "sf-3", "code": "5501928374"}),
                                ("c-4", {"courier_id": "sf-3", "valid_until": now - 1}),
                                ("c-5", {"courier_id": "sf-3", "valid_until": now + 8 * 86_400_000})):
        assert (await _command(handler, command_id, "courier.code.create", payload))["error"]["code"] == "refused"
    bad = await _command(handler, "c-6", "courier.code.create", {"courier_id": "sf-3", "code": "12"})
    assert bad["error"]["code"] == "invalid_payload"
    with pytest.raises(ContractError):
        validate_command({"command_id": "c-6", "type": "courier.code.create", "payload": {"courier_id": "sf-3",
                                                                                         "code": "12"}})
    # The drawn code went out once; a repeat of the id gets the stored answer, which never kept it.
    again = await _command(handler, "c-1", "courier.code.create", {"courier_id": "sf-1"})
    assert again["duplicate"] is True and again["result"] == {
        "courier_id": "sf-1", "valid_until": drawn["result"]["valid_until"], "redacted": ["code"]}
    stored = handler._store.read(lambda c: c.execute("SELECT result FROM commands WHERE command_id = 'c-1'").fetchone())
    assert drawn["result"]["code"] not in stored[0]
    assert (await staff.sign_in_courier("A", drawn["result"]["code"])).status is SignInStatus.OK
    revoked = await _command(handler, "c-7", "courier.code.revoke", {"courier_id": "sf-2"})
    assert revoked["result"] == {"courier_id": "sf-2", "revoked": 1}
    assert (await staff.sign_in_courier("A", "5501928374")).status is SignInStatus.WRONG
    none = await _command(handler, "c-8", "courier.code.revoke", {"courier_id": "nobody"})
    assert none["result"] == {"courier_id": "nobody", "revoked": 0}
