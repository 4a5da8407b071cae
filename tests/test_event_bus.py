"""The in-process event bus: durable first, then to local subscribers, who can never slow producers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cloud_link.bus import EventBus
from cloud_link.outbox import Outbox, OutboxFullError
from cloud_link.topics import Topics
from edge_agent.storage import Database


async def test_subscribers_get_committed_events_by_prefix(tmp_path: Path) -> None:
    db = Database(tmp_path)
    outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1024 * 1024)
    await outbox.open()
    bus = EventBus(outbox)
    orders = bus.subscribe("order.")
    everything = bus.subscribe()
    await bus.publish("order.created", {"id": 1})
    await bus.publish("scan.tag", {"code": "x"})
    got = orders.get_nowait()
    assert got is not None and got.type == "order.created" and got.seq == 1
    assert orders.get_nowait() is None
    assert [everything.get_nowait().type, everything.get_nowait().type] == ["order.created", "scan.tag"]  # type: ignore[union-attr]
    # What a subscriber saw is on disk.
    on_disk = sqlite3.connect(tmp_path / "agent.db").execute("SELECT event_id FROM outbox").fetchall()
    assert (got.event_id,) in on_disk
    orders.close()
    await bus.publish("order.created", {"id": 2})
    assert orders.get_nowait() is None
    db.close()


async def test_a_slow_subscriber_loses_its_oldest_and_never_blocks(tmp_path: Path) -> None:
    db = Database(tmp_path)
    outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1024 * 1024)
    await outbox.open()
    bus = EventBus(outbox)
    slow = bus.subscribe(maxsize=10)
    for i in range(25):
        await bus.publish("telemetry.device", {"i": i})
    assert slow.dropped == 15
    first = slow.get_nowait()
    assert first is not None and first.payload == {"i": 15}
    db.close()


async def test_refused_events_reach_no_subscriber(tmp_path: Path) -> None:
    db = Database(tmp_path)
    outbox = Outbox(db, Topics("retail/v1", "s1"), max_bytes=1024 * 1024)
    await outbox.open()
    bus = EventBus(outbox)
    sub = bus.subscribe("order.")
    try:
        for _ in range(2000):
            await bus.publish("order.created", {"x": "a" * 1000})
    except OutboxFullError:
        pass
    count = 0
    while sub.get_nowait() is not None:
        count += 1
    stored = db.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE type='order.created'").fetchone()[0])
    assert count == min(stored, 1000)
    db.close()
