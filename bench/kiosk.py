"""Kiosk benchmark (issue 5): scan links from shelf tags, and the kiosk's figures.

python -m bench.kiosk [--quick] [--profile]

The agent runs as a real process (`python -m edge_agent run --config ...`) against a real cloud Mosquitto,
on a store seeded with paired tags and products (bench.tags.seed_store). An HTTP load generator in a process
of its own (bench/_scan_load.py: raw asyncio HTTP/1.1, keep-alive, on loopback) opens the tags' scan links
with phones' User-Agents, so every request is a scan the agent must record durably before its 302:

- scan_link_rps: 302s per second with as many requests in flight as connections (closed loop): the most the
  agent serves, every answer after its scan.tag event was committed (fsync'd);
- scan_p99_ms: latency at a steady 1,000 requests/s (open loop, counted from when each request was due);
  scan_p99_saturated_ms is the closed loop's p99, where latency is mostly queueing;
- scan_events_missing / scan_events_extra: after the run, the scan.tag events that reached the cloud broker
  or still wait in the outbox (by event_id) against the number of 302s: both must be 0.

The kiosk figures (price_to_kiosk_p99_ms, order_to_cloud_p99_ms, lost_orders) come from `measure_kiosk`,
a hook that prints null until the kiosk measurement is written. `--profile` runs the agent under cProfile
and prints where its time went (stderr). The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.tags import seed_store
from edge_agent.config import parse_config
from tests.support.agent_process import wait_http, write_config
from tests.support.broker import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
STORE = "bench-store"
TEMPLATE = "https://m.example.cn/p/{sku}?store={store_id}&tag={tag_id}"
STEADY_RPS = 1000


class ScanCounter:
    """An independent cloud-side subscriber collecting the event_id of every scan.tag event."""

    def __init__(self, port: int) -> None:
        self.ids: set[str] = set()
        self.received = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-kiosk-cloud", protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(f"retail/v1/{STORE}/events/scan.tag", 1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("cloud subscriber did not subscribe")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        event_id = json.loads(msg.payload)["event_id"]
        with self._lock:
            self.received += 1
            self.ids.add(event_id)

    def count(self) -> int:
        with self._lock:
            return len(self.ids)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def load(port: int, codes_file: Path, mode: str, seconds: float, connections: int, rate: float = 0.0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench._scan_load", str(port), str(codes_file), mode, str(seconds), str(connections),
         str(rate)],
        cwd=ROOT, capture_output=True, check=True, timeout=seconds + 120,
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def start_agent(config_path: Path, log_path: Path, profile_path: Path | None) -> subprocess.Popen[bytes]:
    args = [sys.executable]
    if profile_path is not None:
        args += ["-m", "cProfile", "-o", str(profile_path)]
    args += ["-m", "edge_agent", "run", "--config", str(config_path)]
    with log_path.open("wb") as log:
        return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})


def outbox_scan_ids(db_path: Path) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT body FROM outbox WHERE topic LIKE '%/events/scan.tag'").fetchall()
    finally:
        conn.close()
    return {json.loads(bytes(r[0]))["event_id"] for r in rows}


def measure_scan_links(quick: bool, profile: bool) -> dict[str, Any]:
    tag_count = 200 if quick else 1000
    seconds = 8.0 if quick else 30.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-kiosk-"))
    broker = Broker(workdir / "cloud", persistence=False)
    broker.start()
    counter = ScanCounter(broker.port)
    agent: subprocess.Popen[bytes] | None = None
    profile_path = workdir / "agent.prof" if profile else None
    try:
        tags = [(0x4A3F000000000000 + i).to_bytes(8, "big") for i in range(tag_count)]
        seed_store(workdir / "data", workdir / "preload", tags, "http://127.0.0.1")
        codes_file = workdir / "codes.txt"
        codes_file.write_text("\n".join(f"bench{i:05d}" for i in range(tag_count)))
        port = free_port()
        config = parse_config(
            {
                "agent": {"store_id": STORE, "data_dir": str(workdir / "data"), "log_level": "WARNING"},
                "web": {"host": "127.0.0.1", "port": port},
                "cloud": {"host": broker.host, "port": broker.port, "tls": {"enabled": False}},
                "local_broker": {"enabled": False},
                "labels": {"public_base_url": f"http://127.0.0.1:{port}"},
                # One load generator is one client address: the limit is set out of its way.
                "scan_links": {"product_url_template": TEMPLATE, "rate_limit_per_minute": 1_000_000,
                               "rate_limit_burst": 100_000},
            }
        )
        config_path = write_config(config, workdir / "agent.toml")
        agent = start_agent(config_path, workdir / "agent.log", profile_path)
        deadline = time.monotonic() + 30
        while not wait_http(port)["cloud"]["connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not connect to the cloud broker")
            time.sleep(0.2)
        warm = load(port, codes_file, "closed", 2.0, 16)
        closed = load(port, codes_file, "closed", seconds, 32)
        steady = load(port, codes_file, "open", seconds, 64, STEADY_RPS)
        redirects = sum(r["statuses"].get("302", 0) for r in (warm, closed, steady))
        others = {k: v for r in (warm, closed, steady) for k, v in r["statuses"].items() if k != "302"}
        # Every 302 had its event committed first; now wait for them on the cloud broker.
        settle = time.monotonic() + 60
        while counter.count() < redirects and time.monotonic() < settle:
            time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        recorded = counter.ids | outbox_scan_ids(workdir / "data" / "agent.db")
        if profile_path is not None and profile_path.exists():
            stats = pstats.Stats(str(profile_path), stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(30)
        return {
            "scan_link_rps": closed["rps"],
            "scan_p99_ms": steady["p99_ms"],
            "scan_p50_ms": steady["p50_ms"],
            "scan_steady_rps": steady["rps"],
            "scan_p99_saturated_ms": closed["p99_ms"],
            "scan_redirects": redirects,
            "scan_other_statuses": others,
            "scan_errors": warm["errors"] + closed["errors"] + steady["errors"],
            "scan_events_at_cloud": counter.count(),
            "scan_events_missing": max(0, redirects - len(recorded)),
            "scan_events_extra": max(0, len(recorded) - redirects),
            "scan_connections": 32,
            "scan_tags": tag_count,
        }
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        counter.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def measure_kiosk(quick: bool) -> dict[str, Any]:
    """Hook for the kiosk figures: a catalog change to visible on an open kiosk page (in the browser), an order
    to the cloud broker, and orders lost. Null until that measurement is written."""
    return {"price_to_kiosk_p99_ms": None, "order_to_cloud_p99_ms": None, "lost_orders": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s phases and 200 tags instead of 30 s and 1,000")
    parser.add_argument("--profile", action="store_true", help="run the agent under cProfile, print where time went")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    figures.update(measure_scan_links(args.quick, args.profile))
    figures.update(measure_kiosk(args.quick))
    figures["quick"] = args.quick
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
