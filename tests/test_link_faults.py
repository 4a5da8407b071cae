"""Faults on the cloud link, injected by a proxy in front of a real Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mqtt_io.driver import Endpoint, MqttConnection, MqttError, Protocol
from mqtt_io.reconnect import backoff_delay
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.proxy import FaultProxy
from tests.support.subscriber import CloudSubscriber


async def test_falls_back_to_mqtt_311_when_the_broker_rejects_5(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port, reject_mqtt5=True).start()
    try:
        config = agent_config(tmp_path / "d", cloud_broker, cloud={"port": proxy.port})
        async with running_agent(config) as agent:
            assert agent.session is not None
            await wait_until(lambda: agent.session.connected, timeout=10)
            assert agent.session.protocol_in_use is Protocol.V311
            await agent.publish("order.test", {"n": 1})
            events = await asyncio.to_thread(subscriber.wait_events, 1)
        assert proxy.rejected_v5 == 1
        assert events[0]["payload"] == {"n": 1}
    finally:
        await proxy.stop()


async def test_a_silent_network_is_noticed_and_everything_is_resent(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port).start()
    try:
        config = agent_config(
            tmp_path / "d", cloud_broker, cloud={"port": proxy.port, "keepalive_s": 2, "ack_timeout_s": 2}
        )
        async with running_agent(config) as agent:
            assert agent.session is not None and agent.outbox is not None
            await wait_until(lambda: agent.session.connected, timeout=10)
            await agent.publish("order.test", {"n": 0})
            await asyncio.to_thread(subscriber.wait_events, 1)
            # Received is not yet acknowledged: the first event leaves the outbox only once its PUBACK is back.
            await wait_until(lambda: agent.outbox is not None and agent.outbox.stats().events == 0, timeout=10)
            # The network goes silent: TCP stays up, nothing arrives either way.
            proxy.blackhole = True
            for n in range(1, 21):
                await agent.publish("order.test", {"n": n})
            await wait_until(lambda: not agent.session.connected, timeout=10)
            assert agent.outbox.stats().events == 20
            proxy.blackhole = False
            await wait_until(lambda: agent.outbox.stats().events == 0, timeout=20)
            events = await asyncio.to_thread(subscriber.wait_events, 21)
        assert sorted({e["payload"]["n"] for e in events}) == list(range(21))
        assert proxy.connections >= 2
    finally:
        await proxy.stop()


async def test_a_broker_that_never_answers_a_subscription_is_a_link_failure_to_retry(cloud_broker: Broker) -> None:
    # Not a bare TimeoutError: the reconnect loops retry MqttError, and anything else would end the cloud
    # session's task, and with it the agent.
    proxy = await FaultProxy(cloud_broker.host, cloud_broker.port).start()
    proxy.silent_after_connack = True
    conn = MqttConnection(Endpoint(host=proxy.host, port=proxy.port, client_id="mute-test", keepalive=30),
                          Protocol.V311)
    try:
        await conn.connect()
        with pytest.raises(MqttError, match=r"no SUBACK for retail/# within 0\.5 s"):
            await conn.subscribe("retail/#", qos=1, timeout=0.5)
    finally:
        conn.abort("test over")
        await proxy.stop()


def test_backoff_is_full_jitter_within_bounds() -> None:
    for attempt in range(12):
        delays = [backoff_delay(attempt, 1.0, 60.0) for _ in range(200)]
        ceiling = min(60.0, 2.0**attempt)
        assert all(0.5 <= d <= max(ceiling, 0.5) for d in delays)
    late = [backoff_delay(20, 1.0, 60.0) for _ in range(500)]
    assert max(late) <= 60.0 and max(late) > 40.0 and min(late) < 20.0, "spread over the whole range"


async def test_device_gateway_relays_and_rejects_bad_input(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    import json

    device = CloudSubscriber(local_broker, topic="nothing/#", client_id="device-1").start()
    config = agent_config(tmp_path / "d", cloud_broker, local_broker, local_broker={"allowed_devices": ["scanner-1"]})
    try:
        async with running_agent(config) as agent:
            assert agent.gateway is not None
            await wait_until(lambda: agent.gateway.connected, timeout=10)
            base = "store/v1/devices/scanner-1"
            device.publish(f"{base}/telemetry", json.dumps({"battery_mv": 3700}))
            device.publish(f"{base}/event", json.dumps({"kind": "button.pressed", "data": {"b": 1}}))
            device.publish(f"{base}/state", json.dumps({"online": True}))
            for bad_topic, bad in [
                (f"{base}/telemetry", b"\xff not json"),
                (f"{base}/telemetry", b"[1,2]"),
                (f"{base}/event", json.dumps({"kind": "Order Created"}).encode()),
                (f"{base}/event", json.dumps({"kind": "x", "data": 5}).encode()),
                (f"{base}/reboot", b"{}"),
                ("store/v1/devices/bad id!/telemetry", b"{}"),
                (f"{base}/telemetry", b"{" + b" " * 20000 + b"}"),
                (f"{base}/telemetry", b'{"t": NaN}'),
                (f"{base}/telemetry", b"[" * 5000 + b"]" * 5000),
            ]:
                device.publish(bad_topic, bad)
            msgs = await asyncio.to_thread(
                subscriber.wait_for,
                lambda ms: sum("/events/" in m.topic for m in ms) >= 2 and any("/state/" in m.topic for m in ms),
            )
            await wait_until(lambda: agent.gateway.rejected == 9, timeout=10)
            assert agent.gateway.relayed == 3
    finally:
        device.stop()
    events = {m.json()["type"]: m.json()["payload"] for m in msgs if "/events/" in m.topic}
    assert len({events[kind].pop("msg_key") for kind in ("telemetry.device", "device.event")}) == 2
    assert events["telemetry.device"] == {"device_id": "scanner-1", "readings": {"battery_mv": 3700}}
    assert events["device.event"] == {"device_id": "scanner-1", "kind": "button.pressed", "data": {"b": 1}}
    state = next(m.json() for m in msgs if "/state/" in m.topic)
    assert state["device_id"] == "scanner-1" and state["state"] == {"online": True}


async def test_device_messages_refused_by_storage_are_delivered_again(tmp_path: Path, local_broker: Broker) -> None:
    """Storage refuses once (as a full outbox would): the message is not lost, the broker redelivers it."""
    import json

    from devices.mqtt_gateway import MqttDeviceGateway
    from mqtt_io.driver import Endpoint

    stored: list[dict] = []
    failures = {"left": 1}

    class RefusingOnceSink:
        async def publish_event(self, event_type: str, payload: dict) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("outbox full")
            stored.append(payload)

        async def publish_from_message(self, event_type: str, payload: dict, key: str, *, redelivered: bool) -> bool:
            await self.publish_event(event_type, payload)
            return True

        async def put_state(self, device_id: str, state: dict) -> None:
            stored.append(state)

        def bad_input(self, source: str, reason: str) -> None:
            pass

    gateway = MqttDeviceGateway(
        Endpoint(local_broker.host, local_broker.port, "gw-test", session_expiry=3600), RefusingOnceSink(),
        backoff_min=0.1,
    )
    gateway._pause_s = 0.0
    task = asyncio.create_task(gateway.run())
    device = CloudSubscriber(local_broker, topic="nothing/#", client_id="device-2").start()
    try:
        await wait_until(lambda: gateway.connected, timeout=10)
        for n in range(5):
            device.publish("store/v1/devices/d-1/telemetry", json.dumps({"n": n}))
        await wait_until(lambda: len({p["readings"]["n"] for p in stored}) == 5, timeout=20)
    finally:
        device.stop()
        task.cancel()
    assert sorted({p["readings"]["n"] for p in stored}) == [0, 1, 2, 3, 4]
