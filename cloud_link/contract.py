"""The cloud contract, machine-checkable: JSON Schemas of every payload on the wire (docs/cloud-contract.md).

The schemas live in `cloud_link/schemas/` (shipped as package data) and follow draft 2020-12:
- `event.json`: the envelope of every event; `payload.{type}.json`: the payload of one event type;
- `state.json`, `status.json`: retained device state and agent status;
- `command.json`: what the cloud sends; `command.{type}.json`: the payload of one command type.

Patterns are ECMA-262 regular expressions, as JSON Schema says. Python's `re` differs in ways that
matter here (`$` also matches before a trailing newline, `\\d` matches any Unicode digit), so the
schemas spell digits `[0-9]` and `validate` checks `pattern` with ECMA's meaning of `$`.

The agent itself never validates at run time (it builds these messages itself, see events.py);
this module serves the tests, CI and anyone checking captured traffic.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ENVELOPE_SCHEMA = "event.json"
COMMAND_SCHEMA = "command.json"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")


class ContractError(ValueError):
    """A document does not match its schema (or is not JSON); names the schema and the JSON path."""

    def __init__(self, schema: str, path: str, message: str) -> None:
        super().__init__(f"{schema}: {path}: {message}")
        self.schema = schema
        self.path = path
        self.message = message


def _file_name(name: str) -> str:
    file_name = name if name.endswith(".json") else f"{name}.json"
    # Names come from event and command types on the wire: never let one reach outside SCHEMA_DIR.
    if not _NAME_RE.match(file_name.removesuffix(".json")):
        raise ContractError(file_name, "$", "not a schema name")
    return file_name


def schema_names() -> list[str]:
    """File names of every schema shipped, sorted."""
    return sorted(p.name for p in SCHEMA_DIR.glob("*.json"))


def has_schema(name: str) -> bool:
    try:
        return (SCHEMA_DIR / _file_name(name)).is_file()
    except ContractError:
        return False


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (`event.json` or `event`) as a fresh dict; ContractError if there is none."""
    file_name = _file_name(name)
    try:
        text = (SCHEMA_DIR / file_name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractError(file_name, "$", f"no such schema in {SCHEMA_DIR}") from None
    schema = json.loads(text)
    if not isinstance(schema, dict):
        raise ContractError(file_name, "$", "a schema file must hold a JSON object")
    return schema


def check_schema(name: str) -> None:
    """Raise ContractError unless the file is itself a valid draft 2020-12 schema."""
    file_name = _file_name(name)
    jsonschema = _jsonschema()
    try:
        jsonschema.Draft202012Validator.check_schema(load_schema(file_name))
    except jsonschema.exceptions.SchemaError as exc:
        raise ContractError(file_name, _json_path(exc), f"invalid schema: {exc.message}") from None


def validate(name: str, document: object) -> None:
    """Check `document` against schema `name`; raise ContractError naming the path of the first problem.

    `document` is parsed JSON (a dict), or the wire form as bytes, which must also be strict JSON.
    """
    file_name = _file_name(name)
    _check(file_name, _parse(file_name, document), "$")


def validate_event(document: object) -> None:
    """Check an event: the envelope, then its payload against `payload.{type}.json` when that exists."""
    doc = _parse(ENVELOPE_SCHEMA, document)
    _check(ENVELOPE_SCHEMA, doc, "$")
    envelope = cast(dict[str, Any], doc)  # the envelope schema requires an object
    payload_schema = f"payload.{envelope['type']}.json"
    if has_schema(payload_schema):
        _check(payload_schema, envelope["payload"], "$.payload")


def validate_command(document: object) -> None:
    """Check a cloud command: the envelope, then its payload against `command.{type}.json` when that exists."""
    doc = _parse(COMMAND_SCHEMA, document)
    _check(COMMAND_SCHEMA, doc, "$")
    command = cast(dict[str, Any], doc)
    payload_schema = f"command.{command['type']}.json"
    if has_schema(payload_schema):
        _check(payload_schema, command.get("payload", {}), "$.payload")


# -- internals ------------------------------------------------------------------------------------


def _parse(schema: str, document: object) -> object:
    if not isinstance(document, bytes | bytearray):
        return document
    try:
        return json.loads(bytes(document).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContractError(schema, "$", f"not strict UTF-8 JSON: {exc}") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check(file_name: str, document: object, base_path: str) -> None:
    jsonschema = _jsonschema()
    error = jsonschema.exceptions.best_match(_validator(file_name).iter_errors(document))
    if error is not None:
        raise ContractError(file_name, base_path + _json_path(error)[1:], str(error.message))


def _json_path(error: Any) -> str:
    return str(error.json_path)


def _jsonschema() -> Any:
    # Imported lazily: jsonschema is a dev dependency (tests, CI, tooling), not one of the agent's
    # run-time dependencies, and importing cloud_link must not require it.
    return importlib.import_module("jsonschema")


@functools.cache
def _validator(file_name: str) -> Any:
    jsonschema = _jsonschema()
    schema = load_schema(file_name)
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern_keyword})
    return cls(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _ecma_pattern_keyword(validator: Any, pattern: str, instance: object, schema: object) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(str(instance)):
        yield _jsonschema().exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 pattern with Python's `re`, giving `$` its ECMA meaning (end of input only).

    Python's `$` also matches before a final newline, so `^[a-z]+$` would accept "abc\\n". Only the
    constructs our schemas use are translated; character classes and escapes are copied as they are.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))
