"""Schemathesis against the running agent's own OpenAPI description (issue 6): requests generated from every
operation's schema, valid ones and deliberately invalid ones, sent with a signed-in admin session (cookie and
X-CSRF-Token), must never make a server error (`not_a_server_error`). A full agent (lockers on the Kerong
emulator, a base station on its emulator, kiosks, the in-store broker), so that every router is mounted.

Bounded and deterministic: a fixed number of examples per operation and mode, Hypothesis derandomized, no
example database; the whole test stays well under 90 s on a shared 2-core machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from paho.mqtt.enums import CallbackAPIVersion
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.agent_process import write_config
from tests.support.broker import Broker
from tests.support.lockers import compartment, idle_emulator, one_board

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ef" * 32}
ADMIN, PASSWORD = "fuzz-admin", "fuzzing password 1"
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}

# Operations not fuzzed, and why:
EXCLUDED = [
    # Streams that never end (Server-Sent Events): a request would wait for the stream's end.
    (re.compile(r".*/live$"), "GET", "an endless event stream"),
    # Ends the session the fuzzer signs in with; every later request would be a 401, testing nothing.
    (re.compile(r"/api/auth/logout$"), "*", "would sign the fuzzer out"),
    # Wrong current passwords count as failed sign-ins and lock the fuzzer's account out after five.
    (re.compile(r"/api/auth/password$"), "*", "would lock the fuzzer's account out"),
    # Physical actions on devices: each test-open unlocks a door the emulated person never closes (an open-door
    # alarm per example), reboots restart devices mid-run. Their validation is tested in their own files.
    (re.compile(r".*/test-open$"), "*", "opens doors"),
    (re.compile(r".*/reboot$"), "*", "reboots devices"),
]


# Valid examples use the ids this agent has, so that they reach the handlers, not only their 404s; invalid
# examples make up their own.
PATH_VALUES = {"kiosk_id": "k1", "bank_id": "A", "compartment_id": "A-02", "sku": "TEA", "device_id": "fuzz-scanner-1"}
TEA = {"sku": "TEA", "name": "东方树叶 茉莉花茶 500ml", "price": "4.50", "currency": "CNY", "barcode": "6901234567892"}


def announce_device(broker: Broker, device_id: str) -> None:
    """A Wi-Fi scanner on the in-store broker (retained announce and availability, as real ones do)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}")
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    base = f"store/v1/devices/{device_id}"
    announce = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan", "tap"]}
    client.publish(f"{base}/announce", json.dumps(announce), qos=1, retain=True).wait_for_publish(5)
    client.publish(f"{base}/availability", "online", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def excluded(method: str, path: str) -> bool:
    return any(p.fullmatch(path) and m in ("*", method) for p, m, _ in EXCLUDED)


@dataclass
class Findings:
    server_errors: list[str] = field(default_factory=list)
    operations: int = 0
    requests: int = 0
    skipped: list[str] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)  # "METHOD path 2xx" -> requests (printed with -s)


def fuzz(base_url: str, spec: dict[str, Any], cookie: str, csrf: str, tag_id: str) -> Findings:
    """Blocking: runs in a thread while the agent serves in the test's event loop."""
    schema = schemathesis.openapi.from_dict(spec)
    findings = Findings()
    session = requests.Session()
    session.cookies.set("edge_session", cookie)
    headers = {"X-CSRF-Token": csrf}
    for result in schema.get_all_operations():
        operation = result.ok()
        if excluded(operation.method.upper(), operation.path):
            findings.skipped.append(f"{operation.method.upper()} {operation.path}")
            continue
        findings.operations += 1
        values = {**PATH_VALUES, "tag_id": tag_id}
        known = {p.name: values[p.name] for p in operation.path_parameters if p.name in values}
        for mode, examples in EXAMPLES.items():
            fixed = known if mode is GenerationMode.POSITIVE and known else None

            @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
            def one(case: Any) -> None:
                response = case.call(base_url=base_url, session=session, headers=headers, timeout=10)
                findings.requests += 1
                findings.answered[f"{case.method} {case.operation.path} {response.status_code // 100}xx"] += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error])
                except BaseExceptionGroup:  # schemathesis' FailureGroup: record it, go on with the others
                    findings.server_errors.append(
                        f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r} -> "
                        f"{response.status_code} {response.text[:300]!r}"
                    )

            # Unsatisfiable: nothing to make invalid (no parameters, no body); the positive run covered it.
            with contextlib.suppress(Unsatisfiable):
                one()
    session.close()
    return findings


async def test_no_request_the_api_describes_makes_a_server_error(tmp_path: Path, local_broker: Broker) -> None:
    lock_emulator = idle_emulator()
    station = BaseStationEmulator(mixed(3, seed=7), checkin_interval=5.0, air_rate=200_000, seed=7)
    config = agent_config(
        tmp_path / "data",
        None,
        local_broker,
        lockers=one_board(tmp_path / "lockers0", compartment("A-01", 1), compartment("A-02", 2, column=2)),
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        labels={"adopt": "auto"},
        kiosks=[{"id": "k1", "name": "Entrance"}],
        local_broker={"adopt": "auto"},
    )
    announce_device(local_broker, "fuzz-scanner-1")
    async with (
        lock_emulator.running(PtyPort(tmp_path / "lockers0")),
        station.running(PtyPort(tmp_path / "bs0")),
        # With its configuration file, so that the configuration API's reads, checks and writes are fuzzed too.
        running_agent(config, env=KEY_ENV, config_path=write_config(config, tmp_path / "agent.toml")) as agent,
    ):
        assert agent.users is not None and agent.catalog is not None and agent.labels is not None
        await agent.users.add(ADMIN, PASSWORD, Role.ADMIN)
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 3, timeout=20)
        gateway = agent.gateway
        assert gateway is not None
        await wait_until(lambda: len(gateway.registry.all()) == 1, timeout=20)
        tag_id = sorted(t.hex() for t in station.tags)[0]
        await agent.catalog.upsert([Product.model_validate(TEA)])
        await agent.catalog.pair_tags([(tag_id, "TEA")])
        base = f"http://127.0.0.1:{agent.web_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            login = await http.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
            assert login.status_code == 200
            cookie, csrf = login.cookies["edge_session"], login.json()["csrf"]
            spec = (await http.get("/openapi.json")).json()
        findings = await asyncio.to_thread(fuzz, base, spec, cookie, csrf, tag_id)
        # Still signed in at the end: the run tested signed-in behaviour throughout, not 401s.
        async with httpx.AsyncClient(base_url=base, timeout=10, cookies={"edge_session": cookie}) as http:
            assert (await http.get("/api/auth/me")).status_code == 200
    print(f"fuzzed {findings.operations} operations, {findings.requests} requests; skipped {findings.skipped}")
    print("\n".join(f"{n:5d}  {k}" for k, n in sorted(findings.answered.items())))
    assert findings.server_errors == [], "\n".join(findings.server_errors)
    assert findings.operations >= 10 and findings.requests >= findings.operations * 2
