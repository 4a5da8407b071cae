"""Issue 14.6: the agent as its own process under a shifted wall clock (Debian's libfaketime), restarted
as a store box would be: first on the right time, then a year behind (booted without a real-time clock),
then a month ahead (a wrong NTP server), then right again.

What used to happen, and must not: a sign-in lockout read 3,600 s and stayed there; a pickup created while
the clock was behind got a default hold a year in the past; on the clock run ahead every held order expired
within a second of the start and stayed expired, and a correct pickup.create was refused as "already past".

libfaketime fakes the monotonic clock of the process too (its option not to does not work with Python's
sleeps), consistently within a run; the agent's steady clock is carried across runs by the agent itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config
from tests.support.agent_process import wait_http, write_config
from tests.support.broker import Broker, free_port
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.subscriber import CloudSubscriber

COMMANDS = "retail/v1/store-0001/commands"
KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
PASSWORD = "correct horse battery staple"
DAY_MS = 86_400_000


def faketime_env(offset: str) -> dict[str, str]:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: scripts/test installs it (apt-get install libfaketime)"
    return {"LD_PRELOAD": found[0], "FAKETIME": offset}


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AgentRun:
    """One run of the agent as a process, with the environment given (the shifted clock)."""

    def __init__(self, config_path: Path, port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config_path)],
                env={**os.environ, **KEY_ENV, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            )
        wait_http(port, timeout=30)

    def wrong_sign_in(self) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.port}/api/auth/login",
                          json={"username": "tech", "password": "not the password"}, timeout=10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


def create(subscriber: CloudSubscriber, order_id: str, *, hold_until: int | None = None,
           ts: int | None = None) -> dict[str, Any]:
    """pickup.create through the cloud broker; returns its command.result."""
    cid = f"c-{uuid.uuid4()}"
    body: dict[str, Any] = {"command_id": cid, "type": "pickup.create", "payload": {"order_id": order_id, "size": "M"}}
    if hold_until is not None:
        body["payload"]["hold_until"] = iso(hold_until)
    if ts is not None:
        body["ts"] = iso(ts)
    subscriber.publish(COMMANDS, json.dumps(body))
    results = subscriber.wait_for(lambda msgs: any(cid in m.payload.decode() for m in msgs
                                                  if m.topic.endswith("/commands/result")), timeout=20)
    found = [m.json() for m in results if m.topic.endswith("/commands/result") and cid in m.payload.decode()]
    return found[0]["payload"]  # type: ignore[no-any-return]


def clock_alarms(subscriber: CloudSubscriber) -> list[str]:
    return [e["payload"]["state"] for e in subscriber.events() if e["type"] == "alarm.clock"]


def wait_clock(subscriber: CloudSubscriber, state: str, count: int = 1) -> None:
    subscriber.wait_for(lambda _: clock_alarms(subscriber).count(state) >= count, timeout=20)


async def test_the_agent_under_a_clock_a_year_behind_then_a_month_ahead(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber
) -> None:
    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    port = free_port()
    config = agent_config(
        tmp_path / "data", cloud_broker, agent={"log_level": "INFO"}, web={"port": port, "https": False},
        lockers=one_board(pty, compartment("A-01", 1)),
    )
    path = write_config(config, tmp_path / "agent.toml")
    (tmp_path / "data").mkdir()
    added = subprocess.run(
        [sys.executable, "-m", "edge_agent", "user", "add", "tech", "--role", "technician", "--password-stdin",
         "--config", str(path)], input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False,
    )
    assert added.returncode == 0, added.stderr
    log = tmp_path / "agent.log"
    async with emulator.running(PtyPort(pty)):
        # Run 1, the right time: a web client locked out (60 s), an order held for two hours.
        run = await asyncio.to_thread(AgentRun, path, port, log)
        try:
            answers = [await asyncio.to_thread(run.wrong_sign_in) for _ in range(5)]
            assert answers[-1].status_code == 429, [a.status_code for a in answers]
            two_hours = now_ms() + 2 * 3600 * 1000
            held = await asyncio.to_thread(create, subscriber, "o-held", hold_until=two_hours, ts=now_ms())
            assert held["status"] == "ok", held
        finally:
            await asyncio.to_thread(run.stop)

        # Run 2, a year behind (restarted without a real-time clock, NTP not answered yet).
        run = await asyncio.to_thread(AgentRun, path, port, log, faketime_env("-365d"))
        try:
            await asyncio.to_thread(wait_clock, subscriber, "behind")
            health = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=10)).json()
            assert health["status"] == "degraded" and health["clock"]["state"] == "behind", health
            assert any(p.startswith("wall clock behind") for p in health["problems"]), health
            locked = await asyncio.to_thread(run.wrong_sign_in)
            assert locked.status_code == 429
            # The lockout runs on: not the 3,600 s clamp it used to read for a clock set back.
            assert 0 < int(locked.headers["Retry-After"]) <= 60, locked.headers
            # No hold_until: lockers.hold_days (7) from now.
            default = await asyncio.to_thread(create, subscriber, "o-default")
            assert default["status"] == "ok", default
            hold = dt.datetime.fromisoformat(default["result"]["hold_until"].replace("Z", "+00:00"))
            # Counted from the agent's best estimate of the time, not from a year ago.
            assert abs(hold.timestamp() * 1000 - (now_ms() + 7 * DAY_MS)) < DAY_MS, default
        finally:
            await asyncio.to_thread(run.stop)

        # Run 3, a month ahead.
        run = await asyncio.to_thread(AgentRun, path, port, log, faketime_env("+30d"))
        try:
            await asyncio.to_thread(wait_clock, subscriber, "unconfirmed")
            await asyncio.sleep(2.0)  # the expiry clock has ticked (it runs once the lock bus is up, then every 30 s)
            # A correct order with the cloud's time: taken (not "already past"), and the cloud's time says ahead.
            ahead = await asyncio.to_thread(create, subscriber, "o-ahead", hold_until=now_ms() + DAY_MS, ts=now_ms())
            assert ahead["status"] == "ok", ahead
            await asyncio.to_thread(wait_clock, subscriber, "ahead")
            await asyncio.sleep(1.0)
        finally:
            await asyncio.to_thread(run.stop)

        # Run 4, the right time again: trusted, and nothing expired on the wrong clocks.
        run = await asyncio.to_thread(AgentRun, path, port, log)
        try:
            await asyncio.to_thread(wait_clock, subscriber, "ok")
            await asyncio.sleep(2.0)
            health = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz", timeout=10)).json()
            assert health["clock"]["state"] == "ok" and not health["problems"], health
        finally:
            await asyncio.to_thread(run.stop)
    expired = [e for e in subscriber.events() if e["type"] == "pickup.expired"]
    assert expired == [], expired
    conn = sqlite3.connect(tmp_path / "data" / "agent.db")
    states = dict(conn.execute("SELECT order_id, state FROM pickups").fetchall())
    conn.close()
    assert states == {"o-held": "created", "o-default": "created", "o-ahead": "created"}, states
    assert clock_alarms(subscriber) == ["behind", "unconfirmed", "ahead", "ok"], clock_alarms(subscriber)
    assert subscriber.assert_contract() > 0
