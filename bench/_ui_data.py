"""bench.ui's store: a migrated database with products, 10,000 tags and a tag-update backlog, the agent's
configuration (200 compartments on Kerong boards over two RS485 buses, 20 kiosks), and Wi-Fi devices on the
in-store broker."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import AgentConfig, parse_config
from edge_agent.storage import migrate
from tests.support.broker import Broker

LOCKS_PER_BOARD = 16
BUSES = ("rs485-0", "rs485-1")
BOARDS_PER_BUS = 7  # 14 boards, 224 locks: room for the 200 compartments
DEVICE_PREFIX = "store/v1/devices"


def seed_database(data_dir: Path, tags: int, paired_fraction: float = 0.9) -> None:
    """Products and tags as a store that runs for a while has them: most tags paired, a few not heard from
    for hours, a backlog of tag updates (confirmed, queued, sending, failed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate(data_dir / "agent.db")
    now = int(time.time() * 1000)
    products = max(1, tags // 5)
    conn = sqlite3.connect(data_dir / "agent.db")
    try:
        conn.executemany(
            "INSERT INTO products(sku, name, price, currency, rev, updated_ms) VALUES (?, ?, ?, 'CNY', 1, ?)",
            [(f"sku-{i:05d}", f"商品 {i:05d} 500g", f"{(i % 97) + 0.5:.2f}", now) for i in range(products)],
        )
        paired = int(tags * paired_fraction)
        conn.executemany(
            "INSERT INTO tags(tag_id, type_code, base_station, sku, scan_code, battery_mv, rssi, last_seen_ms, "
            "created_ms) VALUES (?, 1, ?, ?, ?, 2900, -60, ?, ?)",
            [
                (f"{0xA000000000 + i:016x}", f"bs{i % 2 + 1}", f"sku-{i % products:05d}" if i < paired else None,
                 f"ui{i:06d}", now - (7_200_000 if i % 97 == 0 else 20_000), now)
                for i in range(tags)
            ],
        )
        states = ["confirmed"] * 6 + ["queued", "queued", "sending", "failed"]
        conn.executemany(
            "INSERT INTO tag_jobs(tag_id, state, priority, reason, target_hash, created_ms, updated_ms) "
            "VALUES (?, ?, 1, 'price', ?, ?, ?)",
            [(f"{0xA000000000 + i:016x}", states[i % len(states)], f"{i:064x}", now, now)
             for i in range(0, tags, 7)],
        )
        conn.commit()
    finally:
        conn.close()


def agent_config(workdir: Path, cloud: Broker, local: Broker, *, compartments: int, kiosks: int) -> AgentConfig:
    boards = [(bus, n) for bus in BUSES for n in range(BOARDS_PER_BUS)]
    specs = []
    for i in range(compartments):
        bus, number = boards[i // LOCKS_PER_BOARD]
        lock = i % LOCKS_PER_BOARD + 1
        bank = chr(ord("A") + i // LOCKS_PER_BOARD)
        specs.append({"id": f"{bank}-{lock:02d}", "bank": bank, "board": f"board-{bus}-{number}", "lock": lock,
                      "size": "SML"[lock % 3], "row": (lock - 1) // 4 + 1, "column": (lock - 1) % 4 + 1})
    return parse_config(
        {
            "agent": {"store_id": "bench-store", "data_dir": str(workdir / "data"), "log_level": "WARNING"},
            "web": {"host": "127.0.0.1", "port": 0, "https_port": 0},
            "cloud": {"host": cloud.host, "port": cloud.port, "tls": {"enabled": False}},
            "local_broker": {"enabled": True, "host": local.host, "port": local.port, "adopt": "auto"},
            "lockers": {
                "enabled": True,
                "buses": [{"name": bus, "url": str(workdir / f"lockers-{bus}")} for bus in BUSES],
                "boards": [{"id": f"board-{bus}-{n}", "bus": bus, "number": n} for bus, n in boards],
                "compartments": specs,
            },
            "kiosks": [{"id": f"k{i + 1}", "name": f"Kiosk {i + 1}"} for i in range(kiosks)],
        }
    )


class Devices:
    """Wi-Fi devices speaking for themselves on the in-store broker (one connection plays them all)."""

    def __init__(self, broker: Broker) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-ui-devices")
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def announce(self, device_id: str, online: bool) -> None:
        base = f"{DEVICE_PREFIX}/{device_id}"
        body: dict[str, Any] = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan"]}
        self.client.publish(f"{base}/announce", json.dumps(body), qos=1, retain=True).wait_for_publish(5)
        self.availability(device_id, online)

    def availability(self, device_id: str, online: bool) -> None:
        self.client.publish(
            f"{DEVICE_PREFIX}/{device_id}/availability", "online" if online else "offline", qos=1, retain=True
        ).wait_for_publish(5)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
