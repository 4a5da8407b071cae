"""The outbox on a real SQLite file: sequence numbers, boot counter, and the full-outbox policy per class."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud_link.events import EventClass, EventError, classify
from cloud_link.outbox import ENVELOPE_OVERHEAD, OUTBOX_FULL_ALARM, Outbox, OutboxFullError
from cloud_link.topics import Topics
from edge_agent.metrics import AgentMetrics
from edge_agent.storage import Database

MIB = 1024 * 1024


async def open_outbox(data_dir: Path, max_bytes: int = MIB, metrics: AgentMetrics | None = None) -> tuple[Database, Outbox]:
    db = Database(data_dir)
    outbox = Outbox(db, Topics("retail/v1", "store-0001"), max_bytes=max_bytes, observer=metrics)
    await outbox.open()
    return db, outbox


def payload_of(size: int) -> dict:
    """A payload whose accounted size is exactly `size` bytes."""
    filler = size - ENVELOPE_OVERHEAD - len('{"x":""}')
    return {"x": "a" * filler}


async def test_seq_grows_and_is_never_reused_across_restarts(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path)
    seqs = [(await outbox.publish("order.created", {"i": i})).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert outbox.boot == 1
    await outbox.ack(seqs)  # the outbox is now empty
    assert outbox.stats().events == 0
    db.close()
    db, outbox = await open_outbox(tmp_path)
    assert outbox.boot == 2
    assert (await outbox.publish("order.created", {})).seq == 6
    db.close()


async def test_classes() -> None:
    assert classify("order.created") is EventClass.CRITICAL
    assert classify("pickup.collected") is EventClass.CRITICAL
    assert classify("scan.tag") is EventClass.CRITICAL
    assert classify("alarm.door_forced") is EventClass.CRITICAL
    assert classify("audit.door_opened") is EventClass.CRITICAL
    assert classify("telemetry.device") is EventClass.TELEMETRY
    assert classify("tag.updated") is EventClass.STANDARD


async def test_bad_events_are_refused_with_clear_errors(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path)
    with pytest.raises(EventError, match="invalid event type"):
        await outbox.publish("Order Created", {})
    with pytest.raises(EventError, match="JSON object"):
        await outbox.publish("order.created", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(EventError, match="not JSON-serialisable"):
        await outbox.publish("order.created", {"when": object()})
    with pytest.raises(EventError, match="bytes, more than"):
        await outbox.publish("order.created", {"x": "a" * 300_000})
    assert outbox.stats().events == 0 and outbox.stats().last_seq == 0
    db.close()


async def test_full_outbox_telemetry_drops_its_oldest(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    db, outbox = await open_outbox(tmp_path, max_bytes=MIB, metrics=metrics)
    # 1 KiB each: the soft limit (95 % of 1 MiB) holds 972 of them.
    for i in range(1200):
        await outbox.publish("telemetry.device", {"i": i, **payload_of(1024)})
    stats = outbox.stats()
    assert stats.bytes <= outbox.soft_limit
    dropped = int(metrics.dropped.labels(cls="telemetry")._value.get())
    assert dropped == 1200 - stats.events
    rows = db.read(lambda c: c.execute("SELECT body FROM outbox ORDER BY seq").fetchall())
    import json

    kept = [json.loads(r[0])["payload"]["i"] for r in rows]
    assert kept == list(range(1200 - len(kept), 1200)), "the newest telemetry is kept, the oldest dropped"
    db.close()


async def test_full_outbox_never_drops_critical_events_but_refuses_new_ones(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    db, outbox = await open_outbox(tmp_path, max_bytes=MIB, metrics=metrics)
    stored = 0
    with pytest.raises(OutboxFullError, match="outbox full"):
        for _ in range(2000):
            await outbox.publish("order.created", payload_of(1024))
            stored += 1
    # Critical events may use the reserve: the outbox filled to the hard limit.
    assert stored == MIB // 1024
    assert outbox.stats().events == stored + 1  # plus the one alarm event
    assert outbox.alarm_active
    assert metrics.full_alarm_active._value.get() == 1
    assert metrics.refused.labels(cls="critical")._value.get() == 1
    types = db.read(lambda c: [r[0] for r in c.execute("SELECT type FROM outbox ORDER BY seq")])
    assert types[-1] == OUTBOX_FULL_ALARM and types.count("order.created") == stored
    # Every class but telemetry is refused now; telemetry finds nothing of its own to drop.
    for event_type in ("pickup.ready", "scan.tag", "audit.door_opened", "alarm.door_forced", "tag.updated"):
        with pytest.raises(OutboxFullError):
            await outbox.publish(event_type, {"x": 1})
    with pytest.raises(OutboxFullError):
        await outbox.publish("telemetry.device", {"x": 1})
    # Nothing critical was dropped.
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE type='order.created'").fetchone()[0]) == stored
    # Draining clears the alarm and new events are accepted again.
    seqs = db.read(lambda c: [r[0] for r in c.execute("SELECT seq FROM outbox")])
    await outbox.ack(seqs)
    assert not outbox.alarm_active
    await outbox.publish("order.created", {"after": True})
    db.close()


async def test_standard_events_leave_the_reserve_to_critical_ones(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path, max_bytes=MIB)
    with pytest.raises(OutboxFullError):
        for _ in range(2000):
            await outbox.publish("tag.updated", payload_of(1024))
    assert outbox.stats().bytes <= outbox.soft_limit
    # The reserve is still there for orders.
    for _ in range(10):
        await outbox.publish("order.created", payload_of(1024))
    db.close()


async def test_telemetry_pressure_never_evicts_critical_events(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path, max_bytes=MIB)
    for i in range(300):
        await outbox.publish("order.created", {"i": i, **payload_of(1024)})
    for i in range(2000):
        await outbox.publish("telemetry.device", {"i": i, **payload_of(1024)})
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE type='order.created'").fetchone()[0]) == 300
    db.close()


async def test_device_state_keeps_only_the_latest_per_device(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path)
    for v in range(10):
        await outbox.put_state("tag-7", {"v": v})
    states = outbox.read_states(10)
    assert len(states) == 1
    import json

    assert json.loads(states[0].body)["state"] == {"v": 9}
    with pytest.raises(ValueError, match="invalid device id"):
        await outbox.put_state("bad/id", {})
    db.close()


async def test_publish_returns_only_after_the_commit(tmp_path: Path) -> None:
    db, outbox = await open_outbox(tmp_path)
    events = await asyncio.gather(*(outbox.publish("scan.tag", {"i": i}) for i in range(200)))
    # Read with a separate connection: everything that returned is on disk.
    import sqlite3

    other = sqlite3.connect(tmp_path / "agent.db")
    ids = {r[0] for r in other.execute("SELECT event_id FROM outbox")}
    assert {e.event_id for e in events} <= ids
    other.close()
    db.close()


async def test_dropped_telemetry_is_reported_so_gaps_can_be_explained(tmp_path: Path) -> None:
    from cloud_link import contract

    db, outbox = await open_outbox(tmp_path, max_bytes=MIB)
    for i in range(1200):
        await outbox.publish("telemetry.device", {"i": i, **payload_of(1024)})
    kept = set(db.read(lambda c: [r[0] for r in c.execute("SELECT seq FROM outbox")]))
    report = await outbox.report_dropped_telemetry()
    assert report is not None and report.type == "alarm.telemetry_dropped"
    covered = {s for first, last in report.payload["seq_ranges"] for s in range(first, last + 1)}
    # Every seq that is missing is covered by the report, and nothing else is.
    assert covered == set(range(1, 1201)) - kept
    assert report.payload["count"] == len(covered)
    contract.validate_event(db.read(lambda c: c.execute("SELECT body FROM outbox WHERE seq = ?", (report.seq,)).fetchone()[0]))
    assert await outbox.report_dropped_telemetry() is None, "reported once"
    db.close()


async def test_a_redelivered_message_is_stored_once_and_only_the_newest_keys_are_kept(tmp_path: Path) -> None:
    from cloud_link.outbox import MESSAGE_KEYS_KEPT

    db, outbox = await open_outbox(tmp_path)
    try:
        first = await outbox.publish_from_message("scan.device", {"k": 1}, "a" * 24, redelivered=False)
        assert first is not None and first.seq == 1
        # The broker's redelivery of that message: recognised, no event, no seq used.
        assert await outbox.publish_from_message("scan.device", {"k": 1}, "a" * 24, redelivered=True) is None
        # Not flagged as a redelivery (a packet id reused 65,535 messages later): stored.
        again = await outbox.publish_from_message("scan.device", {"k": 1}, "a" * 24, redelivered=False)
        assert again is not None and again.seq == 2
        # A redelivered message never stored before (the crash came before the commit): stored.
        assert await outbox.publish_from_message("scan.device", {"k": 2}, "b" * 24, redelivered=True) is not None
        # Survives a restart: the key went in with the event.
        db.close()
        db, outbox = await open_outbox(tmp_path)
        assert await outbox.publish_from_message("scan.device", {"k": 2}, "b" * 24, redelivered=True) is None
        total = MESSAGE_KEYS_KEPT + 2000
        for start in range(0, total, 1000):  # a thousand at a time: group commits
            await asyncio.gather(*(
                outbox.publish_from_message("telemetry.device", {}, f"{n:024x}", redelivered=False)
                for n in range(start, start + 1000)
            ))
        kept = db.read(lambda c: c.execute("SELECT COUNT(*) FROM message_keys").fetchone()[0])
        assert kept <= MESSAGE_KEYS_KEPT + 1000
    finally:
        db.close()
