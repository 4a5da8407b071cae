"""The pick-to-light part of the cloud contract: command schemas are the models' schemas, the schemas and the
models agree on good and bad payloads, the contract page shows both commands, and the events the service sends
match their schemas (the end-to-end test checks the events on a real broker too)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from cloud_link import contract
from cloud_link.contract import ContractError, validate
from cloud_link.events import EventClass, classify
from edge_agent.commands.picking import PickCancelPayload, PickStartPayload
from tests.test_contract_labels import _canon

COMMAND_MODELS: dict[str, type[BaseModel]] = {
    "command.pick.start.json": PickStartPayload,
    "command.pick.cancel.json": PickCancelPayload,
}
EVENTS = ["pick.line_confirmed", "pick.short", "pick.completed", "pick.cancelled"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "cloud-contract.md"
DOC_EXAMPLE_RE = re.compile(r"<!-- validate: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)
LINE = {"order_id": "O-1", "sku": "MILK-1L", "quantity": 2}


@pytest.mark.parametrize(("name", "model"), list(COMMAND_MODELS.items()))
def test_the_schemas_are_the_models_schemas(name: str, model: type[BaseModel]) -> None:
    ours = contract.load_schema(name)
    theirs = model.model_json_schema()
    assert _canon(ours, ours) == _canon(theirs, theirs)


def _cases() -> list[tuple[str, Any]]:
    start = "command.pick.start.json"
    return [
        (start, {"list_id": "L1", "picker": "p", "lines": [LINE]}),
        (start, {"list_id": "L1", "picker": "p", "colour": "blue", "order_ids": ["O-1"], "lines": [LINE] * 3}),
        (start, {"list_id": "L1", "picker": "p", "lines": []}),
        (start, {"list_id": "L1", "picker": "p", "colour": "pink", "lines": [LINE]}),
        (start, {"list_id": "L1", "picker": "", "lines": [LINE]}),
        (start, {"list_id": "-bad", "picker": "p", "lines": [LINE]}),
        (start, {"list_id": "L1", "picker": "p", "lines": [{**LINE, "quantity": 0}]}),
        (start, {"list_id": "L1", "picker": "p", "lines": [{**LINE, "extra": 1}]}),
        (start, {"list_id": "L1", "picker": "p", "lines": [LINE], "unknown": True}),
        (start, {"list_id": "L1", "picker": "p", "lines": [LINE] * 501}),
        ("command.pick.cancel.json", {"list_id": "L1"}),
        ("command.pick.cancel.json", {"list_id": "L1", "why": "x"}),
        ("command.pick.cancel.json", {}),
    ]


@pytest.mark.parametrize(("name", "payload"), _cases())
def test_the_schemas_agree_with_the_models(name: str, payload: Any) -> None:
    try:
        COMMAND_MODELS[name].model_validate(payload)
        model_ok = True
    except ValidationError:
        model_ok = False
    try:
        validate(name, payload)
        schema_ok = True
    except ContractError:
        schema_ok = False
    assert model_ok == schema_ok


def test_the_contract_page_shows_the_commands_and_every_event() -> None:
    examples = DOC_EXAMPLE_RE.findall(DOC.read_text(encoding="utf-8"))
    targets = [target for target, _ in examples]
    for event in EVENTS:
        assert f"payload.{event}.json" in targets, event
        assert f"| `{event}` | critical |" in DOC.read_text(encoding="utf-8")
    bodies = " ".join(body for target, body in examples if target in ("command", "payload.command.result.json"))
    assert '"type":"pick.start"' in bodies


@pytest.mark.parametrize("event", EVENTS)
def test_pick_events_are_critical_and_their_examples_valid(event: str) -> None:
    assert classify(event) is EventClass.CRITICAL  # they are an order's fulfilment record: never dropped
    schema = contract.load_schema(f"payload.{event}.json")
    assert schema["examples"]
    for example in schema["examples"]:
        validate(f"payload.{event}.json", example)
