"""The agent as a process: systemd notify and watchdog, SIGTERM within 5 s, health and metrics."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import agent_config
from tests.support.agent_process import start_agent, wait_http, write_config
from tests.support.broker import Broker, free_port
from tests.support.subscriber import CloudSubscriber


def test_notify_ready_watchdog_then_sigterm_says_offline_within_5s(
    tmp_path: Path, cloud_broker: Broker, local_broker: Broker, subscriber: CloudSubscriber
) -> None:
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(20)
    port = free_port()
    config = agent_config(tmp_path / "data", cloud_broker, local_broker)
    path = write_config(config, tmp_path / "agent.toml", port=port)
    proc = start_agent(path, env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(notify.recv(4096).decode())
        health = wait_http(port)
        assert health["status"] == "ok" and health["store_id"] == "store-0001"
        # Watchdog pings at half the interval.
        deadline = time.monotonic() + 5
        pings = 0
        while pings < 3 and time.monotonic() < deadline:
            if "WATCHDOG=1" in notify.recv(4096).decode():
                pings += 1
        assert pings >= 3
        subscriber.wait_for(lambda ms: any(m.topic.endswith("/status") and m.json()["status"] == "online" for m in ms))
        # An event produced just before the signal is not lost.
        subscriber.publish("retail/v1/store-0001/commands", json.dumps({"command_id": "pre-stop", "type": "ping"}))
        subscriber.wait_for(lambda ms: any(m.topic.endswith("/commands/result") for m in ms))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, stderr
    assert elapsed < 5.0, elapsed
    statuses = [m.json() for m in subscriber.all if m.topic == "retail/v1/store-0001/status"]
    assert statuses[-1]["status"] == "offline" and statuses[-1]["reason"] == "shutdown"
    # Retained: a subscriber arriving later sees offline.
    late = CloudSubscriber(cloud_broker, topic="retail/v1/store-0001/status", client_id="late").start()
    try:
        got = late.wait_for(lambda ms: len(ms) >= 1)
        assert got[0].retain and got[0].json()["status"] == "offline"
    finally:
        late.stop()
    # One line per record, with level and logger name.
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert any(" INFO edge_agent.runtime: received SIGTERM" in line for line in lines)
    # The default event loop is uvloop, and this whole run (signals, notify, MQTT, HTTP) was on it.
    assert any("event loop uvloop " in line for line in lines), stderr
    assert all(" " in line for line in lines)


def test_kill_without_goodbye_publishes_the_last_will(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    port = free_port()
    config = agent_config(tmp_path / "data", cloud_broker)
    path = write_config(config, tmp_path / "agent.toml", port=port)
    proc = start_agent(path)
    try:
        wait_http(port)
        subscriber.wait_for(lambda ms: any(m.topic.endswith("/status") for m in ms))
        proc.kill()
        proc.wait(10)
        msgs = subscriber.wait_for(
            lambda ms: any(m.topic.endswith("/status") and m.json()["status"] == "offline" for m in ms), timeout=20
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    offline = [m.json() for m in msgs if m.topic.endswith("/status") and m.json()["status"] == "offline"]
    assert offline[0]["reason"] == "connection lost"


def test_health_and_metrics_report_the_outbox_and_the_link(tmp_path: Path, cloud_broker: Broker) -> None:
    port = free_port()
    # The cloud is configured but down: events wait, and health and metrics say so.
    cloud_broker.stop()
    config = agent_config(tmp_path / "data", cloud_broker)
    path = write_config(config, tmp_path / "agent.toml", port=port)
    proc = start_agent(path)
    try:
        health = wait_http(port)
        assert health["cloud"]["connected"] is False
        assert health["outbox"]["depth"] == 0
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        for name in (
            "edge_outbox_depth",
            "edge_outbox_oldest_age_seconds",
            "edge_publish_rate_eps",
            "edge_cloud_reconnects_total",
            "edge_cloud_connected 0.0",
            "edge_events_dropped_total",
            "edge_events_refused_total",
            "edge_bad_inputs_total",
            "edge_outbox_full_alarm 0.0",
        ):
            assert name in metrics, name
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_a_web_port_in_use_is_reported_plainly(tmp_path: Path) -> None:
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = agent_config(tmp_path / "data", None)
        path = write_config(config, tmp_path / "agent.toml", port=port)
        result = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 1
    assert f"web.port: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_newer_than_the_agent_is_refused_with_exit_2(tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    from edge_agent.storage import migrate

    migrate(tmp_path / "data" / "agent.db")
    conn = sqlite3.connect(tmp_path / "data" / "agent.db")
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', '2030-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    config = agent_config(tmp_path / "data", None)
    path = write_config(config, tmp_path / "agent.toml", port=0)
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "refusing to start: database:" in result.stderr and "newer than this agent knows" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_with_a_base_station_and_rendering_still_stops_within_5s(tmp_path: Path) -> None:
    import subprocess
    import sys

    pty = tmp_path / "bs0"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "simulate", "base-station", "--pty", str(pty), "--tags", "20",
         "--checkin", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert emulator.stdout is not None
        deadline = time.monotonic() + 20
        while b"ready" not in emulator.stdout.readline() and time.monotonic() < deadline:
            pass
        port = free_port()
        config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(pty)}])
        path = write_config(config, tmp_path / "agent.toml", port=port)
        proc = start_agent(path)
        try:
            wait_http(port)
            # Let the link come up and the check-ins flow (writes, events) before stopping.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                if 'edge_base_station_connected{station="bs1"} 1.0' in metrics:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the base station never connected")
            time.sleep(1.0)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
        assert elapsed < 5.0, elapsed
    finally:
        emulator.terminate()
        emulator.wait(10)
