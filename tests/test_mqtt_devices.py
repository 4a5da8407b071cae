"""Wi-Fi devices on the in-store broker (issue 5), through a real Mosquitto and the running agent.

The devices here are real MQTT peers (paho clients with a Last Will, or the simulator itself); the cloud
is a second Mosquitto with a subscriber that checks everything against the contract's schemas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.coalesce import StateCoalescer
from devices.mqtt.messages import DeviceMessageError, parse_device_message
from devices.mqtt.ratelog import RateLimitedLog
from devices.mqtt.registry import AdoptPolicy, DeviceRegistry
from devices.simulators.mqtt_device import SimulatedScanner
from edge_agent.services.catalog import Product
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.mqtt_device import PREFIX, SCANNER, MqttDevice
from tests.support.subscriber import CloudSubscriber, Received

# These tests are about relaying: every device is adopted on sight. Adoption (the default allow-list and the
# technician's explicit choice) has tests of its own here and in tests/test_discovery.py.
RELAY_ALL = {"adopt": "auto"}

COMMANDS = "retail/v1/store-0001/commands"


@pytest.fixture
def devices(local_broker: Broker) -> Iterator[list[MqttDevice]]:
    made: list[MqttDevice] = []
    yield made
    for d in made:
        d.stop()


def _device(devices: list[MqttDevice], broker: Broker, device_id: str) -> MqttDevice:
    d = MqttDevice(broker, device_id).start()
    devices.append(d)
    return d


def _states(msgs: list[Received], device_id: str) -> list[dict[str, Any]]:
    return [m.json()["state"] for m in msgs if m.topic.endswith(f"/state/{device_id}")]


def _results(sub: CloudSubscriber) -> dict[str, dict[str, Any]]:
    return {m.json()["payload"]["command_id"]: m.json()["payload"] for m in list(sub.all)
            if m.topic.endswith("/commands/result")}


async def _wait_for(sub: CloudSubscriber, predicate: Any, timeout: float = 15.0) -> list[Received]:
    return await asyncio.to_thread(sub.wait_for, predicate, timeout)


# -- announce, availability, state ------------------------------------------------------------------


async def test_announce_and_availability_reach_the_registry_and_the_cloud_state(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker,
                          local_broker={**RELAY_ALL, "state_coalesce_s": 0.2})
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        scanner = _device(devices, local_broker, "scanner-1")
        scanner.come_online({**SCANNER, "kiosk_id": "k1"})
        scanner.pub("state", {"battery_mv": 3900}, retain=True)
        msgs = await _wait_for(subscriber, lambda ms: any(
            s.get("online") is True and s.get("battery_mv") == 3900 for s in _states(ms, "scanner-1")))
        record = agent.gateway.registry.get("scanner-1")
        assert record is not None and record.adopted and not record.discovered
        assert record.announce is not None and record.announce.model == "HS-2" and record.kiosk_id == "k1"

        scanner.kill()
        msgs = await _wait_for(subscriber, lambda ms: any(s.get("online") is False for s in _states(ms, "scanner-1")))
        assert record.online is False
    state = _states(msgs, "scanner-1")[-1]
    assert state["kind"] == "scanner" and state["model"] == "HS-2" and state["kiosk_id"] == "k1"
    assert state["battery_mv"] == 3900 and state["since"].endswith("Z")


async def test_an_allow_list_keeps_unknown_devices_discovered_and_silent(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker,
                          local_broker={"adopt": "allow_list", "allowed_devices": ["scanner-ok"],
                                        "state_coalesce_s": 0.1})
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        stranger = _device(devices, local_broker, "scanner-x")
        stranger.come_online()
        stranger.pub("event", {"kind": "scan", "data": {"code": "6901234567892"}})
        known = _device(devices, local_broker, "scanner-ok")
        known.come_online()
        known.pub("event", {"kind": "scan", "data": {"code": "4006381333931"}})
        await asyncio.to_thread(subscriber.wait_events, 1, event_type="scan.device")
        await _wait_for(subscriber, lambda ms: bool(_states(ms, "scanner-ok")))
        await wait_until(lambda: agent.gateway.ignored >= 3, timeout=10)
        record = agent.gateway.registry.get("scanner-x")
        assert record is not None and record.discovered and record.announce is not None
        result = await _command(subscriber, "c-x", "device.reboot", {"device_id": "scanner-x"})
        assert result["error"]["code"] == "not_adopted"
        assert not agent.gateway.adopt("nobody")
        assert agent.gateway.adopt("scanner-x")  # the technician's explicit choice: its state goes up now
        await _wait_for(subscriber, lambda ms: any(s.get("online") is True for s in _states(ms, "scanner-x")))
    # What it sent before adoption was not relayed afterwards either.
    assert [e["payload"]["device_id"] for e in subscriber.events() if e["type"] == "scan.device"] == ["scanner-ok"]


# -- events -----------------------------------------------------------------------------------------


async def test_unbound_scans_and_taps_become_cloud_events(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker, local_broker=RELAY_ALL)
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        scanner = _device(devices, local_broker, "scanner-2")
        scanner.come_online()
        scanner.pub("event", {"kind": "scan", "data": {"code": "6901234567892", "symbology": "ean13"}})
        scanner.pub("event", {"kind": "tap", "data": {"target": "help-button"}})
        scanner.pub("event", {"kind": "button.pressed", "data": {"button": 2}})
        events = await asyncio.to_thread(subscriber.wait_events, 3)
    by_type = {e["type"]: e["payload"] for e in events}
    keys = {kind: payload.pop("msg_key") for kind, payload in by_type.items()}  # each message its own
    assert len(set(keys.values())) == 3
    assert by_type["scan.device"] == {"device_id": "scanner-2", "code": "6901234567892", "symbology": "ean13"}
    assert by_type["device.tap"] == {"device_id": "scanner-2", "target": "help-button"}
    assert by_type["device.event"] == {"device_id": "scanner-2", "kind": "button.pressed", "data": {"button": 2}}


class _BusSink:
    def __init__(self, publish: Any) -> None:
        self._publish = publish

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        await self._publish(event_type, payload)

    async def publish_from_message(
        self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
    ) -> bool:
        await self._publish(event_type, payload)
        return True

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        pass

    def bad_input(self, source: str, reason: str) -> None:
        pass


async def test_a_kiosk_bound_scanner_fills_that_kiosks_cart(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    # Bound by the configuration (scanner-k) and by its own announce (scanner-a); the runtime wires the
    # gateway's scans to its KioskHub.
    config = agent_config(tmp_path / "d", cloud_broker, local_broker,
                          local_broker={**RELAY_ALL, "device_kiosks": {"scanner-k": "k1"}},
                          kiosks=[{"id": "k1", "name": "Entrance"}])
    async with running_agent(config) as agent:
        assert agent.gateway is not None and agent.catalog is not None and agent.kiosk_hub is not None
        assert agent.gateway.on_scan == agent.kiosk_hub.scanned
        await agent.catalog.upsert([Product.model_validate(
            {"sku": "tea-500", "name": "东方树叶 茉莉花茶 500ml", "price": "4.50", "currency": "CNY",
             "barcode": "6901234567892"})])
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        async with agent.kiosk_hub.stream("k1") as live:
            scanner = _device(devices, local_broker, "scanner-k")
            scanner.come_online()
            scanner.pub("event", {"kind": "scan", "data": {"code": "6901234567892", "symbology": "ean13"}})
            other = _device(devices, local_broker, "scanner-a")
            other.come_online({**SCANNER, "kiosk_id": "k1"})
            other.pub("event", {"kind": "scan", "data": {"code": "4006381333931"}})
            # A scanner bound to a kiosk that does not exist: the scan is not lost, it goes up unbound.
            lost = _device(devices, local_broker, "scanner-z")
            lost.come_online({**SCANNER, "kiosk_id": "k9"})
            lost.pub("event", {"kind": "scan", "data": {"code": "4006381333931"}})
            events = await asyncio.to_thread(subscriber.wait_events, 3)
            pushed = await live.get(5.0)
            while pushed is not None and pushed.kind != "scan":
                pushed = await live.get(5.0)
    kiosk_scans = [e["payload"] for e in events if e["type"] == "scan.kiosk"]
    assert sorted((s["status"], s.get("sku")) for s in kiosk_scans) == [("ok", "tea-500"), ("unknown", None)]
    assert all(s["kiosk_id"] == "k1" and s["source"] == "mqtt" for s in kiosk_scans)
    assert [e["payload"]["device_id"] for e in events if e["type"] == "scan.device"] == ["scanner-z"]
    assert pushed is not None and pushed.kind == "scan" and pushed.product is not None and pushed.product.sku == "tea-500"


# -- commands ---------------------------------------------------------------------------------------


async def _command(sub: CloudSubscriber, command_id: str, command_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"command_id": command_id, "type": command_type, "payload": payload})
    await asyncio.to_thread(sub.publish, COMMANDS, body)
    await _wait_for(sub, lambda _ms: command_id in _results(sub))
    return _results(sub)[command_id]


async def test_commands_reach_the_devices_cmd_topic_and_unknown_or_offline_devices_are_refused(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker, local_broker=RELAY_ALL)
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        tablet = _device(devices, local_broker, "tablet-1")
        tablet.come_online({"kind": "tablet", "model": "T10", "fw": "3.0"})
        await wait_until(lambda: (r := agent.gateway.registry.get("tablet-1")) is not None and r.online is True)
        ok = [
            await _command(subscriber, "c-1", "device.reboot", {"device_id": "tablet-1"}),
            await _command(subscriber, "c-2", "device.reload", {"device_id": "tablet-1"}),
            await _command(subscriber, "c-3", "device.show_message",
                           {"device_id": "tablet-1", "text": "请到服务台 Please see the desk", "seconds": 30}),
        ]
        await wait_until(lambda: len(tablet.commands) == 3, timeout=10)
        unknown = await _command(subscriber, "c-4", "device.reboot", {"device_id": "nobody"})
        bad = await _command(subscriber, "c-5", "device.show_message", {"device_id": "tablet-1", "text": "a\nb"})
        tablet.pub("availability", "offline", retain=True)
        await wait_until(lambda: agent.gateway.registry.get("tablet-1").online is False)  # type: ignore[union-attr]
        offline = await _command(subscriber, "c-6", "device.reload", {"device_id": "tablet-1"})
    assert all(r["status"] == "ok" and r["result"] == {"device_id": "tablet-1", "sent": True} for r in ok)
    assert tablet.commands == [
        {"command": "reboot"}, {"command": "reload"},
        {"command": "show_message", "text": "请到服务台 Please see the desk", "seconds": 30},
    ]
    assert unknown["error"]["code"] == "unknown_device"
    assert bad["error"]["code"] == "invalid_payload"
    assert offline["error"]["code"] == "device_offline"
    assert len(tablet.commands) == 3


async def test_the_simulated_scanner_scans_obeys_commands_and_announces_again_after_a_reboot(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker,
                          local_broker={**RELAY_ALL, "state_coalesce_s": 0.1})
    stop = threading.Event()
    sim = SimulatedScanner(local_broker.host, local_broker.port, PREFIX, "sim-scanner")
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        runner = asyncio.create_task(asyncio.to_thread(sim.run, interval=0.2, count=0, bad_every=4, stop=stop))
        try:
            await asyncio.to_thread(subscriber.wait_events, 2, event_type="scan.device")
            await wait_until(lambda: agent.gateway.rejected >= 1, timeout=10)
            await _command(subscriber, "c-m", "device.show_message", {"device_id": "sim-scanner", "text": "hi"})
            await _command(subscriber, "c-r", "device.reboot", {"device_id": "sim-scanner"})
            await wait_until(lambda: sim.announced >= 2, timeout=10)
        finally:
            stop.set()
            await runner
    assert [c["command"] for c in sim.commands] == ["show_message", "reboot"]
    states = [s.get("online") for s in _states(subscriber.all, "sim-scanner")]
    assert states[-1] is False  # the clean goodbye


# -- bad input --------------------------------------------------------------------------------------


async def test_malformed_payloads_are_dropped_counted_and_logged_once_per_device_per_minute(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker, local_broker=RELAY_ALL)
    bad: list[tuple[str, bytes | str]] = [
        ("telemetry", b"\xff not json"),
        ("announce", b"[1,2]"),
        ("announce", json.dumps({**SCANNER, "kind": "toaster"})),
        ("announce", json.dumps({**SCANNER, "extra": 1})),
        ("availability", b"maybe"),
        ("event", json.dumps({"kind": "scan", "data": {"code": ""}})),
        ("event", json.dumps({"kind": "scan", "data": {"code": "690 123"}})),
        ("event", json.dumps({"kind": "tap", "data": {}})),
        ("event", json.dumps({"kind": "scan", "data": {"code": "1", "price": 0}})),
        ("state", b"{" + b" " * 20000 + b"}"),
        ("state", b'{"t": NaN}'),
        ("reboot", b"{}"),
    ]
    caplog.set_level(logging.WARNING, logger="devices.mqtt_gateway")
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        noisy = _device(devices, local_broker, "noisy-1")
        for channel, payload in bad * 3:
            noisy.pub(channel, payload)
        other = _device(devices, local_broker, "noisy-2")
        other.pub("event", b"garbage")
        other.client.publish(f"{PREFIX}/devices/bad id!/event", b"{}", qos=1).wait_for_publish(5)
        noisy.pub("event", {"kind": "scan", "data": {"code": "6901234567892"}})  # still heard after all that
        await asyncio.to_thread(subscriber.wait_events, 1, event_type="scan.device")
        await wait_until(lambda: agent.gateway.rejected == len(bad) * 3 + 2, timeout=10)
        metrics = agent.metrics.bad_inputs
        counted = {labels["reason"]: int(value) for _, labels, value in (
            (s.name, s.labels, s.value) for m in metrics.collect() for s in m.samples
        ) if labels.get("source") == "mqtt_device" and _.endswith("_total")}
    assert counted == {"malformed_json": 7, "not_object": 3, "bad_announce": 6, "bad_availability": 3,
                       "bad_event": 12, "too_large": 3, "bad_topic": 3, "bad_device_id": 1}
    lines = [r.getMessage() for r in caplog.records if "rejected device message" in r.getMessage()]
    assert len([line for line in lines if "/noisy-1/" in line]) == 1
    assert len([line for line in lines if "/noisy-2/" in line]) == 1
    assert len([line for line in lines if "bad id!" in line]) == 1


def test_the_log_limit_is_per_key_per_interval_and_bounded() -> None:
    now = [0.0]
    limit = RateLimitedLog(60.0, max_keys=3, clock=lambda: now[0])
    assert limit.allow("a") == 0
    assert limit.allow("a") is None and limit.allow("a") is None
    now[0] = 61.0
    assert limit.allow("a") == 2  # logs again, saying how many were left out
    for key in "bcdefg":
        limit.allow(key)
    assert len(limit) == 3


def test_parsing_rejects_by_reason() -> None:
    def reason(topic: str, payload: bytes) -> str:
        with pytest.raises(DeviceMessageError) as info:
            parse_device_message(PREFIX, topic, payload, 1024)
        return info.value.reason

    base = f"{PREFIX}/devices/d-1"
    assert reason(f"{base}/cmd", b"{}") == "bad_topic"
    assert reason(f"{PREFIX}/devices/-d/event", b"{}") == "bad_device_id"
    assert reason(f"{base}/announce", json.dumps({**SCANNER, "capabilities": ["x"] * 17}).encode()) == "bad_announce"
    assert reason(f"{base}/announce", json.dumps({**SCANNER, "fw": 2}).encode()) == "bad_announce"
    assert reason(f"{base}/availability", b"ONLINE") == "bad_availability"
    assert reason(f"{base}/event", b'{"kind": "scan"}') == "bad_event"
    assert parse_device_message(PREFIX, f"{base}/announce", b"", 1024).body is None  # a cleared retained message
    assert parse_device_message(PREFIX, f"{base}/availability", b"online", 1024).body is True


def test_the_registry_is_bounded_and_keeps_adopted_devices() -> None:
    registry = DeviceRegistry(AdoptPolicy.ALLOW_LIST, frozenset({"keep"}), max_devices=3)
    registry.seen("keep")
    for n in range(10):
        registry.seen(f"stranger-{n}")
    assert len(registry) == 3
    assert registry.get("keep") is not None and registry.get("keep").adopted  # type: ignore[union-attr]
    assert registry.adopt("stranger-9") is not None and registry.get("stranger-9").adopted  # type: ignore[union-attr]


def test_a_flood_of_new_ids_costs_constant_time_each_and_forgets_the_least_recently_seen() -> None:
    # Found by review: each new id in a full registry scanned every record for the oldest (min()), so a flood
    # of made-up ids cost O(n) each: 5,000 new ids in a registry of 20,000 took tens of seconds.
    registry = DeviceRegistry(AdoptPolicy.ALLOW_LIST, frozenset({"keep"}), max_devices=20_000)
    registry.seen("keep")
    for n in range(19_999):  # full: "keep" and these
        registry.seen(f"old-{n}")
    registry.seen("old-0")  # seen again: now the most recent of the unadopted
    started = time.perf_counter()
    for n in range(5_000):
        registry.seen(f"flood-{n}")
    assert time.perf_counter() - started < 2.0
    assert len(registry) == 20_000
    assert registry.get("keep") is not None, "adopted devices are forgotten last"
    assert registry.get("old-0") is not None
    assert registry.get("old-1") is None and registry.get("old-5000") is None and registry.get("old-5001") is not None
    # All unadopted gone: then the least recently seen adopted one goes.
    small = DeviceRegistry(AdoptPolicy.AUTO, max_devices=2)
    for name in ("a", "b", "a", "c"):
        small.seen(name)
    assert sorted(r.device_id for r in small.all()) == ["a", "c"]


# -- coalescing -------------------------------------------------------------------------------------


async def test_a_flapping_device_does_not_flood_the_cloud(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber, devices: list[MqttDevice]
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker,
                          local_broker={**RELAY_ALL, "state_coalesce_s": 0.5})
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        flappy = _device(devices, local_broker, "flappy")
        flappy.pub("announce", SCANNER, retain=True)
        started = time.monotonic()
        for n in range(200):
            flappy.client.publish(f"{flappy.base}/availability", "online" if n % 2 else "offline", qos=1, retain=True)
        flappy.pub("availability", "online", retain=True)
        await wait_until(lambda: agent.gateway.states.updates >= 150, timeout=10)
        elapsed = time.monotonic() - started
        await wait_until(lambda: agent.gateway.states.pending == 0, timeout=5)
        msgs = await _wait_for(subscriber, lambda ms: (s := _states(ms, "flappy")) and s[-1].get("online") is True)
        writes = agent.gateway.states.writes
    # One write at once, then at most one per 0.5 s window while it flaps (and one for the tail).
    assert writes <= 3 + elapsed / 0.5, (writes, elapsed)
    assert len(_states(msgs, "flappy")) <= writes


async def test_coalescer_writes_the_first_change_at_once_and_the_latest_per_window() -> None:
    written: list[tuple[str, dict[str, Any]]] = []

    async def put(device_id: str, state: dict[str, Any]) -> None:
        written.append((device_id, state))

    states = StateCoalescer(put, window_s=0.3)
    task = asyncio.create_task(states.run())
    try:
        states.update("a", {"n": 0})
        await wait_until(lambda: len(written) == 1, timeout=1)
        for n in range(1, 100):
            states.update("a", {"n": n})
            states.update("b", {"n": n})
        await wait_until(lambda: len(written) == 3, timeout=2)
        await asyncio.sleep(0.4)
    finally:
        task.cancel()
    assert written == [("a", {"n": 0}), ("a", {"n": 99}), ("b", {"n": 99})]


# -- the in-store broker restarts -------------------------------------------------------------------


def _retained(broker: Broker, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on `topic` as a fresh subscriber sees it, or None."""
    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        if m.retain:
            got.append(bytes(m.payload))
            done.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


async def test_after_a_broker_restart_the_agent_is_back_announced_and_subscribed_within_5_s(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "d", cloud_broker, local_broker, local_broker=RELAY_ALL)
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        await wait_until(lambda: agent.gateway.connected, timeout=10)
        assert await asyncio.to_thread(_retained, local_broker, f"{PREFIX}/agent/availability") == b"online"
        state = await asyncio.to_thread(_retained, local_broker, f"{PREFIX}/agent/state")
        assert state is not None and json.loads(state)["store_id"] == "store-0001"

        # The fixture's broker keeps nothing across a restart (no persistence): all retained messages and
        # subscriptions are gone, so only the agent's own republishing can bring them back.
        await asyncio.to_thread(local_broker.restart)
        restarted = time.monotonic()
        await wait_until(lambda: agent.gateway.connections >= 2, timeout=5)
        online = await asyncio.to_thread(_retained, local_broker, f"{PREFIX}/agent/availability", 5.0)
        back_after = time.monotonic() - restarted
        assert online == b"online" and back_after < 5.0, back_after
        assert await asyncio.to_thread(_retained, local_broker, f"{PREFIX}/agent/state") is not None

        device = MqttDevice(local_broker, "after-restart").start()
        try:
            device.come_online()
            device.pub("event", {"kind": "scan", "data": {"code": "6901234567892"}})
            events = await asyncio.to_thread(subscriber.wait_events, 1, event_type="scan.device")
        finally:
            device.stop()
    assert events[0]["payload"]["device_id"] == "after-restart"
    # The clean stop: the agent's availability is `offline`, retained.
    assert await asyncio.to_thread(_retained, local_broker, f"{PREFIX}/agent/availability") == b"offline"


async def test_the_agents_last_will_says_offline_when_it_vanishes(tmp_path: Path, local_broker: Broker) -> None:
    from devices.mqtt_gateway import MqttDeviceGateway
    from mqtt_io.driver import Endpoint

    probe = CloudSubscriber(local_broker, f"{PREFIX}/agent/availability", client_id="probe-will").start()
    gateway = MqttDeviceGateway(Endpoint(local_broker.host, local_broker.port, "gw-will"), _BusSink(None))
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: gateway.connected, timeout=10)
        assert gateway._conn is not None and gateway._conn._sock is not None
        gateway._conn._sock.shutdown(socket.SHUT_RDWR)  # as a crash would: no DISCONNECT, the broker sends the Will
        await wait_until(lambda: gateway.connections >= 2, timeout=5)
        await asyncio.to_thread(probe.wait_for, lambda ms: len(ms) >= 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(probe.wait_for, lambda ms: len(ms) >= 4)
        probe.stop()
    # What matters is the transitions. A clean stop under heavy load can also let the broker send the Will
    # after the agent's own retained "offline" (the DISCONNECT still queued when the socket closed): the
    # same word twice in a row, harmless.
    said = [m.payload for m in probe.all]
    assert [p for i, p in enumerate(said) if i == 0 or p != said[i - 1]] == [b"online", b"offline", b"online", b"offline"]


async def test_the_registry_survives_a_restart_in_sqlite(tmp_path: Path) -> None:
    from devices.mqtt.messages import Announce
    from edge_agent.storage import Database

    db = Database(tmp_path / "data")
    try:
        registry = DeviceRegistry.build("allow_list", ["known"], store=db, max_devices=3)
        registry.seen("known")
        stranger = registry.seen("stranger")
        stranger.announce = Announce.model_validate(SCANNER)
        registry.set_online(stranger, True)
        assert await registry.save() == 2
        assert await registry.save() == 0  # nothing changed since
        registry.adopt("stranger")  # what the technician UI will do
        for n in range(3):
            registry.seen(f"noise-{n}")  # pushes out the least recently seen device not adopted
        await registry.save()

        again = DeviceRegistry.build("allow_list", ["known"], store=db, max_devices=3)
        assert {r.device_id for r in again.all()} == {"known", "stranger", "noise-2"}
        restored = again.get("stranger")
        assert restored is not None and restored.adopted and restored.online is True
        assert restored.announce is not None and restored.announce.model == "HS-2"
        assert again.get("noise-2") is not None and not again.get("noise-2").adopted  # type: ignore[union-attr]
    finally:
        db.close()


@settings(max_examples=200, deadline=None)
@given(
    channel=st.sampled_from(["announce", "availability", "state", "telemetry", "event", "cmd", "x"]),
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"kind": st.sampled_from(["scan", "tap", "x.y"]),
                               "data": st.dictionaries(st.sampled_from(["code", "symbology", "target", "z"]),
                                                       st.one_of(st.text(max_size=140), st.integers(), st.none()))})
        .map(lambda v: json.dumps(v).encode()),
    ),
)
def test_any_payload_is_either_a_valid_message_or_a_counted_reason(channel: str, payload: bytes) -> None:
    try:
        msg = parse_device_message(PREFIX, f"{PREFIX}/devices/d-1/{channel}", payload, 256)
    except DeviceMessageError as exc:
        assert exc.reason in {"bad_topic", "too_large", "bad_availability", "malformed_json", "not_object",
                              "bad_announce", "bad_event"}
        return
    assert msg.device_id == "d-1" and msg.channel == channel
