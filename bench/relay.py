"""Relay benchmark: events from `publish()` to an independent subscriber on the cloud broker.

python -m bench.relay [--quick]

Phases, all against one real Mosquitto on loopback:
1. raw: a bare paho QoS 1 publisher (own process, own network thread, same in-flight window, same
   message size) sends N messages; `raw_paho_eps` is N over the time until the subscriber has them all.
2. throughput: the agent (in this process) with 64 concurrent producers publishing N events through the
   durable outbox (fsync'd group commits, QoS 1, PUBACK-driven deletion); `throughput_eps` is N over
   the time from the first publish() call to the subscriber receiving the last event.
3. latency: a steady 1,000 events/s for a few seconds; `p50_ms`/`p99_ms` are publish()-call to receipt.
Then `lost` (returned by publish() but never received), `duplicates` and `gaps` (missing seqs) over
all agent events, and the process's peak RSS. The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._cloud_subscriber import PhaseRecord, run_subscriber
from bench._raw_publisher import run_raw_publisher
from edge_agent.config import parse_config
from edge_agent.runtime import Agent
from tests.support.broker import Broker

PRODUCERS = 64
WINDOW = 100
RATE_EPS = 1000


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


async def run_agent_phases(
    broker: Broker, data_dir: Path, n_events: int, latency_s: float, sub: Any
) -> dict[str, Any]:
    config = parse_config(
        {
            "agent": {"store_id": "bench-store", "data_dir": str(data_dir), "log_level": "WARNING"},
            "web": {"enabled": False},
            "cloud": {"host": broker.host, "port": broker.port, "tls": {"enabled": False},
                      "inflight_window": WINDOW},
            "local_broker": {"enabled": False},
        }
    )
    agent = Agent(config)
    runner = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started.wait(), 20)
    assert agent.session is not None
    while not agent.session.connected:
        await asyncio.sleep(0.05)
    returned: dict[str, int] = {}

    # Phase 2: throughput.
    per_producer = n_events // PRODUCERS

    async def producer(k: int) -> None:
        for i in range(per_producer):
            ev = await agent.publish("scan.tag", {"phase": "thr", "t0": time.monotonic(), "p": k, "i": i})
            returned[ev.event_id] = ev.seq

    total = per_producer * PRODUCERS
    started = time.monotonic()
    await asyncio.gather(*(producer(k) for k in range(PRODUCERS)))
    produced_s = time.monotonic() - started
    sub.send(("wait", "thr", total, 120))
    thr: PhaseRecord = await asyncio.to_thread(sub.recv)
    throughput_s = (thr.last_recv or time.monotonic()) - started

    # Phase 3: latency at a steady rate. Each publish runs in its own task so that one slow commit
    # never delays the schedule (that would hide latency: coordinated omission).
    n_steady = int(RATE_EPS * latency_s)
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        ev = await agent.publish("scan.tag", {"phase": "lat", "t0": time.monotonic(), "i": i})
        returned[ev.event_id] = ev.seq

    t_start = time.monotonic()
    for i in range(n_steady):
        due = t_start + i / RATE_EPS
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    sub.send(("wait", "lat", n_steady, 60))
    lat: PhaseRecord = await asyncio.to_thread(sub.recv)
    commits = agent.db.writer.stats.commits if agent.db else 0
    agent.request_stop()
    await asyncio.wait_for(runner, 15)

    received_ids = thr.event_ids + lat.event_ids
    received_seqs = sorted(set(thr.seqs + lat.seqs))
    gaps = 0
    if received_seqs:
        gaps = (received_seqs[-1] - received_seqs[0] + 1) - len(received_seqs)
    return {
        "events": total + n_steady,
        "lost": len(set(returned) - set(received_ids)),
        "duplicates": len(received_ids) - len(set(received_ids)),
        "gaps": gaps,
        "throughput_eps": round(total / throughput_s, 1),
        "produce_eps": round(total / produced_s, 1),
        "p50_ms": round(percentile(lat.latencies_ms, 50), 2),
        "p99_ms": round(percentile(lat.latencies_ms, 99), 2),
        "max_ms": round(max(lat.latencies_ms, default=float("nan")), 2),
        "steady_rate_eps": RATE_EPS,
        "commits": commits,
    }


def run_raw(broker: Broker, sub: Any, count: int, pad: str) -> float:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_raw_publisher, args=(broker.host, broker.port, count, WINDOW, pad, child))
    proc.start()
    assert parent.recv() == "ready"
    started = time.monotonic()
    parent.send("go")
    sub.send(("wait", "raw", count, 120))
    rec: PhaseRecord = sub.recv()
    parent.recv()
    proc.join(10)
    elapsed = (rec.last_recv or time.monotonic()) - started
    return count / elapsed


def measure(n_events: int, latency_s: float, *, raw: bool = True) -> dict[str, Any]:
    """The figures of this benchmark on a Mosquitto of its own (bench.scale takes throughput_eps from here as
    its reference); `raw=False` leaves out the bare paho publisher (raw_paho_eps and ratio are then None)."""
    ctx = mp.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    broker = Broker(workdir / "broker", persistence=False)
    broker.start()
    sub_parent, sub_child = ctx.Pipe()
    subscriber = ctx.Process(target=run_subscriber, args=(broker.host, broker.port, sub_child))
    subscriber.start()
    raw_eps: float | None = None
    try:
        assert sub_parent.recv() == "ready"
        if raw:
            # The raw messages carry the same number of bytes as our events (envelope included).
            pad = "x" * 175
            raw_eps = run_raw(broker, sub_parent, n_events, pad)
            print(f"raw paho: {raw_eps:.0f} msg/s", file=sys.stderr)
        figures = asyncio.run(run_agent_phases(broker, workdir / "data", n_events, latency_s, sub_parent))
    finally:
        sub_parent.send(("stop",))
        subscriber.join(10)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "events": figures["events"],
        "lost": figures["lost"],
        "duplicates": figures["duplicates"],
        "gaps": figures["gaps"],
        "throughput_eps": figures["throughput_eps"],
        "raw_paho_eps": None if raw_eps is None else round(raw_eps, 1),
        "ratio": None if raw_eps is None else round(figures["throughput_eps"] / raw_eps, 3),
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "max_ms": figures["max_ms"],
        "steady_rate_eps": figures["steady_rate_eps"],
        "produce_eps": figures["produce_eps"],
        "group_commits": figures["commits"],
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    args = parser.parse_args()
    n_events = 20_000 if args.quick else 100_000
    latency_s = 5.0 if args.quick else 30.0
    mp.set_start_method("spawn")
    result = measure(n_events, latency_s)
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
