"""Events reach an independent subscriber on a real cloud broker: every field, in seq order, none lost."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber


def assert_in_order_without_gaps(events: list[dict], first_seq: int, count: int) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first_seq, first_seq + count)), seqs[:20]


async def test_events_arrive_with_every_field_in_seq_order(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "data", cloud_broker)
    async with running_agent(config) as agent:
        returned = []
        for i in range(50):
            returned.append(await agent.publish("order.test", {"order_id": f"o-{i}", "total_cents": 1280 + i}))
        events = await asyncio.to_thread(subscriber.wait_events, 50)
    assert_in_order_without_gaps(events, 1, 50)
    for ev, ret in zip(events, returned, strict=True):
        assert set(ev) == {"v", "event_id", "seq", "boot", "store_id", "type", "ts", "payload"}
        assert ev["v"] == 1
        assert ev["event_id"] == ret.event_id
        assert uuid.UUID(ev["event_id"]).version == 7
        assert ev["seq"] == ret.seq
        assert ev["boot"] == 1
        assert ev["store_id"] == "store-0001"
        assert ev["type"] == "order.test"
        assert ev["ts"].endswith("Z") and len(ev["ts"]) == len("2026-11-22T18:13:00.123Z")
        assert ev["payload"] == ret.payload
    topics = {m.topic for m in subscriber.all if "/events/" in m.topic}
    assert topics == {"retail/v1/store-0001/events/order.test"}


async def test_concurrent_producers_share_commits_and_keep_order(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "data", cloud_broker)
    async with running_agent(config) as agent:
        assert agent.db is not None
        commits_before = agent.db.writer.stats.commits

        async def producer(k: int) -> list[int]:
            return [(await agent.publish("scan.test", {"producer": k, "i": i})).seq for i in range(40)]

        results = await asyncio.gather(*(producer(k) for k in range(25)))
        commits = agent.db.writer.stats.commits - commits_before
        events = await asyncio.to_thread(subscriber.wait_events, 1000)
    all_seqs = sorted(s for r in results for s in r)
    assert all_seqs == list(range(1, 1001))
    assert_in_order_without_gaps(events, 1, 1000)
    # Group commit: 1000 durable events took far fewer than 1000 fsyncs.
    assert commits < 500, commits


async def test_broker_down_then_back_delivers_everything_in_order(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "data", cloud_broker)
    async with running_agent(config) as agent:
        await agent.publish("order.test", {"i": 0})
        await asyncio.to_thread(subscriber.wait_events, 1)
        subscriber.stop()
        await asyncio.to_thread(cloud_broker.stop)
        assert agent.session is not None
        await wait_until(lambda: not agent.session.connected, timeout=10)
        for i in range(1, 301):
            await agent.publish("order.test", {"i": i})
        assert agent.outbox is not None
        assert agent.outbox.stats().events == 300
        await asyncio.to_thread(cloud_broker.start)
        # A subscriber with a persistent session would see queued messages; ours reconnects first and
        # then watches the agent resend from its outbox.
        subscriber2 = CloudSubscriber(cloud_broker, client_id="cloud-test-subscriber-2").start()
        try:
            await wait_until(lambda: agent.outbox.stats().events == 0, timeout=30)
            events = await asyncio.to_thread(subscriber2.wait_events, 300)
        finally:
            subscriber2.stop()
        assert agent.metrics.reconnects._value.get() >= 1
    by_seq = {e["seq"]: e for e in events}
    assert sorted(by_seq) == list(range(2, 302))
    # In order on the wire, and no gap.
    seqs = [e["seq"] for e in events if e["seq"] >= 2]
    assert seqs == sorted(seqs)
    assert [by_seq[s]["payload"]["i"] for s in range(2, 302)] == list(range(1, 301))


async def test_tls_with_client_certificate(tmp_path: Path, tls_files) -> None:
    broker = Broker(tmp_path / "tls-broker", tls=tls_files, require_certificate=True)
    broker.start()
    sub = CloudSubscriber(broker).start()
    try:
        config = agent_config(tmp_path / "data", broker)
        async with running_agent(config) as agent:
            await agent.publish("pickup.ready", {"order_id": "p-1", "locker": "A-03"})
            events = await asyncio.to_thread(sub.wait_events, 1)
            assert agent.session is not None and agent.session.connected
        assert events[0]["payload"] == {"order_id": "p-1", "locker": "A-03"}
    finally:
        sub.stop()
        broker.stop()


async def test_tls_refuses_a_broker_signed_by_another_ca(tmp_path: Path, tls_files) -> None:
    from tests.support.broker import TlsFiles

    other = TlsFiles.generate(tmp_path / "other-ca")
    broker = Broker(tmp_path / "tls-broker", tls=tls_files)
    broker.start()
    try:
        config = agent_config(tmp_path / "data", broker, cloud={"tls": {"ca_file": str(other.ca)}})
        async with running_agent(config, wait_for_cloud=False) as agent:
            await agent.publish("order.test", {"i": 1})
            await asyncio.sleep(1.5)
            assert agent.session is not None and not agent.session.connected
            assert agent.outbox is not None and agent.outbox.stats().events == 1
    finally:
        broker.stop()


async def test_device_state_is_retained_latest_per_device(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    config = agent_config(tmp_path / "data", cloud_broker, cloud={"enabled": False})
    # Produce while the link is off, so only the latest state per device may go up.
    async with running_agent(config) as agent:
        assert agent.outbox is not None
        for battery in (3000, 2950, 2900):
            await agent.outbox.put_state("tag-1", {"battery_mv": battery})
        await agent.outbox.put_state("kiosk-1", {"online": True})
    config = agent_config(tmp_path / "data", cloud_broker)
    async with running_agent(config):
        msgs = await asyncio.to_thread(
            subscriber.wait_for, lambda ms: sum("/state/" in m.topic for m in ms) >= 2
        )
    states = [m for m in msgs if "/state/" in m.topic]
    by_topic = {m.topic: m.json() for m in states}
    assert by_topic["retail/v1/store-0001/state/tag-1"]["state"] == {"battery_mv": 2900}
    assert len([m for m in states if m.topic.endswith("tag-1")]) == 1
    # Retained: a subscriber arriving later still sees it.
    late = CloudSubscriber(cloud_broker, topic="retail/v1/store-0001/state/#", client_id="late").start()
    try:
        got = await asyncio.to_thread(late.wait_for, lambda ms: len(ms) >= 2)
        assert all(m.retain for m in got)
    finally:
        late.stop()


async def test_username_and_password_from_the_environment(tmp_path: Path) -> None:
    from tests.support.broker import password_file

    folder = tmp_path / "auth-broker"
    folder.mkdir()
    broker = Broker(folder, password_file=password_file(folder, {"store-0001": "right-password", "cloud": "c"}))
    broker.start()
    sub = CloudSubscriber(broker, username="cloud", password="c").start()
    try:
        config = agent_config(tmp_path / "data", broker, cloud={"username": "store-0001"})
        # Wrong password: refused, nothing lost, the agent keeps retrying.
        async with running_agent(config, wait_for_cloud=False, env={"EDGE_AGENT_CLOUD_PASSWORD": "wrong"}) as agent:
            await agent.publish("order.test", {"n": 1})
            await asyncio.sleep(1.0)
            assert agent.session is not None and not agent.session.connected
            assert agent.outbox is not None and agent.outbox.stats().events == 1
        async with running_agent(config, env={"EDGE_AGENT_CLOUD_PASSWORD": "right-password"}) as agent:
            events = await asyncio.to_thread(sub.wait_events, 1)
            assert agent.session is not None and agent.session.connected
        assert events[0]["payload"] == {"n": 1}
        sub.assert_contract()
    finally:
        sub.stop()
        broker.stop()


async def test_a_missing_password_stops_the_start_with_the_key_path(tmp_path: Path, cloud_broker: Broker) -> None:
    import pytest

    from edge_agent.runtime import Agent, StartupError

    config = agent_config(tmp_path / "data", cloud_broker, cloud={"username": "store-0001"})
    with pytest.raises(StartupError, match=r"cloud\.username: set, but no cloud broker password"):
        Agent(config, env={})
