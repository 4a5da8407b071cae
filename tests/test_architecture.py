"""The layout rules of docs/architecture.md that import-linter cannot check, read from the source.

- A constructor only stores its arguments: no `__init__` in services, devices, the cloud link or the MQTT layer
  calls a method of an object of ours it was given, or assigns to another object's attribute. Every hook between
  features is made in a wiring module (edge_agent/wiring/), where a reader can find it.
- The runtime is lifecycle only: under 400 lines, and it imports no feature (services, web, devices).
- The web routers read and write through services, never tables: no module of edge_agent/web runs SQL.
- The edge_agent package's root holds only the entry module, runtime, config, metrics, logging, secrets and
  systemd notify; everything else lives in a package.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("edge_agent", "devices", "cloud_link", "firmware_bridge", "mqtt_io")
CONSTRUCTOR_RULE = ("edge_agent/services", "devices", "cloud_link", "mqtt_io")


def _modules(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _our_classes() -> set[str]:
    names: set[str] = set()
    for path in _modules(*OURS):
        names.update(n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef))
    return names


def _constructor_reaches(init: ast.FunctionDef, ours: set[str]) -> Iterator[str]:
    """What this __init__ does to objects it was given: calls on a parameter whose type is one of our classes, and
    assignments to a parameter's attributes (what it builds for itself, such as its paho client, it may set up)."""
    args = [*init.args.posonlyargs, *init.args.args[1:], *init.args.kwonlyargs]
    given = {a.arg for a in args}
    typed = {
        a.arg for a in args
        if a.annotation is not None and set(re.findall(r"\w+", ast.unparse(a.annotation))) & ours
    }
    for node in ast.walk(init):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if isinstance(receiver, ast.Name) and receiver.id in typed:
                yield f"line {node.lineno}: calls {receiver.id}.{node.func.attr}()"
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        )
        for target in targets:
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) and root.id in given:
                yield f"line {node.lineno}: assigns {ast.unparse(target)}"


def test_constructors_only_store_their_arguments() -> None:
    ours = _our_classes()
    found = []
    for path in _modules(*CONSTRUCTOR_RULE):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for item in cls.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    found += [f"{path.relative_to(ROOT)} {cls.name}: {what}" for what in _constructor_reaches(item, ours)]
    assert found == [], "hooks belong in edge_agent/wiring/, not in constructors:\n" + "\n".join(found)


def test_the_rule_sees_a_constructor_that_hooks_into_another_service() -> None:
    init = ast.parse(
        "class Shelves:\n"
        "    def __init__(self, lockers: LockerService, labels: LabelService | None, name: str) -> None:\n"
        "        self.name = name.strip()\n"
        "        lockers.attach_shelves(self)\n"
        "        labels.on_button = self.pressed\n"
    ).body[0].body[0]  # type: ignore[attr-defined]
    assert sorted(_constructor_reaches(init, {"LockerService", "LabelService"})) == [
        "line 4: calls lockers.attach_shelves()",
        "line 5: assigns labels.on_button",
    ]


def test_the_runtime_is_lifecycle_only() -> None:
    source = (ROOT / "edge_agent/runtime.py").read_text()
    assert len(source.splitlines()) < 400
    imported = {
        n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module is not None
    }
    features = sorted(m for m in imported if m.startswith(("edge_agent.web", "devices", "firmware_bridge"))
                      or (m.startswith("edge_agent.services") and m not in {
                          "edge_agent.services.agent_clock",  # the clock every part ages on
                          "edge_agent.services.catalog",  # the catalog commands, always on
                      }))
    assert features == [], "features are built in edge_agent/wiring/"


def test_the_package_root_holds_only_the_agents_own_modules() -> None:
    allowed = {"__init__.py", "__main__.py", "runtime.py", "config.py", "metrics.py", "logging_setup.py",
               "secrets.py", "systemd_notify.py"}
    root = {p.name for p in (ROOT / "edge_agent").glob("*.py")}
    assert root - allowed == set()


SQL_CALLS = {"execute", "executemany", "executescript"}
STORE_CALLS = {"read", "write"}


def _sql_in(source: str) -> Iterator[str]:
    """Where this module runs SQL itself: any `.execute(` / `.executemany(` / `.executescript(`, a `db.read(` or
    `db.write(` on the database (named `db`, or reached as `<something>.db`), or a connection of its own."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in SQL_CALLS or name == "open_connection":
            yield f"line {node.lineno}: {ast.unparse(func)}()"
        elif isinstance(func, ast.Attribute) and name in STORE_CALLS:
            receiver = func.value
            owner = receiver.id if isinstance(receiver, ast.Name) else (
                receiver.attr if isinstance(receiver, ast.Attribute) else ""
            )
            if owner == "db":
                yield f"line {node.lineno}: {ast.unparse(func)}()"


def test_web_routers_read_and_write_through_services_never_tables() -> None:
    found = [
        f"{path.relative_to(ROOT)} {where}"
        for path in _modules("edge_agent/web")
        for where in _sql_in(path.read_text())
    ]
    assert found == [], "a router reads and writes through a service's methods, never a table:\n" + "\n".join(found)


def test_the_rule_sees_a_router_that_runs_sql() -> None:
    source = (
        "def page(admin, c, files):\n"
        "    admin.db.read(lambda c: c.execute('SELECT 1'))\n"
        "    db.write(job)\n"
        "    c.executemany('INSERT', rows)\n"
        "    files.read('icon.svg')\n"
    )
    assert sorted(_sql_in(source)) == [
        "line 2: admin.db.read()",
        "line 2: c.execute()",
        "line 3: db.write()",
        "line 4: c.executemany()",
    ]
