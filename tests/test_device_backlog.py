"""Issue 14.1: a backlog of device messages after the agent was down is relayed whole, at storage's pace.

The in-store broker is limited as a store's is (20 messages in flight per client, no queue limit) and the
agent's session on it is persistent, so what 20 devices publish while the agent is killed waits there and
arrives as one burst when it is back. Mosquitto 2.0 does not hold to its in-flight limit after a session
resumes (it sends 20 more for every PUBACK), so the agent has to hold the pace itself: before the fix its
relay queue overflowed, it dropped what it had queued and reconnected in a loop, and a queue that overflowed
before the subscription was confirmed was dropped without a reconnect at all: thousands of events never
reached the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.mqtt.broker_drops import BrokerDrops, parse_count
from devices.mqtt.registry import AdoptPolicy, DeviceRegistry
from devices.mqtt_gateway import INTAKE_HIGH, MqttDeviceGateway
from edge_agent.storage import Database
from mqtt_io.driver import Endpoint, Message
from tests.conftest import agent_config, wait_until
from tests.support.agent_process import wait_http, write_config
from tests.support.broker import Broker, free_port
from tests.support.device_sink import RecordingDeviceSink

DEVICES = 20


class SeqCounter:
    """Cloud side: the `data.seq` of every device.event, with duplicates counted."""

    def __init__(self, broker: Broker) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="seq-counter", protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/v1/+/events/device.event", 1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        seq = json.loads(msg.payload)["payload"]["data"]["seq"]
        with self._lock:
            if seq in self.seen:
                self.duplicates += 1
            self.seen.add(seq)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Devices:
    """20 devices' worth of QoS 1 events through one publisher; each publish waits for the broker's PUBACK."""

    def __init__(self, broker: Broker) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="devices", protocol=paho.MQTTv311)
        self.client.max_inflight_messages = 100
        self.client.max_queued_messages = 0
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, seqs: range) -> None:
        infos = [
            self.client.publish(f"store/v1/devices/dev{seq % DEVICES:02d}/event",
                                json.dumps({"kind": "reading", "data": {"seq": seq}}), qos=1)
            for seq in seqs
        ]
        for info in infos:
            info.wait_for_publish(30)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def store_broker(tmp_path: Path) -> Any:
    broker = Broker(tmp_path / "store-broker", max_inflight=20, max_queued=0)
    broker.start()
    yield broker
    broker.stop()


def _wait_count(counter: SeqCounter, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while counter.count() < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return counter.count()


def test_a_backlog_published_while_the_agent_was_killed_reaches_the_cloud_whole_without_a_reconnect(
    tmp_path: Path, cloud_broker: Broker, store_broker: Broker
) -> None:
    backlog = 3000
    port = free_port()
    config = agent_config(tmp_path / "data", cloud_broker, store_broker, agent={"log_level": "INFO"},
                          local_broker={"adopt": "auto"})
    path = write_config(config, tmp_path / "agent.toml", port=port, https=False)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:  # a file, not a pipe: a pipe nobody reads would block the agent
            return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
                                    stdout=out, stderr=subprocess.STDOUT)

    counter = SeqCounter(cloud_broker)
    devices = Devices(store_broker)
    first = second = None
    try:
        first = start(logs[0])
        wait_http(port)
        devices.publish(range(0, 1))  # the agent's session exists and relays
        assert _wait_count(counter, 1, 20) == 1
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        devices.publish(range(1, 1 + backlog))  # all acknowledged by the store broker, queued for the agent
        second = start(logs[1])
        wait_http(port)
        got = _wait_count(counter, 1 + backlog, 60)
        second.send_signal(signal.SIGTERM)
        second.wait(10)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        devices.stop()
        counter.stop()
    log = logs[1].read_text()
    missing = sorted(set(range(1 + backlog)) - counter.seen)
    assert got == 1 + backlog, f"{len(missing)} lost, the first {missing[:10]}"
    assert "relay paused" not in log and "connection lost" not in log, log[-3000:]
    assert log.count("in-store broker connected") == 1, log[-3000:]


class _SlowSink(RecordingDeviceSink):
    """Storage that takes 2 ms a message and can be told to refuse (an outbox full)."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[int] = []
        self.refusing = False
        self.refused = 0

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0.002)
        if self.refusing:
            self.refused += 1
            raise RuntimeError("outbox full")
        self.stored.append(payload["data"]["seq"])


def _gateway(broker: Broker, sink: _SlowSink) -> MqttDeviceGateway:
    return MqttDeviceGateway(
        Endpoint(broker.host, broker.port, "gw-backlog", session_expiry=3600),
        sink,
        registry=DeviceRegistry(AdoptPolicy.AUTO),
        backoff_max=0.5,
    )


@contextlib.asynccontextmanager
async def _running(broker: Broker, sink: _SlowSink) -> AsyncIterator[MqttDeviceGateway]:
    """A gateway relaying until the block ends, connected when the block starts."""
    gateway = _gateway(broker, sink)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: gateway.connected, timeout=10)
        yield gateway
    finally:
        task.cancel()  # its session stays at the broker
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_burst_larger_than_the_intake_waits_at_the_broker_and_keeps_each_devices_order(
    store_broker: Broker,
) -> None:
    sink = _SlowSink()
    devices = Devices(store_broker)
    burst = 3 * INTAKE_HIGH
    try:
        async with _running(store_broker, sink):
            pass  # the session exists; what follows is queued at the broker for it
        await asyncio.to_thread(devices.publish, range(burst))
        async with _running(store_broker, sink) as gateway:
            await wait_until(lambda: len(set(sink.stored)) >= burst, timeout=60)
    finally:
        devices.stop()
    assert sorted(set(sink.stored)) == list(range(burst))
    assert gateway.connections == 1  # absorbed without a reconnect
    assert gateway.intake_pauses >= 1  # by not reading, not by dropping
    for device in range(DEVICES):  # every device's events stored in the order it sent them
        mine = [seq for seq in sink.stored if seq % DEVICES == device]
        assert mine == sorted(mine)


async def test_storage_refusing_drops_only_that_connection_and_the_broker_delivers_everything_again(
    store_broker: Broker,
) -> None:
    sink = _SlowSink()
    devices = Devices(store_broker)
    try:
        async with _running(store_broker, sink) as gateway:
            sink.refusing = True
            await asyncio.to_thread(devices.publish, range(200))
            await wait_until(lambda: sink.refused >= 1, timeout=10)
            sink.refusing = False
            await wait_until(lambda: len(set(sink.stored)) >= 200, timeout=30)
    finally:
        devices.stop()
    assert sorted(set(sink.stored)) == list(range(200))
    assert gateway.connections >= 2  # the refusal dropped the connection; the next one brought the rest


async def test_queued_messages_of_a_closed_connection_are_left_to_the_broker() -> None:
    """Taken from the intake after their connection closed, QoS 1 messages are not stored (the broker sends
    them again on the next connection: storing them too would relay them twice); QoS 0 ones are stored."""

    class Closed:
        closed: asyncio.Future[str]

    closed = Closed()
    closed.closed = asyncio.get_running_loop().create_future()
    closed.closed.set_result("lost")
    gateway = MqttDeviceGateway(Endpoint("127.0.0.1", 1, "gw-closed"), _SlowSink())
    body = json.dumps({"kind": "reading", "data": {"seq": 1}}).encode()
    old = Message("store/v1/devices/d1/event", body, 1, False, 7, connection=closed)  # type: ignore[arg-type]
    fire_and_forget = Message("store/v1/devices/d1/event", body, 0, False, 0, connection=closed)  # type: ignore[arg-type]
    gateway._queue.put_nowait(fire_and_forget)
    assert gateway._take_batch(old) == [fire_and_forget]


async def test_what_the_broker_dropped_while_the_agent_was_away_is_reported_upstream(tmp_path: Path) -> None:
    """Past its queue limits the broker drops messages for the agent's session; its own count of them
    becomes alarm.broker_dropped once the agent is back, from the count it last reported (kept in SQLite)."""
    broker = Broker(tmp_path / "tiny-broker", max_inflight=2, max_queued=5, extra=("sys_interval 1",))
    broker.start()
    db = Database(tmp_path / "data")
    devices = Devices(broker)
    sink = RecordingDeviceSink()

    def gateway() -> MqttDeviceGateway:
        return MqttDeviceGateway(Endpoint(broker.host, broker.port, "gw-drops", session_expiry=3600), sink,
                                 registry=DeviceRegistry(AdoptPolicy.AUTO, store=db))

    try:
        first = gateway()
        task = asyncio.create_task(first.run())
        await wait_until(lambda: first.connected and first._drop_count == 0, timeout=10)
        await asyncio.sleep(0.2)  # the first reading is the baseline, saved
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(devices.publish, range(20))  # 5 queued for the session, 15 dropped
        second = gateway()  # a restarted agent: the baseline comes from the database
        task = asyncio.create_task(second.run())

        def accounted() -> int:  # every message is relayed or counted as dropped, none vanishes
            return sum(1 if kind == "device.event" else payload["count"] for kind, payload in sink.events)

        await wait_until(lambda: accounted() == 20, timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        devices.stop()
        db.close()
        broker.stop()
    alarms = [payload for kind, payload in sink.events if kind == "alarm.broker_dropped"]
    relayed = [payload["data"]["seq"] for kind, payload in sink.events if kind == "device.event"]
    assert relayed == [0, 1, 2, 3, 4], relayed
    assert alarms == [{"count": 15, "broker_total": 15}], alarms


async def test_broker_drop_counts_baseline_increase_restart_and_persistence(tmp_path: Path) -> None:
    db = Database(tmp_path / "data")
    published: list[dict[str, Any]] = []

    async def publish(event_type: str, payload: dict[str, Any]) -> None:
        assert event_type == "alarm.broker_dropped"
        published.append(payload)

    try:
        drops = BrokerDrops(publish, db)
        assert await drops.observed(40) == 0  # first reading ever: a baseline, not ours to report
        assert await drops.observed(40) == 0
        assert await drops.observed(55) == 15
        assert await drops.observed(3) == 3  # lower: the broker restarted, all of it is new
        again = BrokerDrops(publish, db)  # the agent restarted: it carries on from the database
        assert await again.observed(10) == 7
    finally:
        db.close()
    assert published == [{"count": 15, "broker_total": 55}, {"count": 3, "broker_total": 3},
                         {"count": 7, "broker_total": 10}]
    assert [parse_count(b) for b in (b"12", b" 7\n", b"-1", b"x", b"")] == [12, 7, None, None, None]


async def test_a_message_stored_but_not_acknowledged_before_a_crash_is_not_stored_twice(
    tmp_path: Path, store_broker: Broker
) -> None:
    """Issue 14.8: the event committed, then the connection dies before the PUBACK (a crash in between):
    the broker delivers the message again (DUP) and it used to be stored again with a new event_id."""
    db = Database(tmp_path / "data")
    outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1 << 22)
    await outbox.open()
    holder: list[MqttDeviceGateway] = []

    class CrashAfterCommit:
        crashed = False

        async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
            await outbox.publish(event_type, payload)

        async def publish_from_message(
            self, event_type: str, payload: dict[str, Any], key: str, *, redelivered: bool
        ) -> bool:
            stored = await outbox.publish_from_message(event_type, payload, key, redelivered=redelivered)
            if not self.crashed:
                self.crashed = True
                conn = holder[0]._conn
                assert conn is not None
                conn.abort("crash after the commit, before the PUBACK")
            return stored is not None

        async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
            return None

        def bad_input(self, source: str, reason: str) -> None:
            return None

    gateway = MqttDeviceGateway(Endpoint(store_broker.host, store_broker.port, "gw-dup", session_expiry=3600),
                                CrashAfterCommit(), registry=DeviceRegistry(AdoptPolicy.AUTO), backoff_max=0.3)
    holder.append(gateway)
    devices = Devices(store_broker)
    task = asyncio.create_task(gateway.run())
    try:
        await wait_until(lambda: gateway.connected, timeout=10)
        await asyncio.to_thread(devices.publish, range(1))
        await wait_until(lambda: gateway.duplicates == 1 and gateway.connections >= 2, timeout=15)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        devices.stop()
    stored = [json.loads(m.body) for m in outbox.read_events(0, 100) if m.topic.endswith("/device.event")]
    db.close()
    assert gateway.connections >= 2
    assert len(stored) == 1, stored
    assert len(stored[0]["payload"]["msg_key"]) == 24
