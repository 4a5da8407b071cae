"""Issue 14.9: /healthz names every configured device link that is not working, with a reason.

Before, a base station whose port opened but which never answered the handshake left /healthz "ok" and
the log silent after "open"; a lock board that never answered and an in-store broker that was down did
not show in /healthz either, and the serial decoder's `overruns` was exported nowhere.
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path
from typing import Any

import httpx
import pytest

import edge_agent.services.store_health as store_health
import firmware_bridge.base_station.client as base_station_client
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.lockers import compartment, one_board

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}


async def test_healthz_names_each_device_link_that_does_not_work(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(base_station_client, "HANDSHAKE_GRACE_S", 0.5)
    monkeypatch.setattr(store_health, "BROKER_GRACE_S", 0.5)
    # A serial port that opens, with nothing behind it that speaks the base-station protocol.
    master, slave = os.openpty()
    tty.setraw(slave)
    (tmp_path / "bs0").symlink_to(os.ttyname(slave))
    # A lock board on a bus whose port does not exist (an unplugged adapter).
    bank = one_board(tmp_path / "lockers0", compartment("A-01", 1, column=1))
    config = agent_config(tmp_path / "data", cloud_broker, local_broker, lockers=bank,
                          base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}])
    try:
        async with running_agent(config, env=KEY_ENV) as agent:
            url = f"http://127.0.0.1:{agent.web_port}"
            assert agent.gateway is not None
            await wait_until(lambda: agent.gateway.connected, timeout=10)
            local_broker.stop()  # and now the in-store broker goes away
            async with httpx.AsyncClient() as http:

                async def devices() -> dict[str, Any]:
                    body: dict[str, Any] = (await http.get(f"{url}/healthz")).json()
                    return body

                health: dict[str, Any] = {}

                async def three_problems() -> bool:
                    health.update(await devices())
                    return len(health["devices"]) == 3

                for _ in range(100):
                    if await three_problems():
                        break
                    await asyncio.sleep(0.1)
                metrics = (await http.get(f"{url}/metrics")).text
    finally:
        os.close(master)
        os.close(slave)
    assert health["status"] == "degraded", health
    by_kind = {d["device"]: d for d in health["devices"]}
    assert by_kind["base_station"]["name"] == "bs1"
    assert "no handshake with the base station" in by_kind["base_station"]["reason"]
    assert by_kind["lock_board"]["reason"].startswith("never answered")
    assert by_kind["in_store_broker"]["reason"].startswith("not connected for ")
    assert any(p.startswith("base station bs1: port ") for p in health["problems"])
    assert any(p.startswith("lock board ") for p in health["problems"])
    assert any(p.startswith("in store broker ") for p in health["problems"])
    assert "has not answered the handshake" in caplog.text  # the log is not silent after "open"
    assert 'edge_base_station_link{counter="overruns",station="bs1"}' in metrics


async def test_healthz_lists_no_device_problem_while_every_link_works(tmp_path: Path, cloud_broker: Broker) -> None:
    async with running_agent(agent_config(tmp_path / "data", cloud_broker)) as agent, httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{agent.web_port}/healthz")).json()
    assert health["status"] == "ok" and health["devices"] == [] and health["problems"] == []
