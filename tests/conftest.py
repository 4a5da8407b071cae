"""Fixtures: real Mosquitto brokers on free loopback ports, TLS material, and agents run in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig, parse_config
from edge_agent.runtime import Agent
from tests.support.broker import Broker, TlsFiles
from tests.support.subscriber import CloudSubscriber


@pytest.fixture
def cloud_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "cloud-broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def local_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "local-broker", persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.generate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def subscriber(cloud_broker: Broker) -> Iterator[CloudSubscriber]:
    sub = CloudSubscriber(cloud_broker).start()
    yield sub
    sub.stop()
    # Whatever a test did, everything the agent put on the wire must match the published contract.
    sub.assert_contract()


def agent_config(
    data_dir: Path,
    cloud_at: Broker | None,
    local_at: Broker | None = None,
    *,
    store_id: str = "store-0001",
    **overrides: Any,
) -> AgentConfig:
    """A config for tests: plain MQTT unless the broker has TLS, short timeouts, web on a free port."""
    data: dict[str, Any] = {
        "agent": {"store_id": store_id, "data_dir": str(data_dir), "log_level": "DEBUG"},
        "web": {"host": "127.0.0.1", "port": 0, "https_port": 0},
        "cloud": {"enabled": cloud_at is not None, "keepalive_s": 5, "backoff_min_s": 0.1, "backoff_max_s": 1.0},
        "local_broker": {"enabled": local_at is not None},
    }
    if cloud_at is not None:
        data["cloud"].update({"host": cloud_at.host, "port": cloud_at.port})
        if cloud_at.tls is None:
            data["cloud"]["tls"] = {"enabled": False}
        else:
            data["cloud"]["tls"] = {
                "ca_file": str(cloud_at.tls.ca),
                "cert_file": str(cloud_at.tls.client_cert),
                "key_file": str(cloud_at.tls.client_key),
            }
    if local_at is not None:
        data["local_broker"].update({"host": local_at.host, "port": local_at.port})
    for section, values in overrides.items():
        if isinstance(values, list):
            data[section] = values
            continue
        data.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, dict):
                data[section].setdefault(key, {}).update(value)
            else:
                data[section][key] = value
    return parse_config(data)


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig, *, wait_for_cloud: bool = True, **kwargs: Any) -> AsyncIterator[Agent]:
    agent = Agent(config, **kwargs)
    task = asyncio.create_task(agent.run(), name="agent-under-test")
    started = asyncio.create_task(agent.started.wait())
    done, _ = await asyncio.wait([task, started], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what made it stop
    if started not in done:
        raise AssertionError("agent did not start within 20 s")
    if agent.session is not None and wait_for_cloud:
        # Commands published before the first subscription would find no subscriber (MQTT drops them).
        await wait_until(lambda: agent.session is not None and agent.session.subscribed, timeout=20)
    try:
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 10)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
