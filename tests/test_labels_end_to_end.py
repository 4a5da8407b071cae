"""Price tags end to end: cloud command -> catalog -> render -> base station over a real pty -> the
emulated tag shows exactly the rendered picture -> tag.updated on the cloud broker."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

from devices.labels.render import render_label
from edge_agent.services.catalog import Product
from edge_agent.wiring.labels import product_to_content
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import tag_type
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"


def product(i: int, price: str) -> dict:
    return {
        "sku": f"sku-{i:03d}",
        "name": ["有机纯牛奶 250ml", "Bio Vollmilch 1 L", "Jasmine rice 5 kg", "农夫山泉 550ml", "Croissant", "苹果"][i % 6],
        "price": price,
        "currency": "CNY",
        "unit_price": price,
        "unit_label": "500 g",
        "barcode": None,
        "origin": "中国",
    }


def command(cid: str, ctype: str, payload: dict) -> str:
    return json.dumps({"command_id": cid, "type": ctype, "payload": payload})


async def emulator_for(tmp_path: Path, n: int) -> tuple[BaseStationEmulator, PtyPort]:
    emu = BaseStationEmulator(mixed(n, seed=3), checkin_interval=1.0, air_rate=200_000, seed=3)
    return emu, PtyPort(tmp_path / "bs0")


async def test_a_price_change_command_ends_with_the_exact_picture_on_the_tag(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu, port = await emulator_for(tmp_path, 6)
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(
        tmp_path / "data",
        cloud_broker,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        labels={"public_base_url": "https://shop.example/store-0001"},
        commands={"max_payload_bytes": 1_000_000},
    )
    async with emu.running(port), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 6, timeout=20)
        subscriber.publish(COMMANDS, command("c1", "catalog.upsert", {"products": [product(i, "12.80") for i in range(6)]}))
        subscriber.publish(
            COMMANDS,
            command("c2", "tag.pair", {"pairs": [{"tag_id": t, "sku": f"sku-{i:03d}"} for i, t in enumerate(tags)]}),
        )
        # Every tag gets its first picture (full), confirmed by hash.
        await asyncio.to_thread(subscriber.wait_events, 6, 60, "tag.updated")
        for t in tags:
            rec = labels.registry.get(t)
            assert rec is not None and rec.current_hash == emu.tag_hash(bytes.fromhex(t)).hex()
        sent_before = labels.stats.sent
        # A price change for one product: only its tag is re-rendered and sent, as a delta.
        subscriber.publish(COMMANDS, command("c3", "catalog.upsert", {"products": [product(0, "9.90")]}))
        updated = await asyncio.to_thread(subscriber.wait_events, 7, 60, "tag.updated")
        assert updated[-1]["payload"]["tag_id"] == tags[0]
        assert labels.stats.sent == sent_before + 1
        # Pixel for pixel: what the tag shows is exactly what the renderer draws for the new price.
        rec = labels.registry.get(tags[0])
        assert rec is not None
        raw_bytes = tag_type(rec.type_code).raw_bytes
        assert updated[-1]["payload"]["bytes"] < raw_bytes * 0.15, "a price change travels as a small delta"
        prod = agent.catalog.get("sku-000")
        assert prod is not None and prod.price == Decimal("9.90")
        expected = render_label(
            product_to_content(prod, "zh_CN"), tag_type(rec.type_code), rotation=0,
            scan_url=f"https://shop.example/store-0001/s/{rec.scan_code}",
        )
        shown = emu.tag_picture(bytes.fromhex(tags[0]))
        assert shown == expected.raw
        assert picture_hash(shown).hex() == rec.current_hash
        # Sending the same catalog again changes nothing and sends nothing.
        subscriber.publish(COMMANDS, command("c4", "catalog.upsert", {"products": [product(0, "9.90")]}))
        await asyncio.sleep(1.0)
        assert labels.stats.sent == sent_before + 1
        assert labels.progress()["confirmed"] == 6


async def test_reset_and_unplug_mid_update_lose_no_job(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emu, port = await emulator_for(tmp_path, 12)
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(
        tmp_path / "data",
        cloud_broker,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        commands={"max_payload_bytes": 1_000_000},
    )
    async with emu.running(port), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 12, timeout=20)
        subscriber.publish(COMMANDS, command("c1", "catalog.upsert", {"products": [product(i, "5.00") for i in range(12)]}))
        subscriber.publish(
            COMMANDS,
            command("c2", "tag.pair", {"pairs": [{"tag_id": t, "sku": f"sku-{i:03d}"} for i, t in enumerate(tags)]}),
        )
        await wait_until(lambda: labels.stats.sent >= 2, timeout=30)
        emu.reset()  # the base station reboots in the middle of the first pictures
        await asyncio.sleep(0.5)
        await port.unplug(1.5)  # and then its USB cable is pulled for a moment
        await wait_until(lambda: labels.progress()["confirmed"] == 12, timeout=120)
        for t in tags:
            rec = labels.registry.get(t)
            assert rec is not None and rec.current_hash == emu.tag_hash(bytes.fromhex(t)).hex()
        client = labels.stations["bs1"]
        assert client.link.stats.peer_resets >= 1
        assert client.stats.reconnects >= 1


async def test_a_price_changed_back_while_its_update_is_on_its_way_ends_on_the_price_it_went_back_to(
    tmp_path: Path,
) -> None:
    emu, port = await emulator_for(tmp_path, 2)
    tag = sorted(t.hex() for t in emu.tags)[0]
    config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}])
    async with emu.running(port), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None and agent.db is not None
        labels, catalog, db = agent.labels, agent.catalog, agent.db
        await wait_until(lambda: labels.registry.get(tag) is not None, timeout=20)
        await catalog.upsert([Product.model_validate(product(0, "5.00"))])
        await catalog.pair_tags([(tag, "sku-000")])
        await wait_until(lambda: labels.progress()["confirmed"] == 1, timeout=30)
        old_price = emu.tag_hash(bytes.fromhex(tag)).hex()
        assert labels.registry.get(tag).current_hash == old_price  # type: ignore[union-attr]
        # Recording a transfer's outcome takes a while (a slow disk); the tag must stay busy until it is recorded.
        real_set_shown = labels.registry.set_shown

        async def slow_set_shown(tag_id: str, picture_hash: str | None) -> None:
            await asyncio.sleep(0.5)
            await real_set_shown(tag_id, picture_hash)

        labels.registry.set_shown = slow_set_shown  # type: ignore[method-assign]

        def job_state() -> str:
            return str(db.read(lambda c: c.execute("SELECT state FROM tag_jobs WHERE tag_id = ?", (tag,)).fetchone()[0]))

        await catalog.upsert([Product.model_validate(product(0, "6.00"))])
        await wait_until(lambda: job_state() == "sending", timeout=30)
        # While 6.00 is on its way, the price goes back: the tag shows 5.00 right now, but not once 6.00 lands.
        await catalog.upsert([Product.model_validate(product(0, "5.00"))])
        await wait_until(lambda: job_state() == "confirmed" and emu.tag_hash(bytes.fromhex(tag)).hex() == old_price,
                         timeout=30)
        await asyncio.sleep(3)  # three check-ins later it still shows 5.00, and the agent knows it
        assert emu.tag_hash(bytes.fromhex(tag)).hex() == old_price
        assert labels.registry.get(tag).current_hash == old_price  # type: ignore[union-attr]


async def test_every_transfer_completes_pixel_exact_on_a_line_with_one_percent_faults(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    from firmware_bridge.emulators.pty_line import LineFaults
    from firmware_bridge.tag_types import TAG_TYPES_BY_NAME

    specs = mixed(3, seed=9, type=TAG_TYPES_BY_NAME["1.54-bw"])
    # 1 % of the bytes corrupted and 1 % dropped, in both directions, from the start.
    emu = BaseStationEmulator(specs, checkin_interval=1.0, air_rate=200_000, faults=LineFaults(0.01, 0.01, seed=9))
    port = PtyPort(tmp_path / "bs0")
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(
        tmp_path / "data",
        cloud_broker,
        base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
        commands={"max_payload_bytes": 1_000_000},
    )
    async with emu.running(port), running_agent(config) as agent:
        assert agent.labels is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 3, timeout=60)
        subscriber.publish(COMMANDS, command("c1", "catalog.upsert", {"products": [product(i, "3.20") for i in range(3)]}))
        subscriber.publish(
            COMMANDS,
            command("c2", "tag.pair", {"pairs": [{"tag_id": t, "sku": f"sku-{i:03d}"} for i, t in enumerate(tags)]}),
        )
        await wait_until(lambda: labels.progress()["confirmed"] == 3, timeout=240)
        client = labels.stations["bs1"]
        for t in tags:
            rec = labels.registry.get(t)
            assert rec is not None
            shown = emu.tag_picture(bytes.fromhex(t))
            assert picture_hash(shown).hex() == rec.current_hash
            assert labels.registry.picture(t, rec.current_hash) == shown  # exactly what was rendered
        assert client.link.stats.retransmits > 0, "the faults were real"
        assert client.link.decoder.stats.crc_errors + client.link.decoder.stats.bad_frames > 0


async def test_wifi_labels_through_the_running_agent(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    from devices.simulators.wifi_labels import WifiLabelSimulator, wifi_label_mix

    sim = WifiLabelSimulator(local_broker.host, local_broker.port, wifi_label_mix(2, seed=4), checkin_interval=0.5)
    config = agent_config(
        tmp_path / "data", cloud_broker, local_broker, labels={"wifi_labels": True}, commands={"max_payload_bytes": 100_000}
    )
    async with running_agent(config) as agent:
        assert agent.labels is not None
        labels = agent.labels
        await asyncio.to_thread(sim.start)
        try:
            await wait_until(lambda: len(labels.registry.all()) == 2, timeout=30)
            tags = sorted(r.tag_id for r in labels.registry.all())
            subscriber.publish(COMMANDS, command("w1", "catalog.upsert", {"products": [product(i, "6.60") for i in range(2)]}))
            subscriber.publish(
                COMMANDS,
                command("w2", "tag.pair", {"pairs": [{"tag_id": t, "sku": f"sku-{i:03d}"} for i, t in enumerate(tags)]}),
            )
            updated = await asyncio.to_thread(subscriber.wait_events, 2, 60, "tag.updated")
            assert sorted(e["payload"]["tag_id"] for e in updated) == tags
            for t in tags:
                rec = labels.registry.get(t)
                assert rec is not None and sim.hash(bytes.fromhex(t)).hex() == rec.current_hash
                assert labels.registry.picture(t, rec.current_hash) == sim.picture(bytes.fromhex(t))
        finally:
            await asyncio.to_thread(sim.stop)
