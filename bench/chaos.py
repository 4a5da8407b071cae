"""Chaos benchmark (issue 14): the in-store relay through crashes of the agent and an outage of the cloud.

    python -m bench.chaos [--quick] [--peer thingsboard-gateway]

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

--peer thingsboard-gateway: then the same schedule again (fresh brokers, devices and counter, a workdir of
its own) with ThingsBoard IoT Gateway 3.8.5 as the relay, killed and restarted as the agent is
(bench/_chaos_peer.py has the details):
- installed on first use into a virtualenv of its own, .venv-peers/thingsboard-gateway in the repository
  (`python -m venv`, `pip install thingsboard-gateway==3.8.5`; reused while it holds that version; never the
  project's dependencies); a failed installation ends the benchmark with the step that failed;
- configured in the run's workdir: its MQTT connector on the in-store broker with a persistent session
  (cleanSession false, a fixed clientId, QoS 1), a json converter naming the device after the topic's device
  id with the timeseries `seq` from `${data.seq}`; SQLite storage in the workdir; its uplink to the cloud
  Mosquitto with an access token, QoS 1; run as `thingsboard-gateway` with TB_GW_CONFIG_DIR, its log in
  peer.log;
- a stand-in for ThingsBoard on the cloud broker answers what the gateway asks on connecting (getSessionLimits
  over `v1/devices/me/rpc/request/<n>`, with no rate limits; it sends nothing upstream until answered);
- the counter counts `seq` in its telemetry (`v1/gateway/telemetry`, batched: {"devNN": [{"ts", "values"}]}).
Its figures come beside ours in the same JSON line: peer ("thingsboard-gateway 3.8.5"), peer_sent,
peer_received_unique, peer_lost, peer_duplicates, peer_drain_s, peer_peak_rss_mb (the gateway's process and
any it starts, summed; peer_processes says how many there were at most), peer_runs,
peer_session_limit_replies (the stand-in's answers), peer_workdir, and peer_lost_before_faults: of peer_lost,
those sent at least 1 s before the first kill, lost with no fault at all. Those are the gateway's data model,
not a fault: a message without a timestamp gets its conversion time in ms, its MQTT connector converts what
arrived while its reading thread slept (200 ms) within the same millisecond, and its uplink
(tb_device_mqtt._split_message) merges a device's entries of equal ts, the later `seq` replacing the earlier:
ThingsBoard keeps one value per key and ms. The rest falls around the kills: what it had acknowledged to the
store broker and not yet written to SQLite when killed, and more merging in the backlog's burst after a restart.
Its uplink reconnects after 5 s, then 10 s, ... (tb_client's default, not in tb_gateway.json): in this
schedule the second kill comes before it is back, and its restart sends what was stored during the outage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench import _chaos_peer as peer
from bench._chaos_devices import run_counter, run_devices
from bench._chaos_relay import RelayRuns
from edge_agent.config import parse_config
from tests.support.agent_process import write_config
from tests.support.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
STORE_LIMITS = ROOT / "config" / "mosquitto" / "edge-agent.conf"
DEVICES = 20
RATE = 200.0
RESTART_AFTER_S = 5.0
SETTLE_S = 30.0
PEERS = (peer.PEER,)

# A relay for one chaos run: given the store and cloud brokers, it sets the relay up (with whatever it needs
# beside it) and yields it, not yet started; on leaving, it stops all of it.
RelayFactory = Callable[[Broker, Broker, Path], AbstractContextManager[RelayRuns]]


def store_limits() -> tuple[str, ...]:
    lines = STORE_LIMITS.read_text().splitlines()
    return tuple(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


def reconnect_loops(log_path: Path) -> tuple[int, int]:
    """In the agent's log: in-store connections beyond the first of each run, and the 'relay paused' lines."""
    extra = paused = 0
    for run in log_path.read_text(errors="replace").split("=== run ")[1:]:
        extra += max(0, run.count("in-store broker connected") - 1)
        paused += run.count("in-store relay paused")
    return extra, paused


@contextlib.contextmanager
def agent_relay(store: Broker, cloud: Broker, workdir: Path) -> Iterator[RelayRuns]:
    config = parse_config({
        "agent": {"store_id": "chaos-store", "data_dir": str(workdir / "data"), "log_level": "INFO"},
        "web": {"enabled": False},
        "cloud": {"host": cloud.host, "port": cloud.port, "tls": {"enabled": False}, "backoff_min_s": 0.2,
                  "backoff_max_s": 1.0},
        "local_broker": {"host": store.host, "port": store.port, "adopt": "auto"},
    })
    config_path = write_config(config, workdir / "agent.toml")
    agent = RelayRuns([sys.executable, "-m", "edge_agent", "run", "--config", str(config_path)],
                      workdir / "agent.log", cwd=ROOT)
    try:
        yield agent
    finally:
        agent.stop()


def gateway_relay(bin_dir: Path, standin_answers: dict[str, int]) -> RelayFactory:
    """ThingsBoard IoT Gateway with the stand-in for ThingsBoard beside it (bench/_chaos_peer.py)."""

    @contextlib.contextmanager
    def relay(store: Broker, cloud: Broker, workdir: Path) -> Iterator[RelayRuns]:
        ctx = mp.get_context("spawn")
        standin_pipe, standin_child = ctx.Pipe()
        standin = ctx.Process(target=peer.run_standin, args=(cloud.host, cloud.port, standin_child), daemon=True)
        files = peer.write_gateway_config(workdir / "gateway", bin_dir, (store.host, store.port),
                                          (cloud.host, cloud.port))
        gateway = RelayRuns(files.command, workdir / "peer.log", cwd=files.folder, env=files.env, whole_tree=True,
                            ready_log=(f'"{peer.CONNECTOR}" subscription success to topic store/v1/devices/+/event',
                                       "Gateway started."))
        try:
            # Answering before the gateway asks: it sends nothing upstream until getSessionLimits is answered.
            standin.start()
            if not standin_pipe.poll(15) or standin_pipe.recv() != "ready":
                raise RuntimeError("the stand-in for ThingsBoard did not subscribe within 15 s")
            yield gateway
        finally:
            gateway.stop()
            if standin.is_alive():
                standin_pipe.send("stop")
                if standin_pipe.poll(10):
                    standin_answers.update(standin_pipe.recv())
                standin.join(10)
            if standin.is_alive():
                standin.kill()

    return relay


def chaos_run(seconds: float, workdir: Path, make_relay: RelayFactory) -> tuple[dict[str, Any], RelayRuns]:
    """One run of the schedule with fresh brokers, devices and counter; the figures common to every relay."""
    ctx = mp.get_context("spawn")
    store = Broker(workdir / "store-broker", max_inflight=20, max_queued=150_000, extra=store_limits())
    cloud = Broker(workdir / "cloud-broker", persistence=True)
    store.start()
    cloud.start()
    counter_pipe, counter_child = ctx.Pipe()
    counter = ctx.Process(target=run_counter, args=(cloud.host, cloud.port, counter_child))
    devices_pipe, devices_child = ctx.Pipe()
    devices = ctx.Process(target=run_devices, args=(store.host, store.port, DEVICES, RATE, devices_child))
    try:
        with make_relay(store, cloud, workdir) as relay:
            counter.start()
            assert counter_pipe.recv() == "ready"
            relay.start()
            relay.wait_ready()  # connected and subscribed: its session exists before the first device message
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
                    relay.kill()
                elif action == "start":
                    relay.start()
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
            counter_pipe.send("seen")
            seen = set(counter_pipe.recv()["seen"])
    finally:
        if counter.is_alive():
            counter_pipe.send("stop")
            counter.join(10)
        if devices.pid is not None:  # started: it ends by itself once its messages are acknowledged
            devices.join(10)
        for proc in (counter, devices):
            if proc.is_alive():  # a run that failed half-way
                proc.kill()
                proc.join(5)
        for broker in (store, cloud):
            broker.stop()
    return {
        "sent": sent,
        "received_unique": got["unique"],
        "lost": max(0, sent - got["unique"] - got["broker_dropped"]),
        "duplicates": got["duplicates"],
        "duplicates_new_event_id": got["new_event_ids"],
        "broker_dropped": got["broker_dropped"],
        "drain_s": round(drain_s, 2),
        "peak_rss_mb": round(relay.peak_rss_kb / 1024.0, 1),
        # Sent at least 1 s before the first kill (seq N leaves at N / RATE s): lost with no fault at all.
        "lost_before_faults": sum(1 for seq in range(int(RATE * (seconds * 0.25 - 1.0))) if seq not in seen),
    }, relay


def measure(quick: bool) -> dict[str, Any]:
    seconds = 40.0 if quick else 120.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    figures, agent = chaos_run(seconds, workdir, agent_relay)
    figures.pop("lost_before_faults")  # the peer's: ours is all in lost, target 0; our figures stay as they were
    loops, paused = reconnect_loops(agent.log_path)
    return {
        **figures,
        "reconnect_loops": loops,
        "relay_paused": paused,
        "agent_runs": agent.runs,
        "seconds": seconds,
        "rate": RATE,
        "devices": DEVICES,
        "workdir": str(workdir),
    }


def measure_peer(quick: bool, bin_dir: Path) -> dict[str, Any]:
    """The same schedule with ThingsBoard IoT Gateway as the relay: its figures, named peer_*."""
    seconds = 40.0 if quick else 120.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-chaos-peer-"))
    answers: dict[str, int] = {}
    figures, gateway = chaos_run(seconds, workdir, gateway_relay(bin_dir, answers))
    errors = peer.gateway_errors(gateway.log_path.read_text(errors="replace"))
    if errors:
        print(f"peer: ERROR lines in {gateway.log_path}: {json.dumps(errors)}", file=sys.stderr)
    figures.pop("duplicates_new_event_id")  # no event_id in the gateway's telemetry
    figures.pop("broker_dropped")  # the gateway reports no drops of the store broker
    return {
        "peer": peer.LABEL,
        **{f"peer_{name}": value for name, value in figures.items()},
        "peer_runs": gateway.runs,
        "peer_processes": gateway.peak_processes,
        "peer_session_limit_replies": answers.get("getSessionLimits", 0),
        "peer_workdir": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 s of chaos instead of 120 s")
    parser.add_argument("--peer", choices=PEERS, help="run the same schedule again with this relay instead of ours")
    args = parser.parse_args()
    bin_dir = None
    if args.peer:
        try:  # before our run: a failed installation should not cost the whole run first
            bin_dir = peer.ensure_installed(ROOT)
        except peer.PeerInstallError as exc:
            sys.exit(f"bench.chaos --peer {args.peer}: could not install the peer: {exc}")
    result = measure(args.quick)
    if bin_dir is not None:
        result.update(measure_peer(args.quick, bin_dir))
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
