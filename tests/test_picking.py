"""The picking service against a real base-station emulator on a pty, with the cloud unreachable (events wait in
the outbox): bad requests refused without harm, unlit lines, substitutions, the picking zone's fast check-in, the
repair of a restore a crash interrupted, and staff scans that name no open line left to the other scan paths."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from edge_agent.services.picking import PickingError
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import running_agent, wait_until
from tests.support.broker import Broker
from tests.support.mqtt_device import handheld as handheld_on
from tests.support.subscriber import CloudSubscriber
from tests.test_picking_end_to_end import barcode, config_for, led, shows


async def stock(agent: Agent, emu: BaseStationEmulator, paired: int) -> dict[str, str]:
    """Products p-0..p-5; the first `paired` tags (sorted) show p-i. Returns tag -> price picture hash."""
    assert agent.labels is not None and agent.catalog is not None
    labels = agent.labels
    tags = sorted(t.hex() for t in emu.tags)
    await wait_until(lambda: len(labels.registry.all()) == len(tags), timeout=20)
    await agent.catalog.upsert([
        Product.model_validate({"sku": f"p-{i}", "name": f"Product {i}", "price": "2.50", "currency": "CNY",
                                "barcode": barcode(i)})
        for i in range(6)
    ])  # fmt: skip
    await agent.catalog.pair_tags([(t, f"p-{i}") for i, t in enumerate(tags[:paired])])
    await wait_until(lambda: labels.progress()["confirmed"] == paired, timeout=60)
    return {t: emu.tag_hash(bytes.fromhex(t)).hex() for t in tags[:paired]}


def outbox_events(agent: Agent, event_type: str) -> list[dict[str, Any]]:
    assert agent.outbox is not None
    docs = [json.loads(m.body) for m in agent.outbox.read_events(0, 10_000)]
    return [d["payload"] for d in docs if d["type"] == event_type]


async def test_bad_requests_are_refused_and_change_nothing_with_the_cloud_unreachable(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(5, seed=2), checkin_interval=1.0, air_rate=200_000, seed=2)
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config_for(tmp_path, None)) as agent:
        picking = agent.picking
        assert picking is not None
        price = await stock(agent, emu, 3)
        tags = sorted(price)
        # p-5 is on no tag: its line is unlit, listed, and confirmed on the board.
        plist = await picking.start("A", picker="li", colour=None, order_ids=[],
                                    lines=[("O1", "p-0", 2), ("O1", "p-5", 1), ("O2", "p-1", 1)])
        assert plist.colour == "red" and [len(x.tags) for x in plist.lines] == [1, 0, 1]
        second = await picking.start("B", picker="wang", colour=None, order_ids=["O3"], lines=[("O3", "p-2", 1)])
        assert second.colour == "green"  # the colour fewest active lists use
        refusals: list[tuple[Any, str]] = [
            (picking.start("A", picker="x", colour="red", order_ids=[], lines=[("O", "p-0", 1)]), "duplicate_list"),
            (picking.start("C", picker="x", colour="pink", order_ids=[], lines=[("O", "p-0", 1)]), "invalid_payload"),
            (picking.start("C", picker="x", colour=None, order_ids=[], lines=[("O", "p-0", 0)]), "bad_quantity"),
            (picking.start("C", picker="x", colour=None, order_ids=[], lines=[]), "invalid_payload"),
            (picking.confirm("nope", 1, by="web:t"), "unknown_list"),
            (picking.confirm("A", 9, by="web:t"), "unknown_line"),
            (picking.confirm("A", 1, by="web:t", picked_qty=3), "bad_quantity"),
            (picking.confirm("A", 1, by="web:t", picked_qty=-1), "bad_quantity"),
            (picking.confirm("A", 1, by="web:t", substitute_sku="no-such"), "unknown_sku"),
            (picking.cancel("nope", actor="web:t"), "unknown_list"),
        ]
        for call, code in refusals:
            with pytest.raises(PickingError) as info:
                await call
            assert info.value.code == code, info.value
        assert [p.list_id for p in picking.lists()] == ["B", "A"] and picking.get("C") is None
        # A substitution given by barcode is recorded by sku; the unlit line from the board; then A completes.
        line = await picking.confirm("A", 1, by="web:t", picked_qty=2, substitute_sku=barcode(4))
        assert (line.state, line.substitute_sku, line.picked_qty) == ("substituted", "p-4", 2)
        with pytest.raises(PickingError) as info:
            await picking.confirm("A", 1, by="web:t")
        assert info.value.code == "not_open"
        await picking.confirm("A", 2, by="web:t", picked_qty=0)
        await picking.confirm("A", 3, by="web:t")
        with pytest.raises(PickingError) as info:
            await picking.cancel("A", actor="web:t")
        assert info.value.code == "not_open"
        await picking.cancel("B", actor="web:t")
        await wait_until(lambda: all(led(emu, t) == 0 and shows(emu, t, price[t]) for t in tags), timeout=30)
        # Everything waits in the outbox for the cloud, in order, valid against the contract.
        completed = outbox_events(agent, "pick.completed")
        assert [c["list_id"] for c in completed] == ["A"]
        assert [(x["state"], x.get("substitute_sku")) for x in completed[0]["lines"]] == [
            ("substituted", "p-4"), ("short", None), ("picked", None)
        ]
        assert [s["line_no"] for s in outbox_events(agent, "pick.short")] == [2]
        assert outbox_events(agent, "pick.cancelled")[0]["list_id"] == "B"
        assert len(outbox_events(agent, "pick.line_confirmed")) == 3


async def test_the_zone_goes_fast_and_a_restore_cut_short_by_a_crash_is_finished_at_start(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(6, seed=4), checkin_interval=1.0, air_rate=200_000, seed=4)
    config = config_for(tmp_path, None)
    async with emu.running(PtyPort(tmp_path / "bs0")):
        async with running_agent(config) as agent:
            picking = agent.picking
            assert picking is not None
            price = await stock(agent, emu, 4)
            tags = sorted(price)
            await picking.start("Z", picker="li", colour="blue", order_ids=[], lines=[("O1", "p-0", 1), ("O1", "p-1", 1)])
            await wait_until(lambda: led(emu, tags[0]) == 3 and led(emu, tags[1]) == 3, timeout=15)
            # The whole zone (every paired tag on the base station) is asked for fast check-in; unpaired tags not.
            await wait_until(lambda: all(emu.fast_requests.get(bytes.fromhex(t)) == [60] for t in tags), timeout=15)
            unpaired = [t for t in emu.tags if t.hex() not in price]
            assert unpaired and all(t not in emu.fast_requests for t in unpaired)
            await wait_until(lambda: not shows(emu, tags[0], price[tags[0]]), timeout=30)
        # What a crash right after a confirmation's commit leaves: the line ended, its tag not yet given back.
        assert agent.db is not None
        with contextlib.closing(sqlite3.connect(agent.db.path)) as conn, conn:
            conn.execute("UPDATE pick_lines SET state = 'picked', picked_qty = 1, confirmed_by = 'scan:x', "
                         "confirmed_ms = 1 WHERE list_id = 'Z' AND line_no = 1")
            conn.execute("INSERT INTO tag_restores(tag_id, since_ms) VALUES (?, 1)", (tags[0],))
        async with running_agent(config) as agent:
            # At start: the ended line's tag goes dark with its price back; the open line's tag is relit.
            await wait_until(lambda: led(emu, tags[0]) == 0 and shows(emu, tags[0], price[tags[0]]), timeout=30)
            assert led(emu, tags[1]) == 3 and not shows(emu, tags[1], price[tags[1]])
            assert agent.db is not None
            await wait_until(
                lambda: agent.db is not None
                and agent.db.read(lambda c: c.execute("SELECT COUNT(*) FROM tag_restores").fetchone()[0]) == 0
            )


async def test_a_staff_scan_of_no_open_line_is_relayed_as_before(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu = BaseStationEmulator(mixed(2, seed=6), checkin_interval=1.0, air_rate=200_000, seed=6)
    config = config_for(tmp_path, cloud_broker, local_broker)
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config) as agent:
        assert agent.picking is not None and agent.gateway is not None
        await stock(agent, emu, 2)
        await agent.picking.start("S", picker="hh-9", colour="white", order_ids=[], lines=[("O1", "p-0", 1)])
        handheld = handheld_on(local_broker, "hh-9")
        try:
            await wait_until(lambda: agent.gateway is not None and agent.gateway.connected, timeout=10)
            handheld.scan(barcode(1))  # a product, but no open line wants it
            handheld.scan("not-a-product")
            relayed = await asyncio.to_thread(subscriber.wait_events, 2, 20, "scan.device")
            handheld.scan(barcode(0))
            await asyncio.to_thread(subscriber.wait_events, 1, 20, "pick.completed")
        finally:
            handheld.stop()
    assert [e["payload"]["code"] for e in relayed] == [barcode(1), "not-a-product"]
    assert len([e for e in subscriber.events() if e["type"] == "scan.device"]) == 2


async def test_a_serial_staff_scanner_confirms_a_pick_line(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(2, seed=7), checkin_interval=1.0, air_rate=200_000, seed=7)
    scanner_pty = PtyPort(tmp_path / "scanner0", line_rate=None)
    await scanner_pty.start()
    config = config_for(tmp_path, None, serial_scanners=[str(tmp_path / "scanner0")])
    try:
        async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config) as agent:
            assert agent.picking is not None
            price = await stock(agent, emu, 2)
            tag = sorted(price)[1]
            await agent.picking.start("S", picker="li", colour="green", order_ids=[], lines=[("O1", "p-1", 1)])
            await wait_until(lambda: led(emu, tag) == 2, timeout=15)
            scanner = next(s for s in agent.scanners if s.name == "picking-1")
            await wait_until(lambda: scanner.connected, timeout=10)
            line = await scanner_pty.connection()
            # Noise and a product no line wants change nothing; the line's product confirms it.
            await line.write(b"\x00\xff garbage\r\n" + barcode(0).encode() + b"\r\n")
            await line.write(barcode(1).encode() + b"\r\n")
            await wait_until(lambda: led(emu, tag) == 0 and shows(emu, tag, price[tag]), timeout=30)
            done = agent.picking.get("S")
            assert done is not None and done.state == "completed"
            assert done.lines[0].confirmed_by == "scan:serial:picking-1"
    finally:
        await scanner_pty.close()


async def test_a_line_that_ends_while_a_renewal_is_on_its_way_stays_dark(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(2, seed=9), checkin_interval=1.0, air_rate=200_000, seed=9)
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config_for(tmp_path, None)) as agent:
        picking, labels = agent.picking, agent.labels
        assert picking is not None and labels is not None
        price = await stock(agent, emu, 2)
        tag_of = dict(zip((1, 2), sorted(price), strict=True))  # red, green
        list_of = {1: "R", 2: "G"}
        await picking.start("R", picker="li", colour="red", order_ids=[], lines=[("O1", "p-0", 1)])
        await picking.start("G", picker="wang", colour="green", order_ids=[], lines=[("O2", "p-1", 1)])
        await wait_until(lambda: all(led(emu, tag) == colour for colour, tag in tag_of.items()), timeout=15)
        # The next renewal sends one colour, then the other; while the first is on its way, the other colour's list
        # is cancelled.
        real_led = labels.led
        first: list[int] = []

        async def led_then_cancel(tag_ids: Any, *, colour: int, count: int, period_ms: int) -> dict[str, int | str]:
            answers = await real_led(tag_ids, colour=colour, count=count, period_ms=period_ms)
            if colour in list_of and not first:
                first.append(colour)
                await picking.cancel(list_of[3 - colour], actor="web:t")
            return answers

        labels.led = led_then_cancel  # type: ignore[method-assign]
        await wait_until(lambda: bool(first), timeout=15)
        kept, ended = tag_of[first[0]], tag_of[3 - first[0]]
        await wait_until(lambda: led(emu, ended) == 0 and shows(emu, ended, price[ended]), timeout=30)
        # Three check-ins later the ended line's tag is still dark: the renewal did not light it again.
        await asyncio.sleep(3)
        assert led(emu, ended) == 0 and emu.led_flashes[bytes.fromhex(ended)][-1].colour == 0
        assert led(emu, kept) == first[0]
