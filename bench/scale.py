"""Scale benchmark (issue 13): a whole store on one agent process: start time, memory, database size, and how
fast a day's backlog drains when the cloud comes back.

python -m bench.scale [--quick] [--profile] [--keep]

The agent runs as a real process (`python -m edge_agent run --config ...`, as under systemd) with, all real
and each in a process of its own: 4 base-station emulators on ptys paced at 115200 baud holding 20,000 tags
(bench._emulator_proc, 5,000 each; the store seeded by bench.tags.seed_store: products, paired tags, the
pictures they show), 256 locker compartments (16 Kerong boards, two per RS485 bus on 8 ptys paced at 19200
baud: bench._lock_emulator_proc with its random people), 20 kiosks, 50 Wi-Fi sensors (each its own MQTT
connection with a Last Will) on a real in-store Mosquitto, and a real cloud Mosquitto with an independent
subscriber (bench._cloud_subscriber) counting every event by type.

- ready_s_cold: from starting the process to systemd's READY=1, on an empty data directory (the agent
  creates and migrates its database, makes its HTTPS certificate and setup token); the base stations are
  not plugged in yet (their tags would be discovered into the database the store is seeded into next).
  READY is the datagram the agent sends to $NOTIFY_SOCKET (edge_agent/systemd_notify.py): the benchmark
  binds that socket itself and passes its path in the agent's environment, as systemd does for Type=notify.
- ready_s_warm: the same, again on the same database, now holding the store (the start the busy hour runs
  on); ready_s_restart: once more after the busy hour and the outage (the database after a "day").
- rss_mb_start: the agent process's resident memory once started and settled (every base station linked and
  its tag list read: settle_s after READY); rss_mb_busy after the busy hour. rss_mb_tree_*: the
  proportional set size (PSS) of the agent's whole process tree, shared pages counted once (what the
  service's cgroup is charged for); rss_mb_children_* the part of it under the agent process (its render
  workers and their forkserver).
- the busy hour, compressed (all at once; busy_s until the last is done):
  `events` of the shoppers' and devices' own, sent within events_s: 90 % scan links (bench._scan_load at a
  steady rate, every 302 after its scan.tag was committed) and 10 % telemetry from the 50 sensors (QoS 1,
  in turn); `label_updates` tags re-priced by catalog.upsert commands over the cloud broker, each counted
  when its tag.updated reached the cloud (the tag itself reported the new picture's hash); `locker_cycles`
  pickups, one person at a time at each of the 16 screens: pickup.create over the cloud broker, staff
  sign-in and load at the bank's screen (HTTP), pickup.ready at the cloud, the customer's code at the
  screen, pickup.collected at the cloud. events_relayed counts every event the subscriber received in that
  time, by type; events_missing the scans and telemetry sent but not relayed. The agent runs the cloud's commands
  one at a time: catalog_upserts_answered_s is until the last catalog.upsert was answered, and
  pickup_create_*_ms from publishing a pickup.create to its result (queued behind those upserts).
- db_mb: agent.db with its WAL after the busy hour; db_mb_backlog with the outage's backlog in the outbox.
- outbox_drain_eps: the cloud broker stopped (a day-long outage), shoppers keep scanning (closed-loop scan
  links) until the outbox holds `backlog` more events, then the broker starts again: the events in the
  outbox at that moment divided by the time from starting the broker until the subscriber received that
  many (and the outbox is empty: outbox_depth_after). The agent reconnects with a backoff of 0.1-0.4 s
  here (cloud.backoff_min_s 0.2, backoff_max_s 0.4; with the default ceiling of 60 s up to a minute of pure
  waiting would be in the figure); reconnect_s, from the broker's start to the first event at the
  subscriber, is in the figure and reported apart too. The subscriber's session is persistent and the
  broker keeps it, so it misses nothing whoever reconnects first.
- relay_eps: the reference, measured in the same run once the store is stopped: bench.relay's throughput
  (its `measure`: the agent in that process, 64 producers publishing as many events through the outbox to
  the same subscriber); drain_vs_relay = outbox_drain_eps / relay_eps.

Targets (issue 13): ready_s_warm <= 5 (and ready_s_restart), rss_mb_busy <= 200 (the agent process; the
same bound is checked for the whole tree too, rss_mb_tree_busy), drain_vs_relay >= 0.8.
`--quick` scales the counts down (the JSON's "counts" says which were used). `--profile` runs the busy-hour
agent under cProfile and prints where its time went (stderr); its figures are then not comparable. `--keep`
keeps the working directory (the agents' logs, the database). The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench import relay
from bench._cloud_subscriber import PhaseRecord, run_subscriber
from bench._procs import stop_processes
from bench._shelves_cloud import BenchCloud
from bench.kiosk import load
from bench.lockers import BANKS, BANKS_PER_BUS, BUSES, UnlockWatch, lockers_section, start_process
from bench.tags import TAG, content, seed_store
from edge_agent.config import AgentConfig, parse_config
from firmware_bridge.emulators.base_station import mixed
from tests.support.agent_process import to_toml
from tests.support.broker import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
STORE = "bench-store"
STATIONS = 4
KIOSKS = 20
DEVICES = 50
# The share of the busy hour's events that is the devices' telemetry; the rest are shoppers' scan links. The
# agent relays device messages one at a time, each after its own commit (about 400/s on this machine,
# idle), and its in-store link stalls for good once its relay queue overflows (see the README): the
# devices stay well below that.
TELEMETRY_SHARE = 0.1
SCAN_CONNECTIONS = 64
PRODUCTS_PER_COMMAND = 250  # a catalog.upsert under the default 64 KiB command limit
KEY = "ab" * 32
STAFF_NUMBER = "4711"
STAFF_PIN = "582039"
DEVICE_PREFIX = "store/v1/devices"
T = TypeVar("T")


@dataclass(frozen=True)
class Counts:
    tags: int
    events: int  # the busy hour's scans and telemetry, sent in events_s
    events_s: float
    label_updates: int
    locker_cycles: int
    backlog: int


FULL = Counts(tags=20_000, events=100_000, events_s=200, label_updates=20_000, locker_cycles=1000, backlog=100_000)
QUICK = Counts(tags=4000, events=20_000, events_s=20, label_updates=2000, locker_cycles=100, backlog=20_000)


class CloudBroker(Broker):
    """The cloud's Mosquitto: persistent (sessions survive its restart) and queueing QoS 0 messages for a
    persistent subscriber that is away, so the independent subscriber misses nothing while it reconnects
    after the outage."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, persistence=True)

    def _write_conf(self) -> None:
        super()._write_conf()
        with self.conf.open("a") as conf:
            conf.write("queue_qos0_messages true\n")


class StoreCloud(BenchCloud):
    """The cloud's side of the busy hour: sends commands and keeps their results (BenchCloud), counts the
    tags that confirmed their update and when each pickup became ready and was collected."""

    def __init__(self, broker: Broker) -> None:
        self.updated: set[str] = set()
        self.update_failed = 0
        self.pickups: dict[tuple[str, str], float] = {}
        events = f"retail/v1/{STORE}/events"
        topics = (f"retail/v1/{STORE}/commands/result", f"{events}/tag.updated", f"{events}/tag.update_failed",
                  f"{events}/pickup.ready", f"{events}/pickup.collected")
        super().__init__(broker.host, broker.port, STORE, topics=topics, client_id="bench-scale-cloud")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        super()._on_message(client, userdata, msg)
        if "/events/" not in msg.topic:
            return
        now = time.monotonic()
        doc = json.loads(msg.payload)
        with self._lock:
            if doc["type"] == "tag.updated":
                self.updated.add(doc["payload"]["tag_id"])
            elif doc["type"] == "tag.update_failed":
                self.update_failed += 1
            else:
                self.pickups.setdefault((doc["type"], doc["payload"]["order_id"]), now)

    def confirmed(self) -> int:
        with self._lock:
            return len(self.updated)

    def pickup(self, event_type: str, order_id: str) -> float | None:
        with self._lock:
            return self.pickups.get((event_type, order_id))


def run_devices(host: str, port: int, count: int, conn: Connection) -> None:
    """The store's Wi-Fi devices, in a process of their own: `count` sensors, each its own MQTT connection with
    a Last Will, announced (retained) as docs/mqtt-devices.md says. On ("publish", phase, n, rate) they send n
    telemetry messages in turn (QoS 1), `rate` a second (0: as fast as the broker takes them), and answer
    (n, acknowledged by the broker, seconds) once every PUBACK is in or 10 minutes passed."""
    clients: list[tuple[paho.Client, str]] = []
    for i in range(count):
        base = f"{DEVICE_PREFIX}/sensor-{i:02d}"
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-scale-sensor-{i:02d}")
        client.will_set(f"{base}/availability", "offline", qos=1, retain=True)
        client.connect(host, port, keepalive=30)
        client.loop_start()
        clients.append((client, base))
    announce = json.dumps({"kind": "other", "model": "TH-1", "fw": "2.0.1", "capabilities": ["telemetry"]})
    for client, base in clients:
        client.publish(f"{base}/announce", announce, qos=1, retain=True).wait_for_publish(10)
        client.publish(f"{base}/availability", "online", qos=1, retain=True).wait_for_publish(10)
    conn.send("ready")
    while True:
        command = conn.recv()
        if command[0] == "stop":
            break
        _, phase, n, rate = command
        infos: list[paho.MQTTMessageInfo] = []
        started = time.monotonic()
        for k in range(n):
            if rate:
                delay = started + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            client, base = clients[k % count]
            body = json.dumps({"phase": phase, "t0": time.monotonic(), "i": k, "temp_c": 21.5, "battery_mv": 3900},
                              separators=(",", ":"))
            infos.append(client.publish(f"{base}/telemetry", body, qos=1))
        deadline = time.monotonic() + 600
        for info in infos:
            if time.monotonic() >= deadline:
                break
            # Not queued (the connection was lost): counted below as not acknowledged.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        conn.send((n, sum(1 for info in infos if info.is_published()), time.monotonic() - started))
    for client, base in clients:
        client.publish(f"{base}/availability", "offline", qos=1, retain=True).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()


# -- the agent process ----------------------------------------------------------------------------------------


class AgentProcess:
    """`python -m edge_agent run --config ...` with $NOTIFY_SOCKET bound here: its start is timed to READY=1."""

    def __init__(self, config_path: Path, workdir: Path, name: str, profile: bool = False) -> None:
        self.log_path = workdir / f"agent-{name}.log"
        self.profile_path = workdir / f"agent-{name}.prof" if profile else None
        notify_path = workdir / f"notify-{name}.sock"
        # What systemd does for Type=notify: a datagram socket whose path the service finds in NOTIFY_SOCKET.
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        args = [sys.executable]
        if self.profile_path is not None:
            args += ["-m", "cProfile", "-o", str(self.profile_path)]
        args += ["-m", "edge_agent", "run", "--config", str(config_path)]
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "EDGE_AGENT_STORE_HMAC_KEY": KEY}
        with self.log_path.open("wb") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from starting the process to its READY=1 datagram."""
        deadline = self.started + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited ({self.proc.returncode}) before READY: {self.log_tail()}")
            self._notify.settimeout(min(0.5, left))
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in message.split(b"\n"):
                return time.monotonic() - self.started
        raise RuntimeError(f"no READY=1 within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._notify.close()
        if self.profile_path is not None and self.profile_path.exists():
            stats = pstats.Stats(str(self.profile_path), stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(30)
        return self.proc.returncode

    def rss_mb(self) -> float:
        return round(_status_kb(self.proc.pid, "VmRSS") / 1024, 1)

    def tree_pss_mb(self) -> tuple[float, float]:
        """Proportional set size of the agent and every process under it, and of those under it alone."""
        pids = list(_tree(self.proc.pid))
        children = sum(_pss_kb(pid) for pid in pids[1:])
        return round((_pss_kb(pids[0]) + children) / 1024, 1), round(children / 1024, 1)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass  # gone meanwhile
    return 0


def _tree(pid: int) -> Iterator[int]:
    yield pid
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            yield from _tree(int(child))


def db_mb(data_dir: Path) -> float:
    files = [data_dir / "agent.db", data_dir / "agent.db-wal"]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 1)


# -- the bench's side ----------------------------------------------------------------------------------------


async def poll(probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> T | None:
    """`probe()` until it gives something other than None, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None and time.monotonic() < deadline:
        await asyncio.sleep(every)
    return found


def health(client: httpx.Client) -> dict[str, Any]:
    return client.get("/healthz").json()  # type: ignore[no-any-return]


def wait_settled(client: httpx.Client, timeout: float = 120) -> float:
    """Until every base station is linked and its line has been quiet for a second (the tag lists read: tags
    check in hourly here), and the cloud link is up; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    last: dict[str, float] = {}
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        up = [line for line in text.splitlines() if line.startswith("edge_base_station_connected{")]
        received = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("edge_base_station_link{") and 'counter="bytes_received"' in line}
        if received != last:
            last, quiet_since = received, time.monotonic()
        linked = len(up) == STATIONS and all(line.endswith(" 1.0") for line in up)
        if linked and health(client)["cloud"]["connected"] and time.monotonic() - quiet_since >= 1.0:
            return time.monotonic() - started
        time.sleep(0.25)
    raise RuntimeError("the agent did not settle: base stations not all linked, or their lines still busy")


def product_json(i: int, cents: int) -> dict[str, Any]:
    c = content(i, cents)
    return {"sku": c.sku, "name": c.name, "price": str(c.price), "currency": "CNY", "unit_price": str(c.unit_price),
            "unit_label": "500 g", "origin": "中国"}


async def label_updates(cloud: StoreCloud, skus: list[int], timeout: float) -> dict[str, Any]:
    """Every listed product re-priced by catalog.upsert commands; until as many tags confirmed their update."""
    started = time.monotonic()
    ids = []
    for n in range(0, len(skus), PRODUCTS_PER_COMMAND):
        cid = f"bench-scale-upsert-{n}"
        products = [product_json(i, 990 + i % 50) for i in skus[n : n + PRODUCTS_PER_COMMAND]]
        await asyncio.to_thread(cloud.send, cid, "catalog.upsert", {"products": products})
        ids.append(cid)
    errors = []
    answered = started
    for cid in ids:
        result = await poll(partial(cloud.result, cid), max(10.0, timeout - (time.monotonic() - started)), 0.1)
        if result is None or result[1]["status"] != "ok":
            errors.append(cid if result is None else result[1].get("error"))
        else:
            answered = max(answered, result[0])
    await poll(lambda: True if cloud.confirmed() >= len(skus) else None, timeout - (time.monotonic() - started), 0.2)
    return {"confirmed": cloud.confirmed(), "failed": cloud.update_failed, "command_errors": errors[:3],
            "commands": len(ids), "commands_s": round(answered - started, 1),
            "seconds": round(time.monotonic() - started, 1)}


class Lockers:
    """The 16 screens: one person at a time at each, cycles taken from one shared counter."""

    def __init__(self, base_url: str, cloud: StoreCloud, cycles: int) -> None:
        self.base_url = base_url
        self.cloud = cloud
        self.counter = iter(range(cycles))
        self.done: list[float] = []  # seconds per cycle
        self.create_ms: list[float] = []  # pickup.create published until its result arrived
        self.failed: list[str] = []
        self.rng = random.Random(13)

    async def sign_in(self, http: httpx.AsyncClient, bank: str) -> dict[str, str]:
        answer = await http.post(f"/locker/{bank}/api/staff/sign-in",
                                 json={"kind": "staff", "staff_number": STAFF_NUMBER, "pin": STAFF_PIN})
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    async def screen(self, http: httpx.AsyncClient, bank: str, deadline: float) -> None:
        auth = await self.sign_in(http, bank)
        for n in self.counter:
            if time.monotonic() > deadline:
                self.failed.append(f"{bank}: out of time")
                return
            order = f"scale-{bank}-{n}"
            code = f"{self.rng.randrange(10**9, 10**10)}"
            started = time.monotonic()
            cid = f"bench-scale-create-{order}"
            create = {"order_id": order, "size": "M", "code": code}
            sent = await asyncio.to_thread(self.cloud.send, cid, "pickup.create", create)
            # Commands run one at a time: a pickup.create may wait behind the catalog updates (create_*_ms).
            result = await poll(partial(self.cloud.result, cid), max(10.0, deadline - time.monotonic()))
            if result is None or result[1]["status"] != "ok":
                self.failed.append(f"{order}: pickup.create {result}")
                continue
            self.create_ms.append((result[0] - sent) * 1000)
            answer = await http.post(f"/locker/{bank}/api/staff/load", json={"order_id": order}, headers=auth)
            if answer.status_code == 401:  # the staff session timed out: sign in again, as staff would
                auth = await self.sign_in(http, bank)
                answer = await http.post(f"/locker/{bank}/api/staff/load", json={"order_id": order}, headers=auth)
            if answer.status_code != 200:
                self.failed.append(f"{order}: load answered {answer.status_code} {answer.text[:100]}")
                continue
            if await poll(partial(self.cloud.pickup, "pickup.ready", order), 30) is None:
                self.failed.append(f"{order}: no pickup.ready")
                continue
            answer = await http.post(f"/locker/{bank}/api/collect", json={"code": code})
            if answer.json().get("status") != "ok":
                self.failed.append(f"{order}: collect answered {answer.text[:100]}")
                continue
            if await poll(partial(self.cloud.pickup, "pickup.collected", order), 30) is None:
                self.failed.append(f"{order}: no pickup.collected")
                continue
            self.done.append(time.monotonic() - started)

    async def run(self, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        # Idle keep-alive connections are dropped before uvicorn's 5 s timeout closes them (see bench.lockers).
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30,
                                     limits=httpx.Limits(keepalive_expiry=2.0)) as http:
            await asyncio.gather(*(self.screen(http, bank, started + timeout) for bank in BANKS))
        return {"cycles": len(self.done), "failed": len(self.failed), "failures": self.failed[:3],
                "cycle_p50_s": round(statistics.median(self.done), 2) if self.done else None,
                "create_p50_ms": round(statistics.median(self.create_ms), 1) if self.create_ms else None,
                "create_p99_ms": round(sorted(self.create_ms)[int(len(self.create_ms) * 0.99)], 1)
                if self.create_ms else None,
                "create_max_ms": round(max(self.create_ms), 1) if self.create_ms else None,
                "seconds": round(time.monotonic() - started, 1)}


class HelperProcess:
    """A helper in a process of its own (spawned), driven over a pipe: `ask` blocks until it answers."""

    def __init__(self, ctx: Any, target: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child), kwargs=kwargs, daemon=True)
        self.proc.start()
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            raise RuntimeError(f"{target.__name__} did not start")

    def ask(self, *command: Any, timeout: float = 900) -> Any:
        self.conn.send(command)
        if not self.conn.poll(timeout):
            raise RuntimeError(f"no answer to {command[:2]} within {timeout:.0f} s")
        return self.conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.conn.send(("stop",))
            self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()


async def busy_hour(counts: Counts, cloud: StoreCloud, devices: HelperProcess, subscriber: HelperProcess, web_port: int,
                    codes: Path, tags_per_station: int) -> dict[str, Any]:
    await asyncio.to_thread(subscriber.ask, "reset")
    started = time.monotonic()
    # The first products of every station's range: the update spreads over the four lines.
    per_station = counts.label_updates // STATIONS
    skus = [s * tags_per_station + k for s in range(STATIONS) for k in range(per_station)]
    limit = 900.0
    telemetry = int(counts.events * TELEMETRY_SHARE)
    scans = counts.events - telemetry
    labels, lockers, published, scanned = await asyncio.gather(
        label_updates(cloud, skus, limit),
        Lockers(f"http://127.0.0.1:{web_port}", cloud, counts.locker_cycles).run(limit),
        asyncio.to_thread(devices.ask, "publish", "bsy", telemetry, telemetry / counts.events_s),
        asyncio.to_thread(load, web_port, codes, "open", counts.events_s, SCAN_CONNECTIONS, scans / counts.events_s),
    )
    redirects = scanned["statuses"].get("302", 0)
    # Every 302 came after its scan.tag was committed, every telemetry message the broker took goes to the agent:
    # wait for them at the cloud.
    await asyncio.to_thread(subscriber.ask, "wait", "scan.tag", redirects, 120)
    await asyncio.to_thread(subscriber.ask, "wait", "telemetry.device", published[1], 60)
    relayed: dict[str, int] = await asyncio.to_thread(subscriber.ask, "counts")
    sent = redirects + published[1]
    return {
        "busy_s": round(time.monotonic() - started, 1),
        "events_relayed": relayed.get("*", 0),
        "events_missing": max(0, sent - relayed.get("scan.tag", 0) - relayed.get("telemetry.device", 0)),
        "events_relayed_by_type": {k: v for k, v in sorted(relayed.items()) if k != "*"},
        "scan_redirects": redirects,
        "scan_other_statuses": {k: v for k, v in scanned["statuses"].items() if k != "302"},
        "scan_p99_ms": scanned["p99_ms"],
        "telemetry_published": published[1],
        "label_updates_confirmed": labels["confirmed"],
        "label_updates_failed": labels["failed"],
        "label_updates_s": labels["seconds"],
        "label_command_errors": labels["command_errors"],
        "catalog_upserts": labels["commands"],
        "catalog_upserts_answered_s": labels["commands_s"],
        "locker_cycles_done": lockers["cycles"],
        "locker_cycles_failed": lockers["failed"],
        "locker_failures": lockers["failures"],
        "locker_cycle_p50_s": lockers["cycle_p50_s"],
        "pickup_create_p50_ms": lockers["create_p50_ms"],
        "pickup_create_p99_ms": lockers["create_p99_ms"],
        "pickup_create_max_ms": lockers["create_max_ms"],
        "locker_cycles_s": lockers["seconds"],
    }


def outage(counts: Counts, cloud_broker: Broker, subscriber: HelperProcess, http: httpx.Client, web_port: int,
           codes: Path, data_dir: Path) -> dict[str, Any]:
    cloud_broker.stop()
    deadline = time.monotonic() + 60
    while health(http)["cloud"]["connected"] and time.monotonic() < deadline:
        time.sleep(0.1)
    depth_before = health(http)["outbox"]["depth"]
    # Shoppers keep scanning: closed-loop scan links, in rounds sized to reach the backlog.
    started = time.monotonic()
    rounds = []
    rps = 0.0
    while (missing := depth_before + counts.backlog - health(http)["outbox"]["depth"]) > 0:
        if time.monotonic() - started > 600:
            raise RuntimeError("the backlog was not built within 10 minutes")
        seconds = 3.0 if not rps else max(1.0, missing / rps)
        rounds.append(load(web_port, codes, "closed", seconds, 32))
        rps = rounds[-1]["rps"]
    ingest_s = time.monotonic() - started
    depth = health(http)["outbox"]["depth"]
    backlog_db = db_mb(data_dir)
    subscriber.ask("reset")
    broker_start = time.monotonic()
    cloud_broker.start()
    drained: PhaseRecord = subscriber.ask("wait", "*", depth, 600)
    end = drained.last_recv or time.monotonic()
    deadline = time.monotonic() + 60
    while (left := health(http)["outbox"]["depth"]) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    received = len(set(drained.event_ids))
    seqs = sorted(set(drained.seqs))
    return {
        "backlog_events": depth,
        "backlog_scan_rps": round(sum(r["requests"] for r in rounds) / ingest_s, 1),
        "db_mb_backlog": backlog_db,
        "outbox_drain_eps": round(received / (end - broker_start), 1) if received else None,
        "drain_s": round(end - broker_start, 2),
        "reconnect_s": round(drained.first_recv - broker_start, 2) if drained.first_recv else None,
        "drain_eps_connected": round(received / (end - drained.first_recv), 1)
        if drained.first_recv and end > drained.first_recv else None,
        "drain_missing": max(0, depth - received),
        "drain_duplicates": len(drained.event_ids) - received,
        "drain_gaps": (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else None,
        "outbox_depth_after": left,
    }


def seed(workdir: Path, data_dir: Path, counts: Counts, base_url: str) -> list[list[bytes]]:
    """The store: every station's tags paired and showing their price pictures (rendered on both cores)."""
    per_station = counts.tags // STATIONS
    stations = [sorted(s.tag for s in mixed(per_station, 11 + n, type=TAG)) for n in range(STATIONS)]
    if len({t for tags in stations for t in tags}) != per_station * STATIONS:
        raise RuntimeError("the stations' simulated tags share ids: pick other seeds")
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=mp.get_context("forkserver")) as pool:
        for n, tags in enumerate(stations):
            seed_store(data_dir, workdir / "preload", tags, base_url, base_station=f"bs{n + 1}",
                       first=n * per_station, render=lambda fn, items: pool.map(fn, items, chunksize=64))
    return stations


def config_dict(workdir: Path, data_dir: Path, cloud: Broker, local: Broker, web_port: int) -> dict[str, Any]:
    return {
        "agent": {"store_id": STORE, "data_dir": str(data_dir), "log_level": "WARNING"},
        "web": {"host": "127.0.0.1", "port": web_port, "https": True, "https_port": free_port()},
        # A short reconnect backoff: the drain figure is about throughput, not about waiting (docstring).
        "cloud": {"host": cloud.host, "port": cloud.port, "tls": {"enabled": False}, "backoff_min_s": 0.2,
                  "backoff_max_s": 0.4},
        "local_broker": {"enabled": True, "host": local.host, "port": local.port, "adopt": "auto"},
        "labels": {"public_base_url": f"http://127.0.0.1:{web_port}", "max_in_flight_per_station": 8},
        "base_stations": [{"name": f"bs{n + 1}", "url": str(workdir / f"bs{n + 1}")} for n in range(STATIONS)],
        "lockers": lockers_section(workdir),
        "kiosks": [{"id": f"k{i + 1}", "name": f"Kiosk {i + 1}"} for i in range(KIOSKS)],
        # One load generator is one client address: the limit is set out of its way (as in bench.kiosk).
        "scan_links": {"product_url_template": "https://m.example.cn/p/{sku}?store={store_id}&tag={tag_id}",
                       "rate_limit_per_minute": 1_000_000, "rate_limit_burst": 100_000},
    }


def write_config(config: AgentConfig, path: Path) -> Path:
    """tests/support's write_config, except that [lockers]'s arrays of tables go out as [[lockers.buses]] and so
    on: its to_toml writes arrays of tables at the top level whatever table they belong to."""
    data = config.model_dump(mode="json", exclude_none=True)
    lockers = data.pop("lockers")
    arrays = {key: lockers.pop(key) for key in list(lockers)
              if isinstance(lockers[key], list) and lockers[key] and all(isinstance(v, dict) for v in lockers[key])}
    text = to_toml(data) + to_toml({"lockers": lockers})
    for key, items in arrays.items():
        for item in items:
            text += f"[[lockers.{key}]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in item.items()) + "\n"
    path.write_text(text)
    return path


def add_staff(config_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "edge_agent", "locker-staff", "add", STAFF_NUMBER, "--config", str(config_path),
         "--pin-stdin"],
        input=f"{STAFF_PIN}\n".encode(), cwd=ROOT, check=True, capture_output=True, timeout=60,
    )


def run(counts: Counts, profile: bool, keep: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    data_dir = workdir / "data"
    cloud_broker = CloudBroker(workdir / "cloud")
    local = Broker(workdir / "local", persistence=False)
    cloud_broker.start()
    local.start()
    ctx = mp.get_context("spawn")
    procs: list[subprocess.Popen[bytes]] = []
    helpers: list[HelperProcess] = []
    agent: AgentProcess | None = None
    cloud: StoreCloud | None = None
    figures: dict[str, Any] = {}
    try:
        subscriber = HelperProcess(ctx, run_subscriber, cloud_broker.host, cloud_broker.port, persistent=True,
                                   by_type=True)
        helpers.append(subscriber)
        devices = HelperProcess(ctx, run_devices, local.host, local.port, DEVICES)
        helpers.append(devices)
        locks = start_process(["bench._lock_emulator_proc", str(workdir), ",".join(BUSES), str(BANKS_PER_BUS)])
        procs.append(locks)
        UnlockWatch(locks).start()  # reads the emulator's unlock lines, so that its pipe never fills
        web_port = free_port()
        config = parse_config(config_dict(workdir, data_dir, cloud_broker, local, web_port))
        config_path = write_config(config, workdir / "agent.toml")
        base_url = f"http://127.0.0.1:{web_port}"
        http = httpx.Client(base_url=base_url, timeout=10)

        # 1. The first start ever, on an empty data directory; the base stations are not plugged in yet.
        agent = AgentProcess(config_path, workdir, "cold")
        figures["ready_s_cold"] = round(agent.wait_ready(), 2)
        agent.stop()
        print(f"cold start: READY after {figures['ready_s_cold']} s", file=sys.stderr)

        # 2. The store in that database, the base stations plugged in, and the start of the day on it.
        add_staff(config_path)
        seeding = time.monotonic()
        stations = seed(workdir, data_dir, counts, base_url)
        print(f"seeded {counts.tags} tags in {time.monotonic() - seeding:.1f} s", file=sys.stderr)
        for n, tags in enumerate(stations):
            proc = start_process(["bench._emulator_proc", str(workdir / f"bs{n + 1}"), str(workdir / "preload"),
                                  str(len(tags)), str(11 + n), TAG.name, str(workdir / f"state-{n + 1}")])
            procs.append(proc)
            assert proc.stdout is not None
            if b"ready" not in proc.stdout.readline():
                raise RuntimeError(f"base-station emulator bs{n + 1} did not start")
        agent = AgentProcess(config_path, workdir, "warm", profile)
        figures["ready_s_warm"] = round(agent.wait_ready(), 2)
        figures["settle_s"] = round(wait_settled(http), 1)
        figures["rss_mb_start"] = agent.rss_mb()
        figures["rss_mb_tree_start"], figures["rss_mb_children_start"] = agent.tree_pss_mb()
        print(f"warm start: READY after {figures['ready_s_warm']} s, settled {figures['settle_s']} s later, "
              f"{figures['rss_mb_start']} MB", file=sys.stderr)

        # 3. The busy hour.
        cloud = StoreCloud(cloud_broker)
        codes = workdir / "codes.txt"
        codes.write_text("\n".join(f"bench{i:05d}" for i in range(counts.tags)))
        figures.update(asyncio.run(busy_hour(counts, cloud, devices, subscriber, web_port, codes,
                                             counts.tags // STATIONS)))
        figures["rss_mb_busy"] = agent.rss_mb()
        figures["rss_mb_tree_busy"], figures["rss_mb_children_busy"] = agent.tree_pss_mb()
        figures["db_mb"] = db_mb(data_dir)
        cloud.close()
        cloud = None
        print(f"busy hour: {figures['busy_s']} s, {figures['rss_mb_busy']} MB", file=sys.stderr)

        # 4. The outage, and the cloud coming back.
        figures.update(outage(counts, cloud_broker, subscriber, http, web_port, codes, data_dir))
        figures["rss_mb_drained"] = agent.rss_mb()
        figures["agent_exit_code"] = agent.stop()
        agent = None
        print(f"drain: {figures['outbox_drain_eps']} events/s", file=sys.stderr)

        # 5. The next morning: the same database after the day.
        agent = AgentProcess(config_path, workdir, "restart")
        figures["ready_s_restart"] = round(agent.wait_ready(), 2)
        agent.stop()
        agent = None
        http.close()
    finally:
        if agent is not None:
            print(agent.log_tail(), file=sys.stderr)
            agent.stop()
        if cloud is not None:
            cloud.close()
        for helper in helpers:
            helper.stop()
        stop_processes(procs)
        local.stop()
        cloud_broker.stop()
        if keep:
            print(f"kept {workdir} (agent logs: agent-*.log)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 tags and a fifth of the busy hour and backlog")
    parser.add_argument("--profile", action="store_true", help="run the busy-hour agent under cProfile")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (agent logs, database)")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    started = time.monotonic()
    figures = run(counts, args.profile, args.keep)
    # The reference, on the same machine in the same run: bench.relay's throughput for as many events.
    reference = relay.measure(counts.backlog, 0.0, raw=False)
    figures["relay_eps"] = reference["throughput_eps"]
    drain = figures.get("outbox_drain_eps")
    figures["drain_vs_relay"] = round(drain / reference["throughput_eps"], 3) if drain else None
    figures["targets"] = {
        "ready_s_warm": figures["ready_s_warm"] <= 5,
        "ready_s_restart": figures["ready_s_restart"] <= 5,
        "rss_mb_busy": figures["rss_mb_busy"] <= 200,
        "rss_mb_tree_busy": figures["rss_mb_tree_busy"] <= 200,
        "drain_vs_relay": figures["drain_vs_relay"] is not None and figures["drain_vs_relay"] >= 0.8,
    }
    figures["counts"] = {**asdict(counts), "stations": STATIONS, "compartments": len(BANKS) * 16, "kiosks": KIOSKS,
                         "mqtt_devices": DEVICES}
    figures["quick"] = args.quick
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
