"""The Wi-Fi device part of the cloud contract (docs/cloud-contract.md 2.9) against the code: command schemas
against the pydantic models (structurally and case by case), event schemas against the in-store models'
patterns, and the contract page's examples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from cloud_link import contract
from cloud_link.contract import ContractError, validate
from cloud_link.events import EventClass, classify
from devices.mqtt import messages
from edge_agent.commands.devices import DEVICE_ID_PATTERN, DeviceTargetPayload, ShowMessagePayload
from tests.test_contract_labels import _canon

COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "command.device.reboot.json": DeviceTargetPayload,
    "command.device.reload.json": DeviceTargetPayload,
    "command.device.show_message.json": ShowMessagePayload,
}
DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)
OWN_ERROR_CODES = ("unknown_device", "not_adopted", "device_offline", "broker_unavailable")


@pytest.mark.parametrize(("name", "model"), list(COMMAND_MODELS.items()))
def test_the_command_schemas_are_the_models_schemas(name: str, model: type[BaseModel]) -> None:
    ours = contract.load_schema(name)
    theirs = model.model_json_schema()
    assert _canon(ours, ours) == _canon(theirs, theirs)


def _model_accepts(model: type[BaseModel], payload: Any) -> bool:
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
    ("name", "payload"),
    [
        *[("command.device.reboot.json", p) for p in [
            {"device_id": "scanner-3"}, {"device_id": "a" * 64}, {"device_id": "a" * 65}, {"device_id": "-x"},
            {"device_id": "x y"}, {"device_id": 3}, {}, {"device_id": "x", "force": True},
        ]],
        *[("command.device.show_message.json", p) for p in [
            {"device_id": "t-1", "text": "hi"}, {"device_id": "t-1", "text": "请到服务台", "seconds": 3600},
            {"device_id": "t-1", "text": "x" * 200}, {"device_id": "t-1", "text": "x" * 201},
            {"device_id": "t-1", "text": ""}, {"device_id": "t-1", "text": "a\nb"}, {"device_id": "t-1", "text": "\x7f"},
            {"device_id": "t-1", "text": "hi", "seconds": 0}, {"device_id": "t-1", "text": "hi", "seconds": 3601},
            {"device_id": "t-1", "text": "hi", "seconds": "5"}, {"device_id": "t-1", "text": "hi", "seconds": True},
            {"device_id": "t-1"}, {"text": "hi"},
        ]],
    ],
)
def test_the_command_schemas_agree_with_the_models(name: str, payload: Any) -> None:
    assert _schema_accepts(name, payload) == _model_accepts(COMMAND_MODELS[name], payload), payload


def test_event_schemas_use_the_in_store_patterns() -> None:
    scan = contract.load_schema("payload.scan.device.json")["properties"]
    tap = contract.load_schema("payload.device.tap.json")["properties"]
    assert scan["device_id"]["pattern"] == messages.ID_PATTERN == DEVICE_ID_PATTERN
    assert scan["code"]["pattern"] == messages.CODE_PATTERN
    assert scan["symbology"]["pattern"] == messages.SYMBOLOGY_PATTERN
    assert tap["target"]["pattern"] == messages.TARGET_PATTERN
    assert classify("scan.device") is EventClass.CRITICAL
    assert classify("device.tap") is EventClass.STANDARD


def test_the_contract_page_shows_the_device_events_commands_and_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    examples = DOC_EXAMPLE_RE.findall(text)
    for name in ("payload.scan.device.json", "payload.device.tap.json"):
        assert any(target == name for target, _ in examples), f"no validated example of {name}"
    commands = [json.loads(body) for target, body in examples if target == "command"]
    for command_type in ("device.reboot", "device.reload", "device.show_message"):
        assert any(c["type"] == command_type for c in commands), f"no validated example of {command_type}"
    results = [json.loads(body) for target, body in examples if target == "payload.command.result.json"]
    assert any(r["type"].startswith("device.") and r["status"] == "ok" for r in results)
    for code in OWN_ERROR_CODES:
        assert f"`{code}`" in text
