"""config/agent.example.toml must stay valid and list every key of the configuration model.

The example is the reference for technicians (config.py says so): a key added to a section model
without being documented there fails `test_every_model_key_is_in_the_example`.
"""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edge_agent.config import AgentConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "agent.example.toml"

_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.]+)\s*\]\s*(#.*)?$")
# A commented-out key: "# key = value", where "key = value" is itself valid TOML (so prose that
# merely contains an equals sign is not taken for a key).
_COMMENTED_KEY = re.compile(r"^\s*#\s?(?P<line>(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*\S.*)$")
_ACTIVE_KEY = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=")


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model behind a field's annotation (also inside `X | None`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_model(arg)
            if found is not None:
                return found
    return None


def _contains_path(annotation: Any) -> bool:
    if annotation is Path:
        return True
    return any(_contains_path(arg) for arg in typing.get_args(annotation))


def model_leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every leaf key path of the model (`cloud.tls.ca_file`), with its annotation."""
    leaves: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        section = _section_model(field.annotation)
        if section is not None:
            leaves.update(model_leaves(section, f"{path}."))
        else:
            leaves[path] = field.annotation
    return leaves


def example_keys(text: str) -> tuple[set[str], dict[str, str]]:
    """Key paths set in the example, and commented-out key paths with their `key = value` line."""
    active: set[str] = set()
    commented: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if header := _HEADER.match(line):
            section = header.group(1)
            continue
        prefix = f"{section}." if section else ""
        if match := _COMMENTED_KEY.match(line):
            try:
                tomllib.loads(match.group("line"))
            except tomllib.TOMLDecodeError:
                continue  # prose, not a key
            commented[prefix + match.group("key")] = match.group("line")
        elif match := _ACTIVE_KEY.match(line):
            active.add(prefix + match.group("key"))
    return active, commented


def _uncomment_all(text: str) -> str:
    out = []
    for line in text.splitlines():
        match = _COMMENTED_KEY.match(line)
        if match:
            try:
                tomllib.loads(match.group("line"))
            except tomllib.TOMLDecodeError:
                out.append(line)
                continue
            out.append(match.group("line"))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, AgentConfig)
    assert config.agent.store_id


def test_example_shows_the_defaults() -> None:
    """Active keys carry the model's defaults, so the example doubles as the list of defaults."""
    config = load_config(EXAMPLE)
    defaults = parse_config({"agent": {"store_id": config.agent.store_id}})
    assert config == defaults


def test_leaf_walk_sees_nested_sections() -> None:
    leaves = model_leaves(AgentConfig)
    assert "agent.store_id" in leaves
    assert "cloud.tls.ca_file" in leaves
    assert "cloud.tls" not in leaves


def test_every_model_key_is_in_the_example() -> None:
    active, commented = example_keys(EXAMPLE.read_text(encoding="utf-8"))
    missing = sorted(set(model_leaves(AgentConfig)) - active - set(commented))
    assert not missing, f"keys of AgentConfig missing from {EXAMPLE.name} (add them, with a comment): {missing}"


def test_example_lists_no_unknown_keys() -> None:
    """Commented-out keys escape validation, so check them against the model by name."""
    active, commented = example_keys(EXAMPLE.read_text(encoding="utf-8"))
    unknown = sorted((active | set(commented)) - set(model_leaves(AgentConfig)))
    assert not unknown, f"{EXAMPLE.name} lists keys AgentConfig does not have: {unknown}"
    both = sorted(active & set(commented))
    assert not both, f"keys both set and commented out in {EXAMPLE.name}: {both}"


def test_every_key_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        is_key = _ACTIVE_KEY.match(line) or _COMMENTED_KEY.match(line)
        if not is_key or i == 0:
            continue
        above = lines[i - 1].strip()
        # Either prose right above, or a key directly below another key that shares its comment.
        if not above.startswith("#") and not _ACTIVE_KEY.match(lines[i - 1]):
            undocumented.append(line.strip())
    assert not undocumented, f"keys without a comment above them: {undocumented}"


def test_commented_out_examples_are_valid_too(tmp_path: Path) -> None:
    """Uncommenting every optional key still gives a valid config (file paths made to exist)."""
    text = _uncomment_all(EXAMPLE.read_text(encoding="utf-8"))
    data = tomllib.loads(text)
    _, commented = example_keys(EXAMPLE.read_text(encoding="utf-8"))
    leaves = model_leaves(AgentConfig)
    for path in commented:
        if not _contains_path(leaves[path]):
            continue
        *sections, key = path.split(".")
        table = data
        for name in sections:
            table = table[name]
        # Files named in the example live on the mini-PC; stand them in with empty files here.
        stand_in = tmp_path / Path(table[key]).name
        stand_in.touch()
        table[key] = str(stand_in)
    config = parse_config(data, source="uncommented example", base_dir=tmp_path)
    for path in commented:
        value: Any = config
        for name in path.split("."):
            value = getattr(value, name)
        assert value is not None, f"{path} is still unset after uncommenting it"


def test_store_id_is_the_only_required_key() -> None:
    """The example's header says so; if another key becomes required, update the header too."""
    required = [path for path in model_leaves(AgentConfig) if _field_required(AgentConfig, path.split("."))]
    assert required == ["agent.store_id"]


def _field_required(model: type[BaseModel], parts: list[str]) -> bool:
    field = model.model_fields[parts[0]]
    if len(parts) == 1:
        return field.is_required()
    section = _section_model(field.annotation)
    assert section is not None
    return _field_required(section, parts[1:])
