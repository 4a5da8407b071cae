"""Pick-to-light end to end: pick.start over the cloud broker -> the emulated tags of exactly the listed products
flash in the picker's colour and show the pick page -> a handheld scan on the in-store broker, a tag's button and
the web path confirm lines -> LEDs off, price pages back, pick.* events on the cloud broker. Cancel and a restart
in the middle of a pick give every tag its price page back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from devices.labels.pages import PickEntry, PickPage, render_page
from edge_agent.runtime import Agent
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.tag_types import tag_type
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.mqtt_device import handheld as handheld_on
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"
NAMES = ["有机纯牛奶 250ml", "Jasmine rice 5 kg", "农夫山泉 550ml", "Croissant", "苹果", "Green tea", "豆腐", "Salt"]
GREEN, BLUE = 2, 3


def barcode(i: int) -> str:
    body = f"690123456{i:03d}"
    total = sum(int(d) * (3 if n % 2 else 1) for n, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def products(n: int) -> list[dict[str, Any]]:
    return [
        {"sku": f"sku-{i}", "name": NAMES[i % len(NAMES)], "price": f"{3 + i}.50", "currency": "CNY",
         "barcode": barcode(i)}
        for i in range(n)
    ]  # fmt: skip


def command(cid: str, ctype: str, payload: dict[str, Any]) -> str:
    return json.dumps({"command_id": cid, "type": ctype, "payload": payload})


def config_for(tmp_path: Path, cloud: Broker | None, local: Broker | None = None, **picking: Any) -> Any:
    return agent_config(
        tmp_path / "data",
        cloud,
        local,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        labels={"adopt": "auto"},
        local_broker={"adopt": "auto"} if local is not None else {},
        picking={"led_renew_s": 5, "fast_s": 60, **picking},
        commands={"max_payload_bytes": 1_000_000},
    )


async def stocked(agent: Agent, emu: BaseStationEmulator, subscriber: CloudSubscriber, n: int) -> dict[str, str]:
    """Products sku-i on tag i (sorted ids), every tag showing its price; returns tag -> price picture hash."""
    assert agent.labels is not None
    labels = agent.labels
    tags = sorted(t.hex() for t in emu.tags)
    await wait_until(lambda: len(labels.registry.all()) == n, timeout=20)
    subscriber.publish(COMMANDS, command("c-cat", "catalog.upsert", {"products": products(n)}))
    subscriber.publish(
        COMMANDS, command("c-pair", "tag.pair", {"pairs": [{"tag_id": t, "sku": f"sku-{i}"} for i, t in enumerate(tags)]})
    )
    await wait_until(lambda: labels.progress()["confirmed"] == n, timeout=60)
    await wait_until(lambda: all(shows(emu, t, labels.registry.get(t).current_hash) for t in tags), timeout=30)  # type: ignore[union-attr]
    return {t: emu.tag_hash(bytes.fromhex(t)).hex() for t in tags}


def shows(emu: BaseStationEmulator, tag: str, picture_hash: str | None) -> bool:
    return emu.tag_hash(bytes.fromhex(tag)).hex() == picture_hash


def led(emu: BaseStationEmulator, tag: str) -> int:
    record = emu.tags[bytes.fromhex(tag)].led
    return 0 if record is None else record.colour


def pick_page_hash(agent: Agent, tag: str, entries: list[PickEntry]) -> str:
    assert agent.labels is not None and agent.catalog is not None
    rec = agent.labels.registry.get(tag)
    assert rec is not None and rec.sku is not None
    product = agent.catalog.get(rec.sku)
    assert product is not None
    page = PickPage(product.name, tuple(entries), "zh_CN")
    return render_page(page, tag_type(rec.type_code), rotation=rec.rotation).hash.hex()


async def command_ok(subscriber: CloudSubscriber, cid: str) -> dict[str, Any]:
    """The command's result (from the cloud broker's result topic); asserts it succeeded."""

    def find() -> dict[str, Any] | None:
        for event in subscriber.wait_events(0, 1, "command.result"):
            if event["payload"]["command_id"] == cid:
                return dict(event["payload"])
        return None

    for _ in range(300):
        result = await asyncio.to_thread(find)
        if result is not None:
            assert result["status"] == "ok", result
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for command {cid}")


async def test_two_pickers_light_exactly_their_tags_and_scan_button_and_web_put_them_out(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu = BaseStationEmulator(mixed(8, seed=5), checkin_interval=1.0, air_rate=200_000, seed=5)
    port = PtyPort(tmp_path / "bs0")
    async with emu.running(port), running_agent(config_for(tmp_path, cloud_broker, local_broker)) as agent:
        assert agent.picking is not None and agent.gateway is not None
        price = await stocked(agent, emu, subscriber, 8)
        tags = sorted(price)
        subscriber.publish(COMMANDS, command("p1", "pick.start", {
            "list_id": "L1", "picker": "hh-1", "colour": "green", "order_ids": ["O1"],
            "lines": [{"order_id": "O1", "sku": "sku-0", "quantity": 2}, {"order_id": "O1", "sku": "sku-1", "quantity": 1}],
        }))  # fmt: skip
        await command_ok(subscriber, "p1")
        subscriber.publish(COMMANDS, command("p2", "pick.start", {
            "list_id": "L2", "picker": "li", "colour": "blue",
            "lines": [{"order_id": "O2", "sku": "sku-1", "quantity": 3}, {"order_id": "O2", "sku": "sku-2", "quantity": 1}],
        }))  # fmt: skip
        result = await command_ok(subscriber, "p2")
        assert result["result"] == {"list_id": "L2", "state": "active", "colour": "blue", "lines": 2, "open_lines": 2,
                                    "lit_tags": 2, "unlit_lines": []}
        t0, t1, t2 = tags[:3]
        # Lit in the picker's colour; the shared tag in one of both; the pick pages exactly as rendered.
        await wait_until(lambda: led(emu, t0) == GREEN and led(emu, t2) == BLUE and led(emu, t1) in (GREEN, BLUE),
                         timeout=15)
        page0 = pick_page_hash(agent, t0, [PickEntry(2, "O1", "hh-1", "green")])
        page1 = pick_page_hash(agent, t1, [PickEntry(1, "O1", "hh-1", "green"), PickEntry(3, "O2", "li", "blue")])
        page2 = pick_page_hash(agent, t2, [PickEntry(1, "O2", "li", "blue")])
        await wait_until(lambda: shows(emu, t0, page0) and shows(emu, t1, page1) and shows(emu, t2, page2), timeout=30)
        # The shared tag takes both colours in turn.
        await wait_until(lambda: {r.colour for r in emu.led_flashes[bytes.fromhex(t1)]} >= {GREEN, BLUE}, timeout=20)

        # A handheld scan of the first product confirms L1's line: tag 0 goes dark and shows its price again.
        handheld = handheld_on(local_broker, "hh-1")
        try:
            await wait_until(lambda: agent.gateway is not None and agent.gateway.connected, timeout=10)
            handheld.scan(barcode(0))
            await wait_until(lambda: led(emu, t0) == 0 and shows(emu, t0, price[t0]), timeout=20)
            # The tag's button confirms L2's line of product 2.
            assert emu.press_button(bytes.fromhex(t2), 1)
            await wait_until(lambda: led(emu, t2) == 0 and shows(emu, t2, price[t2]), timeout=20)
            # Both lists want product 1: the handheld's own picker (hh-1) gets it; L1 completes.
            handheld.scan(barcode(1))
            completed = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pick.completed")
        finally:
            handheld.stop()
        assert completed[0]["payload"]["list_id"] == "L1"
        lines = completed[0]["payload"]["lines"]
        assert [(x["sku"], x["state"], x["picked_qty"]) for x in lines] == [("sku-0", "picked", 2), ("sku-1", "picked", 1)]
        assert all(x["elapsed_ms"] >= 0 for x in lines)
        # Tag 1 still has L2's line: blue only, and a page with L2's entry alone.
        page1_after = pick_page_hash(agent, t1, [PickEntry(3, "O2", "li", "blue")])
        await wait_until(lambda: shows(emu, t1, page1_after), timeout=20)
        await wait_until(lambda: led(emu, t1) == BLUE, timeout=15)
        # The web board's path: a short pick of product 1 for L2.
        line = await agent.picking.confirm("L2", 1, by="web:staff1", picked_qty=1)
        assert line.state == "short"
        await wait_until(lambda: led(emu, t1) == 0 and shows(emu, t1, price[t1]), timeout=20)
        events = await asyncio.to_thread(subscriber.wait_events, 2, 20, "pick.completed")
        short = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pick.short")
        confirmed = await asyncio.to_thread(subscriber.wait_events, 4, 20, "pick.line_confirmed")
    assert events[1]["payload"]["list_id"] == "L2" and events[1]["payload"]["short_lines"] == 1
    assert short[0]["payload"] == {"list_id": "L2", "line_no": 1, "order_id": "O2", "sku": "sku-1", "quantity": 3,
                                   "picked_qty": 1, "picker": "li"}
    assert sorted((e["payload"]["list_id"], e["payload"]["line_no"], e["payload"]["by"]) for e in confirmed) == [
        ("L1", 1, "scan"), ("L1", 2, "scan"), ("L2", 1, "web"), ("L2", 2, "button")
    ]
    # No other tag was ever lit or changed; every tag shows its price; no tag.button for the consumed press.
    for tag in tags[3:]:
        assert bytes.fromhex(tag) not in emu.led_flashes
        assert shows(emu, tag, price[tag])
    assert all(shows(emu, t, price[t]) and led(emu, t) == 0 for t in tags)
    assert not [e for e in subscriber.events() if e["type"] == "tag.button"]


async def test_cancel_and_restart_in_the_middle_of_a_pick_give_every_tag_its_price_back(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu = BaseStationEmulator(mixed(6, seed=8), checkin_interval=1.0, air_rate=200_000, seed=8)
    port = PtyPort(tmp_path / "bs0")
    config = config_for(tmp_path, cloud_broker)
    async with emu.running(port):
        async with running_agent(config) as agent:
            price = await stocked(agent, emu, subscriber, 6)
            tags = sorted(price)
            subscriber.publish(COMMANDS, command("p1", "pick.start", {
                "list_id": "L9", "picker": "wang",
                "lines": [{"order_id": "O9", "sku": f"sku-{i}", "quantity": i + 1} for i in range(3)],
            }))  # fmt: skip
            await command_ok(subscriber, "p1")
            await wait_until(lambda: all(led(emu, t) == 1 for t in tags[:3]), timeout=15)  # red: the first free colour
            await wait_until(lambda: not any(shows(emu, t, price[t]) for t in tags[:3]), timeout=60)
            on_pick_page = {t: emu.tag_hash(bytes.fromhex(t)).hex() for t in tags[:3]}
        # The agent stops in the middle of the pick. Its LEDs run out by themselves meanwhile (here: cleared).
        for t in tags[:3]:
            emu.tags[bytes.fromhex(t)].led = None
        async with running_agent(config) as agent:
            assert agent.picking is not None
            # Back up: the open list is relit and its pages stay.
            await wait_until(lambda: all(led(emu, t) == 1 for t in tags[:3]), timeout=15)
            assert all(shows(emu, t, on_pick_page[t]) for t in tags[:3])
            assert [p.list_id for p in agent.picking.lists()] == ["L9"]
            subscriber.publish(COMMANDS, command("p2", "pick.cancel", {"list_id": "L9"}))
            result = await command_ok(subscriber, "p2")
            assert result["result"]["state"] == "cancelled"
            await wait_until(lambda: all(led(emu, t) == 0 and shows(emu, t, price[t]) for t in tags), timeout=60)
            cancelled = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pick.cancelled")
            assert cancelled[0]["payload"]["open_lines"] == 3
            assert agent.db is not None
            assert agent.db.read(lambda c: c.execute("SELECT COUNT(*) FROM tag_restores").fetchone()[0]) == 0
        for tag in tags[3:]:
            assert bytes.fromhex(tag) not in emu.led_flashes
