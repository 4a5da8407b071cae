"""Discovery and adoption (/api/discovery) against a running agent: the base-station emulator and the Kerong
lock-board emulator on real ptys, a real in-store broker with a simulated Wi-Fi scanner, real sessions."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from devices.mqtt_gateway import DeviceCommandError
from devices.simulators.mqtt_device import SimulatedScanner
from edge_agent.config import load_config
from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.kerong import LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.kerong.bus import KerongBus
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.web import signed_in

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "cd" * 32}



def error_of(response: httpx.Response) -> str:
    detail: Any = response.json().get("detail")
    return str(detail["error"]) if isinstance(detail, dict) else "validation"


async def test_a_new_tag_is_discovered_gets_no_picture_and_does_once_adopted(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(3, seed=11), checkin_interval=0.5, air_rate=200_000, seed=11)
    tags = sorted(t.hex() for t in emu.tags)
    allowed, stranger, other = tags
    # The default policy is the allow-list: only `allowed` is adopted on sight.
    config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
                          labels={"allowed_tags": [allowed.upper()]})
    assert config.labels.adopt == "allow_list"
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None
        labels, catalog = agent.labels, agent.catalog
        await wait_until(lambda: len(labels.registry.all()) == 3, timeout=20)
        await wait_until(lambda: all(t.last_seen_ms for t in labels.registry.all()), timeout=20)
        await catalog.upsert([Product.model_validate({"sku": f"p-{i}", "name": f"商品 {i}", "price": "3.50", "currency": "CNY"})
                              for i in range(3)])
        async with signed_in(agent, "tech") as tech, signed_in(agent, "desk", Role.STAFF) as staff:
            listing = (await tech.get("/api/discovery")).json()
            assert sorted(t["tag_id"] for t in listing["tags"]) == [stranger, other]
            assert listing["tags_discovered"] == 2 and listing["policy"]["tags"] == "allow_list"
            assert all(t["adopted"] is False and t["last_seen_ms"] for t in listing["tags"])
            assert (await staff.get("/api/discovery")).status_code == 403

            # A discovered tag is never drawn on, even with a product (the guard in the update path: the
            # product is set in the table directly, as no API pairs a tag without adopting it).
            assert agent.db is not None
            await agent.db.write(lambda c: c.execute("UPDATE tags SET sku = 'p-1' WHERE tag_id = ?", (stranger,)))
            await catalog.pair_tags([(allowed, "p-0")])
            assert await labels.request_update([stranger], 0, "test") == 0
            await wait_until(lambda: labels.progress()["confirmed"] == 1, timeout=60)
            rec = labels.registry.get(stranger)
            assert rec is not None and rec.current_hash != labels.registry.get(allowed).current_hash  # type: ignore[union-attr]
            shown_before = emu.tag_hash(bytes.fromhex(stranger))

            # Adopted: it gets its product's picture, confirmed by the tag's hash.
            answer = await tech.post(f"/api/discovery/tags/{stranger.upper()}/adopt")
            assert answer.status_code == 200, answer.text
            assert answer.json()["tag"]["adopted"] is True and answer.json()["queued"] == 1
            await wait_until(lambda: labels.progress()["confirmed"] == 2, timeout=60)
            rec = labels.registry.get(stranger)
            assert rec is not None and rec.adopted
            assert rec.current_hash == emu.tag_hash(bytes.fromhex(stranger)).hex() != shown_before.hex()

            # Pairing adopts too (the same path as the cloud's tag.pair).
            result = await catalog.pair_tags([(other, "p-2")])
            assert result.changed == [other] and labels.registry.get(other).adopted  # type: ignore[union-attr]
            listing = (await tech.get("/api/discovery")).json()
            assert listing["tags"] == [] and listing["tags_discovered"] == 0

            missing = await tech.post("/api/discovery/tags/00000000000000ff/adopt")
            assert missing.status_code == 404 and error_of(missing) == "unknown_tag"
            assert (await tech.post("/api/discovery/tags/not-a-tag/adopt")).status_code == 422
            assert (await staff.post(f"/api/discovery/tags/{other}/adopt")).status_code == 403


async def test_an_announcing_mqtt_device_is_discovered_then_adopted(tmp_path: Path, local_broker: Broker) -> None:
    config = agent_config(tmp_path / "data", None, local_broker, local_broker={"state_coalesce_s": 0.1})
    assert config.local_broker.adopt == "allow_list"  # the default
    stop = threading.Event()
    sim = SimulatedScanner(local_broker.host, local_broker.port, "store/v1", "shelf-scanner-2")
    async with running_agent(config) as agent:
        assert agent.gateway is not None
        gateway = agent.gateway
        await wait_until(lambda: gateway.connected, timeout=10)
        runner = asyncio.create_task(asyncio.to_thread(sim.run, interval=30, count=0, bad_every=0, stop=stop))
        try:
            await wait_until(lambda: (r := gateway.registry.get("shelf-scanner-2")) is not None
                             and r.announce is not None and r.online is True, timeout=10)
            async with signed_in(agent, "tech") as tech:
                # Not adopted: it takes no commands.
                with pytest.raises(DeviceCommandError) as refused:
                    await gateway.send_command("shelf-scanner-2", {"type": "reload"})
                assert refused.value.code == "not_adopted"
                listing = (await tech.get("/api/discovery")).json()
                [device] = listing["mqtt_devices"]
                assert device["device_id"] == "shelf-scanner-2" and device["adopted"] is False
                assert device["kind"] == "scanner" and device["online"] is True
                assert listing["policy"]["mqtt_devices"] == "allow_list"

                answer = await tech.post("/api/discovery/mqtt-devices/shelf-scanner-2/adopt")
                assert answer.status_code == 200, answer.text
                assert answer.json()["device"]["adopted"] is True
                assert (await tech.get("/api/discovery")).json()["mqtt_devices"] == []
                # Adopted, it takes commands now.
                await gateway.send_command("shelf-scanner-2", {"type": "reload"})
                missing = await tech.post("/api/discovery/mqtt-devices/nobody/adopt")
                assert missing.status_code == 404 and error_of(missing) == "unknown_device"
                assert (await tech.post("/api/discovery/mqtt-devices/bad id!/adopt")).status_code in (404, 422)
            # The decision is kept on disk (the registry's table), so it survives a restart.
            await gateway.registry.save()
            assert agent.db is not None
            rows = agent.db.read(
                lambda c: c.execute("SELECT adopted FROM mqtt_devices WHERE device_id = 'shelf-scanner-2'").fetchall()
            )
            assert rows == [(1,)]
        finally:
            stop.set()
            await runner


async def test_a_bus_scan_finds_the_unconfigured_boards_and_adoption_gives_the_snippet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_STORE_HMAC_KEY", KEY_ENV["EDGE_AGENT_STORE_HMAC_KEY"])
    emulator = LockBoardEmulator([0, 2, 5])
    for c in emulator.compartments.values():
        c.person = Person(open_after_s=None)  # nobody opens a door unless the test says so
    pty = tmp_path / "lockers0"
    path = tmp_path / "agent.toml"
    path.write_text(f"""# The store's configuration, as a technician keeps it.
[agent]
store_id = "store-0001"
data_dir = "{tmp_path / 'data'}"

[web]
host = "127.0.0.1"
port = 0
https_port = 0

[cloud]
enabled = false

[local_broker]
enabled = false

[lockers]
enabled = true

[[lockers.buses]]
name = "rs485"
url = "{pty}"

[[lockers.boards]]
id = "kerong-0"
bus = "rs485"
number = 0

[[lockers.compartments]]
id = "A-01"
bank = "A"
board = "kerong-0"
lock = 1
size = "M"
row = 1
column = 1
""")
    config = load_config(path)
    async with emulator.running(PtyPort(pty)), running_agent(config, env=KEY_ENV, config_path=path) as agent:
        bus: KerongBus = agent.locker_buses["rs485"]
        await wait_until(lambda: bus.connected, timeout=10)
        async with signed_in(agent, "tech") as tech, signed_in(agent, "boss", Role.ADMIN) as admin:
            assert (await tech.get("/api/discovery")).json()["lock_boards"] == []
            # An unlock during the scan goes ahead of the scan's remaining probes.
            scan = asyncio.create_task(tech.post("/api/discovery/lock-boards/scan"))
            await asyncio.sleep(0.15)
            assert agent.lockers is not None
            started = asyncio.get_running_loop().time()
            report = await bus.unlock(2, 1)  # a board no compartment uses: the locker service does not mind
            assert report.answered and asyncio.get_running_loop().time() - started < 0.5
            answer = await scan
            assert answer.status_code == 200, answer.text
            result = answer.json()
            [row] = result["buses"]
            assert row["bus"] == "rs485" and row["answered"] == [0, 2, 5] and row["configured_silent"] == []
            assert [b["id"] for b in result["found"]] == ["rs485:2", "rs485:5"]
            assert bus.stats.timeouts == 0  # silence at unused numbers is not a line fault

            listing = (await tech.get("/api/discovery")).json()
            boards = {b["id"]: b for b in listing["lock_boards"]}
            assert set(boards) == {"rs485:2", "rs485:5"}
            assert boards["rs485:2"]["adopted"] is False and boards["rs485:2"]["last_answer_ms"] > 0
            assert boards["rs485:2"]["board_id"] == "kerong-2" and boards["rs485:2"]["locks"] is None

            adopted = await tech.post("/api/discovery/lock-boards/rs485:2/adopt", json={})
            assert adopted.status_code == 200, adopted.text
            snippet = adopted.json()["board"]["snippet"]
            assert tomllib.loads(snippet) == {
                "lockers": {"boards": [{"id": "kerong-2", "bus": "rs485", "number": 2, "locks": 16}]}
            }
            assert adopted.json()["board"]["adopted_by"] == "tech" and adopted.json()["config"] is None
            # Writing the configuration is an admin's act.
            refused = await tech.post("/api/discovery/lock-boards/rs485:5/adopt", json={"write_config": True})
            assert refused.status_code == 403
            written = await admin.post("/api/discovery/lock-boards/rs485:5/adopt",
                                       json={"write_config": True, "board_id": "bank-b"})
            assert written.status_code == 200, written.text
            assert written.json()["config"]["restart_required"] is True
            text = path.read_text()
            assert text.startswith("# The store's configuration, as a technician keeps it.")  # the rest is kept
            on_disk = tomllib.loads(text)
            assert {"id": "bank-b", "bus": "rs485", "number": 5, "locks": 16} in on_disk["lockers"]["boards"]
            assert len(on_disk["lockers"]["boards"]) == 2
            # Bad requests: a board nobody found, a configured one, a malformed key.
            unknown = await tech.post("/api/discovery/lock-boards/rs485:9/adopt", json={})
            assert unknown.status_code == 404 and error_of(unknown) == "unknown_board"
            assert (await tech.post("/api/discovery/lock-boards/rs485:99/adopt", json={})).status_code == 422
            assert (await tech.post("/api/discovery/lock-boards/rs485:2/adopt", json={"x": 1})).status_code == 422
