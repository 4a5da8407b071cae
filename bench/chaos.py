"""Chaos benchmark (issue 14): the in-store relay through crashes of the agent and an outage of the cloud.

    python -m bench.chaos [--quick]

On loopback, with brokers of its own: an in-store Mosquitto with the limits the product ships
(config/mosquitto/edge-agent.conf), a cloud Mosquitto with persistence, 20 Wi-Fi devices publishing QoS 1
events at 200 messages a second in total, every one with a unique `seq` and acknowledged by the store
broker, and a counting subscriber on the cloud broker with a persistent QoS 1 session that rides out the
broker's restart by itself (so the benchmark measures the agent, not its own subscriber). The agent runs as
its own process (`edge-agent run`, the in-store broker and the cloud only, web off).

The schedule, in fractions of the run (full: 120 s; --quick: 40 s): `kill -9` of the agent at 1/4 and
3/4, each restarted 5 s later; the cloud broker stopped at 1/2 for a sixth of the run. Then the devices
stop and the benchmark waits until everything arrived, or nothing more has for 30 s.

Figures (the last line printed is one JSON object):
- sent: messages the store broker acknowledged to the devices; received_unique: distinct `seq` at the cloud;
- lost (target 0): sent and never received, less those the store broker said it dropped
  (`alarm.broker_dropped`, counted in broker_dropped; with the shipped limits it should be 0 as well);
- duplicates: `seq` received more than once (a kill between a publish and its PUBACK: the same event sent
  again, deduplicated by `event_id`); duplicates_new_event_id: of those, the ones with another `event_id`
  (a device message stored twice; `msg_key` still tells them apart);
- drain_s: from the devices' last message to the last one at the cloud;
- reconnect_loops (target 0): in-store connections beyond one per run of the agent (a relay that drops
  its connection to slow the broker down), with relay_paused, the log lines saying it did;
- peak_rss_mb: the agent's largest resident set, sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._chaos_devices import run_counter, run_devices
from bench._procs import stop_processes
from edge_agent.config import parse_config
from tests.support.agent_process import write_config
from tests.support.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
STORE_LIMITS = ROOT / "config" / "mosquitto" / "edge-agent.conf"
DEVICES = 20
RATE = 200.0
RESTART_AFTER_S = 5.0
SETTLE_S = 30.0


def store_limits() -> tuple[str, ...]:
    lines = STORE_LIMITS.read_text().splitlines()
    return tuple(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


class AgentRuns:
    """The agent as a process, killed and started again; its log, its RSS sampled."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"=== run {self.runs + 1}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )
        self.runs += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None:
            stop_processes([self.proc])

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            except (OSError, ValueError):
                continue

    def reconnect_loops(self) -> tuple[int, int]:
        """In-store connections beyond the first of each run, and the 'relay paused' lines."""
        extra = paused = 0
        for run in self.log_path.read_text(errors="replace").split("=== run ")[1:]:
            extra += max(0, run.count("in-store broker connected") - 1)
            paused += run.count("in-store relay paused")
        return extra, paused


def measure(quick: bool) -> dict[str, Any]:
    seconds = 40.0 if quick else 120.0
    ctx = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    store = Broker(workdir / "store-broker", max_inflight=20, max_queued=150_000, extra=store_limits())
    cloud = Broker(workdir / "cloud-broker", persistence=True)
    store.start()
    cloud.start()
    counter_pipe, counter_child = ctx.Pipe()
    counter = ctx.Process(target=run_counter, args=(cloud.host, cloud.port, counter_child))
    devices_pipe, devices_child = ctx.Pipe()
    devices = ctx.Process(target=run_devices, args=(store.host, store.port, DEVICES, RATE, devices_child))
    config = parse_config({
        "agent": {"store_id": "chaos-store", "data_dir": str(workdir / "data"), "log_level": "INFO"},
        "web": {"enabled": False},
        "cloud": {"host": cloud.host, "port": cloud.port, "tls": {"enabled": False}, "backoff_min_s": 0.2,
                  "backoff_max_s": 1.0},
        "local_broker": {"host": store.host, "port": store.port, "adopt": "auto"},
    })
    agent = AgentRuns(write_config(config, workdir / "agent.toml"), workdir / "agent.log")
    try:
        counter.start()
        assert counter_pipe.recv() == "ready"
        agent.start()
        time.sleep(3.0)  # connected and subscribed: its session exists before the first device message
        devices.start()
        assert devices_pipe.recv() == "ready"
        started = time.monotonic()
        devices_pipe.send(seconds)
        schedule = [
            (seconds * 0.25, "kill"), (seconds * 0.25 + RESTART_AFTER_S, "start"),
            (seconds * 0.5, "cloud down"), (seconds * (0.5 + 1 / 6), "cloud up"),
            (seconds * 0.75, "kill"), (seconds * 0.75 + RESTART_AFTER_S, "start"),
        ]
        for at, action in schedule:
            time.sleep(max(0.0, started + at - time.monotonic()))
            print(f"{time.monotonic() - started:6.1f} s  {action}", file=sys.stderr)
            if action == "kill":
                agent.kill()
            elif action == "start":
                agent.start()
            elif action == "cloud down":
                cloud.stop()
            else:
                cloud.start()
        published = devices_pipe.recv()  # the devices' last message was acknowledged
        ended = time.monotonic()
        sent = published["sent"]
        last_count, last_change = -1, time.monotonic()
        while True:
            counter_pipe.send("count")
            got = counter_pipe.recv()
            if got["unique"] != last_count:
                last_count, last_change = got["unique"], time.monotonic()
            if got["unique"] + got["broker_dropped"] >= sent or time.monotonic() - last_change > SETTLE_S:
                break
            time.sleep(0.5)
        drain_s = max(0.0, time.monotonic() - got["idle_s"] - ended)
        loops, paused = agent.reconnect_loops()
    finally:
        agent.stop()
        if counter.is_alive():
            counter_pipe.send("stop")
            counter.join(10)
        devices.join(10)
        for broker in (store, cloud):
            broker.stop()
    lost = max(0, sent - got["unique"] - got["broker_dropped"])
    return {
        "sent": sent,
        "received_unique": got["unique"],
        "lost": lost,
        "duplicates": got["duplicates"],
        "duplicates_new_event_id": got["new_event_ids"],
        "broker_dropped": got["broker_dropped"],
        "drain_s": round(drain_s, 2),
        "reconnect_loops": loops,
        "relay_paused": paused,
        "peak_rss_mb": round(agent.peak_rss_kb / 1024.0, 1),
        "agent_runs": agent.runs,
        "seconds": seconds,
        "rate": RATE,
        "devices": DEVICES,
        "workdir": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 s of chaos instead of 120 s")
    args = parser.parse_args()
    result = measure(args.quick)
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
