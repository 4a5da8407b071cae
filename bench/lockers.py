"""Locker benchmark: load-and-collect cycles against the lock-board emulator, through the running agent.

python -m bench.lockers [--quick]

Four banks, each with its own RS485 bus (a pty paced at 19200 baud with the Kerong emulator) and one
board of 16 compartments; simulated people put parcels in and take them out. Each cycle: pickup.create
(with a cloud-issued code), a staff load, the customer's code POSTed to the locker screen's collect
endpoint, the parcel taken. Meanwhile the agent relays 1,000 events/s to a real cloud Mosquitto.

- unlock_p99_ms: from POSTing a valid code to the emulator having received the whole unlock frame (so it
  also counts the frame's time on the wire: an upper bound of "until the unlock frame is written");
- cycles; wrong_opens: unlock commands the emulator saw beyond the two each cycle needs, or on the wrong
  lock; missed_events: pickup.ready / pickup.collected / audit.door_opened that never reached the
  cloud broker.
The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import parse_config
from edge_agent.runtime import Agent
from firmware_bridge.base_station.pty_line import PtyPort
from firmware_bridge.kerong_emulator import Action, LockBoardEmulator, Person
from tests.support.broker import Broker

BANKS = ("A", "B", "C", "D")
LOCKS = 16
PER_BANK_CONCURRENCY = 4
RELAY_EPS = 1000
KEY = "ab" * 32


class CloudCounter:
    """An independent subscriber counting what reached the cloud broker, by event type and order."""

    def __init__(self, port: int) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-locker-cloud", protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/v1/bench-store/events/#", 1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if "/events/pickup." not in msg.topic and "/events/audit." not in msg.topic:
            return  # the relay load's telemetry
        doc = json.loads(msg.payload)
        order = doc["payload"].get("order_id") or ""
        with self._lock:
            self.seen[(doc["type"], order)] += 1

    def count(self, event_type: str, order: str) -> int:
        with self._lock:
            return self.seen[(event_type, order)]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def run(quick: bool) -> dict[str, Any]:
    cycles_wanted = 1000 if quick else 10_000
    workdir = Path(tempfile.mkdtemp(prefix="bench-lockers-"))
    broker = Broker(workdir / "cloud", persistence=False)
    broker.start()
    cloud = CloudCounter(broker.port)
    emulators = {bank: LockBoardEmulator(1) for bank in BANKS}
    for emu in emulators.values():
        for c in emu.compartments.values():
            # Put a parcel in an empty compartment, take it from a full one.
            c.person = Person(open_after_s=0.02, hold_s=0.05, action=Action.TOGGLE)
    config = parse_config(
        {
            "agent": {"store_id": "bench-store", "data_dir": str(workdir / "data"), "log_level": "WARNING"},
            "web": {"host": "127.0.0.1", "port": 0},
            "cloud": {"host": broker.host, "port": broker.port, "tls": {"enabled": False}},
            "local_broker": {"enabled": False},
            "lockers": {
                "enabled": True,
                "buses": [{"name": f"bus-{b}", "url": str(workdir / f"lockers-{b}")} for b in BANKS],
                "boards": [{"id": f"board-{b}", "bus": f"bus-{b}", "number": 0} for b in BANKS],
                "compartments": [
                    {"id": f"{b}-{lock:02d}", "bank": b, "board": f"board-{b}", "lock": lock, "size": "M",
                     "row": (lock - 1) // 4 + 1, "column": (lock - 1) % 4 + 1}
                    for b in BANKS
                    for lock in range(1, LOCKS + 1)
                ],
            },
        }
    )
    latencies: list[float] = []
    orders: list[str] = []
    collected: list[str] = []
    failed: list[str] = []
    done = 0
    try:
        async with contextlib_stack(emulators, workdir) as _ports:
            agent = Agent(config, env={"EDGE_AGENT_STORE_HMAC_KEY": KEY})
            runner = asyncio.create_task(agent.run())
            await asyncio.wait_for(agent.started.wait(), 30)
            assert agent.lockers is not None
            lockers = agent.lockers
            await asyncio.sleep(2.0)  # buses up, start-up reconciliation done
            stop_relay = asyncio.Event()

            async def relay() -> None:
                n = 0
                started = time.monotonic()
                while not stop_relay.is_set():
                    n += 1
                    await agent.publish("telemetry.bench", {"n": n})
                    delay = started + n / RELAY_EPS - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)

            relay_task = asyncio.create_task(relay())
            counter = iter(range(cycles_wanted))
            base = f"http://127.0.0.1:{agent.web_port}"

            async def worker(worker_id: str, client: httpx.AsyncClient) -> None:
                nonlocal done
                for n in counter:
                    order = f"order-{worker_id}-{n}"
                    code = f"{secrets.randbelow(10**10):010d}"
                    orders.append(order)
                    await lockers.create_pickup(order, "M", int(time.time() * 1000) + 86_400_000, code)
                    # Staff load: wait until the parcel is in (several loads may queue for compartments).
                    while True:
                        try:
                            await lockers.start_load(order, actor="bench-staff")
                            break
                        except Exception:
                            await asyncio.sleep(0.05)
                    deadline = time.monotonic() + 30
                    while (p := lockers.pickup(order)) is not None and p.state == "loading":
                        if time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.02)
                    if p is None or p.state != "ready":
                        failed.append(f"{order}: load ended {p.state if p else 'missing'}")
                        continue
                    # The service picks the compartment (any bank); the customer goes to that bank's screen.
                    bank, lock = str(p.compartment).split("-")
                    compartment = int(lock)
                    emu = emulators[bank]
                    before = len(emu.unlock_log)
                    t0 = time.monotonic()
                    answer = await client.post(f"{base}/locker/{bank}/api/collect", json={"code": code})
                    if answer.json().get("status") != "ok":
                        failed.append(f"{order}: collect answered {answer.json().get('status')}")
                        continue
                    if answer.json().get("status") == "ok":
                        while True:
                            new = [r for r in emu.unlock_log[before:] if r.lock == compartment]
                            if new:
                                latencies.append((new[0].at - t0) * 1000)
                                break
                            if time.monotonic() - t0 > 5:
                                break
                            await asyncio.sleep(0.002)
                    deadline = time.monotonic() + 30
                    while (p := lockers.pickup(order)) is not None and p.state == "ready":
                        if time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.02)
                    if p is None or p.state != "collected":
                        failed.append(f"{order}: collect ended {p.state if p else 'missing'}")
                        continue
                    done += 1
                    collected.append(order)

            async with httpx.AsyncClient(timeout=30) as client:
                await asyncio.gather(
                    *(worker(f"{bank}{i}", client) for bank in BANKS for i in range(PER_BANK_CONCURRENCY))
                )
            stop_relay.set()
            await relay_task
            await asyncio.sleep(3.0)  # let the last events reach the cloud
            agent.request_stop()
            await asyncio.wait_for(runner, 30)
        # A completed cycle needs exactly two unlocks; a failed one (a jam) at most two.
        unlocks = sum(len(e.unlock_log) for e in emulators.values())
        wrong_opens = max(0, unlocks - 2 * (done + len(failed)))
        missed = 0
        for order in collected:
            for event_type in ("pickup.ready", "pickup.collected"):
                if cloud.count(event_type, order) == 0:
                    missed += 1
            missed += max(0, 2 - cloud.count("audit.door_opened", order))
    finally:
        cloud.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(latencies)
    return {
        "cycles": done,
        "failed_cycles": len(failed),
        "failures": failed[:5],
        "unlock_p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "unlock_p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1) if ordered else None,
        "unlock_samples": len(ordered),
        "wrong_opens": wrong_opens,
        "missed_events": missed,
        "relay_eps": RELAY_EPS,
        "banks": len(BANKS),
        "bulk_tag_update": False,
        "quick": quick,
    }


class contextlib_stack:
    """Run every bank's emulator on its own pty for the block's duration."""

    def __init__(self, emulators: dict[str, LockBoardEmulator], workdir: Path) -> None:
        self._emulators = emulators
        self._workdir = workdir
        self._stack: Any = None

    async def __aenter__(self) -> list[PtyPort]:
        import contextlib  # noqa: PLC0415

        self._stack = contextlib.AsyncExitStack()
        ports = []
        for bank, emu in self._emulators.items():
            port = PtyPort(self._workdir / f"lockers-{bank}")
            await self._stack.enter_async_context(emu.running(port))
            ports.append(port)
        return ports

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(*exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 cycles instead of 10,000")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.quick))))


if __name__ == "__main__":
    main()
