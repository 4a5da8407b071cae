"""Web UI benchmark: the dashboard and device list under a full store, the live stream's fan-out, the route walk.

python -m bench.ui [--quick]

The agent runs in this process (the route walk needs its FastAPI app) with a database of 10,000 tags
(most paired, some silent for hours, a tag-update backlog), 200 compartments on 14 Kerong boards over two
RS485 buses (the lock-board emulator in a process of its own, on paced ptys), 20 kiosks, 30 Wi-Fi devices on
a real in-store Mosquitto and a real cloud Mosquitto. Accounts of every role sign in over HTTP.

- dashboard_p95_ms: p95 of GET /api/dashboard and GET /api/devices/tags?limit=100 (the device list), from
  sending the request to the whole answer read, two signed-in clients at once; `requests` of them in all
  (the device list alone: devices_list_p95_ms, and dashboard_only_p95_ms);
- sse_clients_ok: of 50 clients on GET /api/live, how many received every device change within 1 s of it
  (`sse_rounds` changes, alternately a Wi-Fi device going online or offline through the in-store broker,
  timed from its publication, and a compartment disabled or enabled through the technician's API, timed
  from sending the request);
- unauthorized_routes: routes reachable without the right session (tests/support/route_walk.py); 0 is good.

The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._agent import running
from bench._ui_data import BOARDS_PER_BUS, BUSES, Devices, agent_config, seed_database
from bench._ui_sse import SseClient
from edge_agent.runtime import Agent
from edge_agent.services.web_users import Role
from tests.support.broker import Broker
from tests.support.route_walk import unauthorized_routes

ROOT = Path(__file__).resolve().parent.parent
KEY = "ab" * 32
PASSWORD = "bench ui password 1234"
TAGS = 10_000
COMPARTMENTS = 200
KIOSKS = 20
DEVICES = 30
SSE_CLIENTS = 50
DEVICE_LIST = "/api/devices/tags?limit=100"


def p95(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1)


async def sign_in(base_url: str, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base_url, timeout=30)
    answer = await client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    answer.raise_for_status()
    client.headers["X-CSRF-Token"] = answer.json()["csrf"]
    return client


async def measure_requests(base_url: str, requests: int) -> dict[str, Any]:
    """Two technicians' browsers at once, alternating the dashboard and the first page of the tag list."""
    timings: dict[str, list[float]] = {"/api/dashboard": [], DEVICE_LIST: []}
    statuses: dict[str, set[int]] = {"/api/dashboard": set(), DEVICE_LIST: set()}
    clients = [await sign_in(base_url, "bench-tech"), await sign_in(base_url, "bench-tech")]

    async def browse(client: httpx.AsyncClient, n: int) -> None:
        for i in range(n):
            path = "/api/dashboard" if i % 2 == 0 else DEVICE_LIST
            started = time.perf_counter()
            answer = await client.get(path)
            await answer.aread()
            statuses[path].add(answer.status_code)
            if answer.status_code == 200:
                timings[path].append((time.perf_counter() - started) * 1000)

    try:
        for client in clients:  # warm: first connections, first reads of the pages' caches
            await client.get("/api/dashboard")
            await client.get(DEVICE_LIST)
        await asyncio.gather(*(browse(c, requests // len(clients)) for c in clients))
    finally:
        for client in clients:
            await client.aclose()
    list_ok = bool(timings[DEVICE_LIST])
    both = timings["/api/dashboard"] + timings[DEVICE_LIST]
    return {
        "dashboard_p95_ms": p95(both),
        "dashboard_p50_ms": round(statistics.median(both), 1) if both else None,
        "dashboard_only_p95_ms": p95(timings["/api/dashboard"]),
        "devices_list_p95_ms": p95(timings[DEVICE_LIST]),
        "devices_list_status": sorted(statuses[DEVICE_LIST]),
        "requests": len(both),
        "note": None if list_ok else f"{DEVICE_LIST} answered {sorted(statuses[DEVICE_LIST])}: dashboard only",
    }


async def reference(base_url: str, agent: Agent, n: int) -> dict[str, Any]:
    """The same machine's floor: GET /healthz (no session, two small queries) over HTTP, and the snapshot
    computed in-process without HTTP."""
    took: list[float] = []
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(n):
            started = time.perf_counter()
            await client.get("/healthz")
            took.append((time.perf_counter() - started) * 1000)
    assert agent.live_hub is not None
    computed: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        agent.live_hub.health.snapshot()
        computed.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)
    return {"healthz_p95_ms": p95(took), "snapshot_compute_p95_ms": p95(computed)}


async def measure_sse(
    base_url: str, cookies: httpx.Cookies, devices: Devices, technician: httpx.AsyncClient, rounds: int
) -> dict[str, Any]:
    """Changes alternate: a Wi-Fi device going online or offline through the in-store broker, and a
    compartment taken out of service or put back through the technician's API."""
    clients = [SseClient(base_url, cookies) for _ in range(SSE_CLIENTS)]
    for c in clients:
        c.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in clients)), 30)
        opened = sum(1 for c in clients if c.status == 200 and c.error is None)
        ok = {id(c) for c in clients if c.status == 200}
        latencies: list[float] = []
        kinds: list[str] = []
        for r in range(rounds):
            await asyncio.sleep(0.6)  # apart from the last change, and at a random phase of the hub's poll
            sent = time.monotonic()
            if r % 2 == 0:
                online = r % 4 == 0
                await asyncio.to_thread(devices.availability, "bench-probe", online)
                expect: tuple[str, str, object] = ("bench-probe", "online", online)
            else:
                enabled = r % 4 == 3
                action = "enable" if enabled else "disable"
                answer = await technician.post(f"/api/devices/lockers/compartments/A-01/{action}",
                                               json={"reason": "bench.ui"})
                if answer.status_code != 200:
                    raise RuntimeError(f"compartment {action} answered {answer.status_code}: {answer.text}")
                expect = ("A-01", "enabled", enabled)
            kinds.append(expect[0])
            deadline = sent + 3.0
            while time.monotonic() < deadline and not all(c.first(*expect, sent) for c in clients):
                await asyncio.sleep(0.02)
            for c in clients:
                at = c.first(*expect, sent)
                if at is None or at - sent > 1.0:
                    ok.discard(id(c))
                if at is not None:
                    latencies.append((at - sent) * 1000)
        return {
            "sse_clients_ok": len(ok),
            "sse_clients": SSE_CLIENTS,
            "sse_clients_opened": opened,
            "sse_rounds": rounds,
            "sse_changes": sorted(set(kinds)),
            "sse_latency_p95_ms": p95(latencies),
            "sse_latency_max_ms": round(max(latencies), 1) if latencies else None,
        }
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def run(quick: bool) -> dict[str, Any]:
    requests = 400 if quick else 4000
    rounds = 2 if quick else 8
    workdir = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    cloud = Broker(workdir / "cloud", persistence=False)
    local = Broker(workdir / "local", persistence=False)
    cloud.start()
    local.start()
    devices = Devices(local)
    locks: subprocess.Popen[bytes] | None = None
    try:
        seed_database(workdir / "data", TAGS)
        for i in range(DEVICES):
            devices.announce(f"scanner-{i:02d}", online=i % 5 != 0)
        devices.announce("bench-probe", online=False)
        locks = subprocess.Popen(
            [sys.executable, "-m", "bench._lock_emulator_proc", str(workdir), ",".join(BUSES), str(BOARDS_PER_BUS)],
            stdout=subprocess.PIPE, cwd=ROOT,
        )
        assert locks.stdout is not None
        if b"ready" not in await asyncio.to_thread(locks.stdout.readline):
            raise RuntimeError("lock-board emulator did not start")
        config = agent_config(workdir, cloud, local, compartments=COMPARTMENTS, kiosks=KIOSKS)
        agent = Agent(config, env={"EDGE_AGENT_STORE_HMAC_KEY": KEY})
        async with running(agent):
            assert agent.users is not None and agent.lockers is not None and agent.gateway is not None
            base_url = f"http://127.0.0.1:{agent.web_port}"
            accounts = {"staff": "bench-staff", "technician": "bench-tech", "admin": "bench-admin"}
            for role, username in accounts.items():
                await agent.users.add(username, PASSWORD, Role(role))
            # Every board answered and every device was heard before measuring.
            lockers, gateway = agent.lockers, agent.gateway
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                any(r is None for r in lockers.board_readings().values()) or len(gateway.registry.all()) < DEVICES + 1
            ):
                await asyncio.sleep(0.1)
            figures = await measure_requests(base_url, requests)
            figures.update(await reference(base_url, agent, requests // 4))
            staff = await sign_in(base_url, "bench-staff")
            technician = await sign_in(base_url, "bench-tech")
            try:
                figures.update(await measure_sse(base_url, staff.cookies, devices, technician, rounds))
            finally:
                await staff.aclose()
                await technician.aclose()
            assert agent.web_app is not None
            walk = await asyncio.to_thread(
                unauthorized_routes, base_url, agent.web_app, {r: (u, PASSWORD) for r, u in accounts.items()}
            )
            figures["unauthorized_routes"] = len(walk)
            figures["unauthorized_sample"] = walk[:5]
            async with httpx.AsyncClient(base_url=base_url) as anonymous:
                health = (await anonymous.get("/healthz")).json()
            figures["outbox_depth_at_end"] = health["outbox"]["depth"]
    finally:
        if locks is not None and locks.poll() is None:
            locks.terminate()
            try:
                locks.wait(10)
            except subprocess.TimeoutExpired:
                locks.kill()
        devices.stop()
        local.stop()
        cloud.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update({"tags": TAGS, "compartments": COMPARTMENTS, "kiosks": KIOSKS, "mqtt_devices": DEVICES + 1,
                    "quick": quick})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="400 requests and 2 live changes instead of 4,000 and 8")
    args = parser.parse_args()
    started = time.monotonic()
    figures = asyncio.run(run(args.quick))
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
