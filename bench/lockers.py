"""Locker benchmark: load-and-collect cycles against the lock-board emulator, through the running agent.

python -m bench.lockers [--quick]

Sixteen banks of 16 compartments (a Kerong board each), two banks on each of eight RS485 buses, played
by the emulator in a process of its own on paced ptys (19200 baud), with random people (they open
0.1-0.5 s after the unlock and close 0.4-1.0 s later). Each cycle: pickup.create (with a cloud-issued
code), a staff load at the bank's screen, the customer's code POSTed to that bank's collect endpoint,
the parcel taken. One person at a time at each screen, as in front of a real one; the sixteen screens
run at once, so the two banks of a bus do collide. Meanwhile the same agent relays 1,000 events/s to a
real cloud Mosquitto and runs bulk price updates of e-ink tags, one after the other, through a
base-station emulator (its own process).

- unlock_p99_ms: from POSTing a valid code to the emulator having decoded the whole unlock frame (so it
  also counts the frame's time on the wire: an upper bound of "until the unlock frame is written"),
  both clocks CLOCK_MONOTONIC;
- cycles; wrong_opens: unlocks the emulator saw on a lock beyond what the cycles on it asked for;
  missed_events: pickup.ready / pickup.collected / audit.door_opened that never reached the cloud broker;
- bulk_tag_updates / bulk_tags_confirmed: tag updates that ran during the measurement.
The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._procs import stop_processes
from bench._stalls import StallSampler
from bench.tags import TAG, content, seed_store
from edge_agent.config import parse_config
from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from firmware_bridge.emulators.base_station import mixed
from tests.support.broker import Broker

BANKS = tuple("ABCDEFGHIJKLMNOP")
BANKS_PER_BUS = 2  # a bank is one board of 16 compartments; two banks (two screens) share an RS485 bus
BUSES = tuple(f"rs485-{n}" for n in range(len(BANKS) // BANKS_PER_BUS))
LOCKS = 16
RELAY_EPS = 1000
KEY = "ab" * 32
ROOT = Path(__file__).resolve().parent.parent


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


class UnlockWatch:
    """Unlock records from the emulator process: (bank, board, lock) -> monotonic times, oldest first."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.times: dict[tuple[str, int, int], list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"lock-board emulator did not start: {line!r}")
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            parts = raw.decode().split()
            if len(parts) == 5 and parts[0] == "unlock":
                with self._lock:
                    self.times[(parts[1], int(parts[2]), int(parts[3]))].append(float(parts[4]))

    def first_after(self, key: tuple[str, int, int], t0: float) -> float | None:
        with self._lock:
            return next((t for t in self.times.get(key, ()) if t >= t0), None)

    def counts(self) -> Counter[tuple[str, int, int]]:
        with self._lock:
            return Counter({k: len(v) for k, v in self.times.items()})


def bus_and_board(bank: str) -> tuple[str, int]:
    n = BANKS.index(bank)
    return BUSES[n // BANKS_PER_BUS], n % BANKS_PER_BUS


def where(compartment: str) -> tuple[str, int, int]:
    """(bus, board number, lock) of a compartment "B-07"."""
    bank, number = compartment.split("-")
    bus, board = bus_and_board(bank)
    return bus, board, int(number)


def lockers_section(workdir: Path) -> dict[str, Any]:
    """The agent's [lockers]: every bank a Kerong board of 16 M compartments, two boards per bus, each bus on
    the pty bench._lock_emulator_proc makes in `workdir`."""
    return {
        "enabled": True,
        "buses": [{"name": bus, "url": str(workdir / f"lockers-{bus}")} for bus in BUSES],
        "boards": [{"id": f"board-{b}", "bus": bus_and_board(b)[0], "number": bus_and_board(b)[1]} for b in BANKS],
        "compartments": [
            {"id": f"{b}-{lock:02d}", "bank": b, "board": f"board-{b}", "lock": lock, "size": "M",
             "row": (lock - 1) // 4 + 1, "column": (lock - 1) % 4 + 1}
            for b in BANKS
            for lock in range(1, LOCKS + 1)
        ],
    }


def start_process(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, cwd=ROOT)


async def run(quick: bool, stalls: bool = False) -> dict[str, Any]:
    cycles_wanted = 1000 if quick else 10_000
    tag_count = 500 if quick else 1000
    workdir = Path(tempfile.mkdtemp(prefix="bench-lockers-"))
    broker = Broker(workdir / "cloud", persistence=False)
    broker.start()
    cloud = CloudCounter(broker.port)
    base_url = "https://s.example.cn"
    tags = sorted(s.tag for s in mixed(tag_count, 11, type=TAG))
    seed_store(workdir / "data", workdir / "preload", tags, base_url)
    procs: list[subprocess.Popen[bytes]] = []
    latencies: list[float] = []
    lags: list[float] = []
    expected: Counter[tuple[str, int, int]] = Counter()
    collected: list[str] = []
    failed: list[str] = []
    bulk = {"updates": 0, "confirmed": 0}
    try:
        locks_proc = start_process(["bench._lock_emulator_proc", str(workdir), ",".join(BUSES), str(BANKS_PER_BUS)])
        procs.append(locks_proc)
        watch = UnlockWatch(locks_proc)
        await asyncio.to_thread(watch.start)
        tags_proc = start_process(
            ["bench._emulator_proc", str(workdir / "bs0"), str(workdir / "preload"), str(tag_count), "11", TAG.name,
             str(workdir / "state")]
        )
        procs.append(tags_proc)
        assert tags_proc.stdout is not None
        if b"ready" not in await asyncio.to_thread(tags_proc.stdout.readline):
            raise RuntimeError("base-station emulator did not start")
        config = parse_config(
            {
                "agent": {"store_id": "bench-store", "data_dir": str(workdir / "data"), "log_level": "WARNING"},
                "web": {"host": "127.0.0.1", "port": 0, "https": False},
                "cloud": {"host": broker.host, "port": broker.port, "tls": {"enabled": False}},
                "local_broker": {"enabled": False},
                "labels": {"public_base_url": base_url, "max_in_flight_per_station": 8},
                "base_stations": [{"name": "bs1", "url": str(workdir / "bs0")}],
                "lockers": lockers_section(workdir),
            }
        )
        agent = Agent(config, env={"EDGE_AGENT_STORE_HMAC_KEY": KEY})
        runner = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 30)
        assert agent.lockers is not None and agent.labels is not None and agent.catalog is not None
        lockers, labels, catalog = agent.lockers, agent.labels, agent.catalog
        await asyncio.sleep(3.0)  # buses and base station up, start-up reconciliation and tag sync done
        stop = asyncio.Event()

        async def relay() -> None:
            n = 0
            started = time.monotonic()
            while not stop.is_set():
                n += 1
                await agent.publish("telemetry.bench", {"n": n})
                delay = started + n / RELAY_EPS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

        async def bulk_updates() -> None:
            round_ = 0
            while not stop.is_set():
                round_ += 1
                await catalog.upsert(
                    [
                        Product.model_validate(
                            {"sku": c.sku, "name": c.name, "price": c.price, "currency": "CNY",
                             "unit_price": c.unit_price, "unit_label": "500 g", "origin": "中国"}
                        )
                        for c in (content(i, 990 + (i + round_) % 50 + round_ * 3) for i in range(tag_count))
                    ]
                )
                bulk["updates"] += 1
                await asyncio.sleep(0.5)  # the catalog change has re-queued every tag's job
                while not stop.is_set() and (p := labels.progress())["queued"] + p["sending"] > 0:
                    await asyncio.sleep(0.2)
                bulk["confirmed"] += labels.progress()["confirmed"]

        async def loop_lag() -> None:
            # How late the agent's event loop wakes a 5 ms sleeper: stalls there delay every unlock.
            while not stop.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append((time.monotonic() - before - 0.005) * 1000)

        background = [asyncio.create_task(t) for t in (relay(), bulk_updates(), loop_lag())]
        sampler = StallSampler() if stalls else None
        sampler_task = asyncio.create_task(sampler.heartbeat()) if sampler else None
        counter = iter(range(cycles_wanted))
        base = f"http://127.0.0.1:{agent.web_port}"

        async def wait_state(order: str, state: str) -> str:
            deadline = time.monotonic() + 30
            while (p := lockers.pickup(order)) is not None and p.state == state:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)  # the benchmark polls in the agent's own loop: gently
            return "missing" if p is None else p.state

        async def worker(bank: str, client: httpx.AsyncClient) -> None:
            """The bank's screen: one person at a time, a staff load then the customer's collect."""
            for n in counter:
                order = f"order-{bank}-{n}"
                code = f"{secrets.randbelow(10**10):010d}"
                await lockers.create_pickup(order, "M", int(time.time() * 1000) + 86_400_000, code)
                while True:  # the staff load at this bank (all its doors may be busy for a moment)
                    try:
                        started = await lockers.start_load(order, actor="bench-staff", bank=bank)
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
                spot = where(started.compartment)
                expected[spot] += 1
                if (state := await wait_state(order, "loading")) != "ready":
                    failed.append(f"{order}: load ended {state}")
                    continue
                t0 = time.monotonic()
                answer = await client.post(f"{base}/locker/{bank}/api/collect", json={"code": code})
                if answer.json().get("status") != "ok":
                    failed.append(f"{order}: collect answered {answer.json().get('status')}")
                    continue
                expected[spot] += 1
                while (at := watch.first_after(spot, t0)) is None and time.monotonic() - t0 < 5:
                    await asyncio.sleep(0.002)
                if at is not None:
                    latencies.append((at - t0) * 1000)
                if (state := await wait_state(order, "ready")) != "collected":
                    info = lockers.compartment(started.compartment)
                    why = "" if info.enabled else f", {info.spec.id} out of service: {info.oos_reason}"
                    failed.append(f"{order}: collect ended {state}{why}")
                    continue
                collected.append(order)

        measured_from = time.monotonic()
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: a POST sent on a
        # connection the server is closing at that moment fails (a browser retries it; httpx does not).
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            cycles = asyncio.ensure_future(asyncio.gather(*(worker(bank, client) for bank in BANKS)))
            # The agent runs in this process: if it stops on its own (a crash), say so rather than let the
            # workers fail on closed connections.
            watched: set[asyncio.Future[Any]] = {cycles, runner}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if runner.done() and not cycles.done():
                cycles.cancel()
                raise RuntimeError(f"the agent stopped during the benchmark: {runner.exception()!r}")
            await cycles
        measured_s = time.monotonic() - measured_from
        stop.set()
        await asyncio.gather(*background)
        if sampler and sampler_task:
            sampler_task.cancel()
            print(sampler.report(), file=sys.stderr)
        await asyncio.sleep(3.0)  # let the last events reach the cloud
        agent.request_stop()
        await asyncio.wait_for(runner, 30)
        seen = watch.counts()
        wrong_opens = sum(max(0, seen[k] - expected[k]) for k in seen)
        missed = 0
        for order in collected:
            for event_type in ("pickup.ready", "pickup.collected"):
                if cloud.count(event_type, order) == 0:
                    missed += 1
            missed += max(0, 2 - cloud.count("audit.door_opened", order))
    finally:
        stop_processes(procs)
        cloud.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(latencies)
    return {
        "cycles": len(collected),
        "failed_cycles": len(failed),
        "failures": failed[:5],
        "cycles_per_s": round(len(collected) / measured_s, 1),
        "unlock_p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "unlock_p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1) if ordered else None,
        "unlock_max_ms": round(ordered[-1], 1) if ordered else None,
        "unlock_samples": len(ordered),
        "loop_lag_p99_ms": round(sorted(lags)[int(len(lags) * 0.99)], 1) if lags else None,
        "loop_lag_max_ms": round(max(lags), 1) if lags else None,
        "wrong_opens": wrong_opens,
        "missed_events": missed,
        "relay_eps": RELAY_EPS,
        "bulk_tag_update": bulk["updates"] > 0,
        "bulk_tag_updates": bulk["updates"],
        "bulk_tags_confirmed": bulk["confirmed"],
        "banks": len(BANKS),
        "buses": len(BUSES),
        "compartments": len(BANKS) * LOCKS,
        "quick": quick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 cycles instead of 10,000")
    parser.add_argument("--stalls", action="store_true", help="print where the agent's event loop stalled")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.quick, args.stalls))))


if __name__ == "__main__":
    main()
