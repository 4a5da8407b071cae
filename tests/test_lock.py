"""The lock files agree with pyproject.toml, so what every machine installs is what the project asks for.

requirements/dev.lock (scripts/test, scripts/demo) and requirements/runtime.lock (scripts/install, a store)
are made by scripts/lock. A dependency added, dropped or re-bounded in pyproject.toml without running it,
or a lock edited by hand, fails here rather than on a fresh machine or in a store.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILD_IN = ROOT / "requirements" / "build.in"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")
_HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?$")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(?P<source>.+?)\s*$")


@dataclass
class Pin:
    version: Version
    marker: str | None
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def parse_lock(path: Path) -> dict[str, Pin]:
    """Every pinned package of a uv/pip-tools lock with its hashes and the "via" lines that say who asked."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text().splitlines():
        if match := _PIN.match(line):
            name = canonicalize_name(match["name"])
            assert name not in pins, f"{path.name}: {name} pinned twice"
            current = pins[name] = Pin(Version(match["version"]), match["marker"])
        elif current is not None and _HASH.match(line):
            current.hashes += 1
        elif current is not None and (match := _VIA.match(line)) and match["source"] != "via":
            current.via.append(match["source"])
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{path.name}: a line that is neither a pin, a hash nor a comment: {line!r}")
    return pins


def build_requirements() -> list[Requirement]:
    return [Requirement(line) for line in BUILD_IN.read_text().splitlines() if line.strip() and not line.startswith("#")]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def dev_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]


def direct(pins: dict[str, Pin]) -> set[str]:
    """The packages the lock says were asked for by pyproject.toml or requirements/build.in themselves."""
    return {name for name, pin in pins.items()
            if any(v.startswith(f"{PROJECT} (pyproject.toml)") or v == "-r requirements/build.in" for v in pin.via)}


def disagreements(lock: Path, wanted: list[Requirement]) -> list[str]:
    """What scripts/lock would change in `lock` for these requirements: missing pins, pins out of bounds, and
    pins the lock says pyproject asked for that it no longer does."""
    pins = parse_lock(lock)
    found = []
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{lock.name} has no pin for {requirement}")
        elif not requirement.specifier.contains(pins[name].version, prereleases=True):
            found.append(f"{lock.name} pins {name}=={pins[name].version}, outside {requirement}")
    stale = direct(pins) - {canonicalize_name(r.name) for r in wanted}
    found += [f"{lock.name} still locks {name} for pyproject.toml, which no longer asks for it" for name in sorted(stale)]
    return found


def dev_set() -> list[Requirement]:
    return runtime_requirements() + dev_requirements() + build_requirements()


def runtime_set() -> list[Requirement]:
    return runtime_requirements() + build_requirements()


@pytest.mark.parametrize(("lock", "wanted"), [(DEV_LOCK, dev_set), (RUNTIME_LOCK, runtime_set)], ids=["dev", "runtime"])
def test_every_requirement_is_pinned_within_its_bounds(lock, wanted) -> None:
    assert disagreements(lock, wanted()) == [], "pyproject.toml and the lock disagree: run scripts/lock"


@pytest.mark.parametrize("lock", [DEV_LOCK, RUNTIME_LOCK], ids=["dev", "runtime"])
def test_every_pin_is_exact_and_hashed(lock) -> None:
    pins = parse_lock(lock)
    assert pins
    unhashed = sorted(name for name, pin in pins.items() if pin.hashes == 0)
    assert not unhashed, f"{lock.name}: pins without a hash: {unhashed}"
    # Made by scripts/lock, not by hand (its header names the command to run again).
    assert "#    scripts/lock" in lock.read_text().splitlines()[1]


def test_a_store_runs_exactly_the_versions_the_tests_ran() -> None:
    dev, runtime = parse_lock(DEV_LOCK), parse_lock(RUNTIME_LOCK)
    assert set(runtime) <= set(dev)
    differing = {name: (str(pin.version), str(dev[name].version))
                 for name, pin in runtime.items() if pin.version != dev[name].version}
    assert not differing, f"runtime.lock and dev.lock pin different versions: {differing}"
    # No test tool on a store.
    for tool in ("pytest", "mypy", "ruff", "playwright", "hypothesis", "schemathesis"):
        assert tool not in runtime


def test_the_build_backend_is_locked_within_what_pyproject_builds_with() -> None:
    build_system = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["build-system"]["requires"]}
    locked = {canonicalize_name(r.name): r for r in build_requirements()}
    pins = parse_lock(RUNTIME_LOCK)
    for name, requirement in build_system.items():
        assert name in locked, f"requirements/build.in lacks {requirement} from [build-system] requires"
        assert requirement.specifier.contains(pins[name].version), f"{name}=={pins[name].version} breaks {requirement}"


def test_a_lock_out_of_step_with_pyproject_is_found(tmp_path: Path) -> None:
    """The check sees each kind of drift: a bound the pin no longer meets, a dependency with no pin, and a
    dependency dropped from pyproject.toml but still locked."""
    text = DEV_LOCK.read_text()
    babel = parse_lock(DEV_LOCK)["babel"].version
    moved = tmp_path / "moved.lock"
    moved.write_text(text.replace(f"babel=={babel} ", "babel==2.0.0 "))
    assert disagreements(moved, dev_set()) == ["moved.lock pins babel==2.0.0, outside babel>=2.14"]
    unpinned = tmp_path / "unpinned.lock"
    unpinned.write_text(re.sub(r"(?ms)^babel==.*?(?=^\S)", "", text))
    assert disagreements(unpinned, dev_set()) == ["unpinned.lock has no pin for babel>=2.14"]
    wanted = [r for r in dev_set() if r.name != "babel"]
    assert disagreements(DEV_LOCK, wanted) == [
        "dev.lock still locks babel for pyproject.toml, which no longer asks for it"
    ]
