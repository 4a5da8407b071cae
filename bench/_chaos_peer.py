"""The chaos benchmark's peer relay: ThingsBoard IoT Gateway 3.8.5 (`python -m bench.chaos --peer thingsboard-gateway`).

Installation: a virtualenv of its own at `.venv-peers/thingsboard-gateway` (next to the project's `.venv`,
ignored by git), made with `python -m venv` and `pip install thingsboard-gateway==3.8.5` the first time and
reused while it holds that version: the gateway's dependencies (its own paho fork, grpcio, ...) never meet
the project's.

Configuration (written into the run's workdir; the gateway reads the folder named by TB_GW_CONFIG_DIR,
which is how its `thingsboard-gateway` console script takes its config path):
- tb_gateway.json: the uplink ("thingsboard") to the cloud Mosquitto with an access token, QoS 1;
  storage `sqlite` in the workdir; remote configuration, remote shell, statistics and gRPC off (there is no
  ThingsBoard server to drive them, and they are not part of relaying);
- mqtt.json: one MQTT connector on the in-store broker with a persistent session (MQTT 3.1.1,
  cleanSession false, a fixed clientId), subscribed QoS 1 to `store/v1/devices/+/event`; its json
  converter names the device after the topic's device id and maps `${data.seq}` to the integer
  timeseries `seq`;
- logs.json: the package's own, its files redirected into the workdir (TB_GW_LOGS_PATH); everything also
  goes to stdout, which the benchmark keeps in peer.log.

The stand-in for ThingsBoard: a plain Mosquitto does not answer what the gateway asks on connecting. Its
MQTT client (tb-mqtt-client) publishes `{"method": "getSessionLimits", ...}` to
`v1/devices/me/rpc/request/<n>` and sends no telemetry until a reply arrives on
`v1/devices/me/rpc/response/<n>`: `TBClient.is_connected()` is false until `rate_limits_received`, and a
getSessionLimits call has no timeout. `run_standin` answers it with generous limits (no rate limits,
100 in flight, 64 KiB payloads), and answers attribute requests (`v1/devices/me/attributes/request/<n>`)
with no attributes. It keeps a persistent session and reconnects every second by itself, so the cloud
broker's restart costs it nothing. On a plain broker the gateway also gets its own request back (it subscribes
to the request topic for server-side RPC): once connected before, it takes it for one, logs `Connector
"getSessionLimits" not found` and answers itself with an error, which it also receives; whichever answer comes
first is taken, and either lets it proceed (an error means the defaults: no rate limits for 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

PEER = "thingsboard-gateway"
VERSION = "3.8.5"
LABEL = f"{PEER} {VERSION}"
ACCESS_TOKEN = "chaos-gateway-token"  # Mosquitto allows anonymous clients; TB takes the token as the username
CONNECTOR = "store-broker"
RPC_REQUEST = "v1/devices/me/rpc/request/"
RPC_RESPONSE = "v1/devices/me/rpc/response/"
ATTRIBUTES_REQUEST = "v1/devices/me/attributes/request/"
ATTRIBUTES_RESPONSE = "v1/devices/me/attributes/response/"
# What ThingsBoard answers to getSessionLimits (tb_device_mqtt.on_service_configuration and its gateway
# override read these keys). Empty rate limits mean none: the gateway then queues up to 50,000 messages.
SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""},
    "gatewayRateLimits": {"messages": "", "telemetryMessages": "", "telemetryDataPoints": ""},
}
# The gateway reads these bare names from its environment and lets them override its config
# (TBUtility.get_service_environmental_variables): never pass ours through.
GATEWAY_ENV_OVERRIDES = frozenset({
    "host", "port", "type", "accessToken", "caCert", "privateKey", "cert", "clientId", "username", "password",
    "proxy_host", "proxy_port",
})


class PeerInstallError(RuntimeError):
    """The peer's virtualenv could not be made or the package not installed into it."""


def peer_venv(root: Path) -> Path:
    return root / ".venv-peers" / PEER


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('thingsboard-gateway'))"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def _run_step(what: str, command: list[str], timeout_s: float) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerInstallError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PeerInstallError(f"{what} failed (exit status {done.returncode}):\n{tail}")


def ensure_installed(root: Path) -> Path:
    """The peer's virtualenv with thingsboard-gateway==3.8.5 in it, made on first use; its `bin` folder."""
    venv = peer_venv(root)
    python = venv / "bin" / "python"
    found = _installed_version(python)
    if found == VERSION:
        print(f"peer: reusing {venv} ({LABEL})", file=sys.stderr)
        return venv / "bin"
    if not python.exists():
        print(f"peer: creating the virtualenv {venv}", file=sys.stderr)
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run_step(f"python -m venv {venv}", [sys.executable, "-m", "venv", str(venv)], 300)
    print(f"peer: pip install {PEER}=={VERSION} into {venv} (found: {found or 'none'}); a minute or two",
          file=sys.stderr)
    _run_step(f"pip install {PEER}=={VERSION} into {venv}",
              [str(python), "-m", "pip", "install", "--disable-pip-version-check", f"{PEER}=={VERSION}"], 1800)
    found = _installed_version(python)
    if found != VERSION:
        raise PeerInstallError(f"pip install {PEER}=={VERSION} into {venv} left version {found!r} behind")
    print(f"peer: installed {LABEL}", file=sys.stderr)
    return venv / "bin"


def _package_logs_config(bin_dir: Path) -> dict[str, Any]:
    """The logging config the package ships (config/logs.json), read from the peer's virtualenv."""
    found = sorted(bin_dir.parent.glob("lib/python*/site-packages/thingsboard_gateway/config/logs.json"))
    if not found:
        raise PeerInstallError(f"thingsboard_gateway/config/logs.json not found under {bin_dir.parent}")
    config: dict[str, Any] = json.loads(found[0].read_text())
    return config


@dataclass(frozen=True)
class GatewayFiles:
    """A gateway's folders in the run's workdir and how to start it."""

    folder: Path
    command: list[str]
    env: dict[str, str]


def write_gateway_config(folder: Path, bin_dir: Path, store: tuple[str, int], cloud: tuple[str, int]) -> GatewayFiles:
    config_dir = folder / "config"
    logs_dir = folder / "logs"
    for path in (config_dir, logs_dir, folder / "storage"):
        path.mkdir(parents=True, exist_ok=True)
    gateway = {
        "thingsboard": {
            "host": cloud[0],
            "port": cloud[1],
            "remoteShell": False,
            "remoteConfiguration": False,
            "latencyDebugMode": False,
            "statistics": {"enable": False, "enableCustom": False, "statsSendPeriodInSeconds": 60},
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": 8196,
            "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60,
            "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": ACCESS_TOKEN},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        # SQLite storage (storage/sqlite/storage_settings.py): data_file_path is a folder, ending in "/".
        "storage": {
            "type": "sqlite",
            "data_file_path": f"{folder / 'storage'}/",
            "messages_ttl_check_in_hours": 1,
            "messages_ttl_in_days": 7,
            "max_read_records_count": 1000,
        },
        "grpc": {"enabled": False},
        "connectors": [{"type": "mqtt", "name": CONNECTOR, "configuration": "mqtt.json"}],
    }
    connector = {
        "broker": {
            "host": store[0],
            "port": store[1],
            "clientId": "chaos-tb-gateway",
            # MQTT 3.1.1 with cleanSession false: the store broker keeps what the devices publish while the
            # gateway is down, as it does for the agent's persistent session.
            "version": 4,
            "cleanSession": False,
            "keepAlive": 30,
            "maxMessageNumberPerWorker": 10,
            "maxNumberOfWorkers": 100,
            "security": {"type": "anonymous"},
        },
        "mapping": [{
            "topicFilter": "store/v1/devices/+/event",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    # The device id between the fixed levels of the topic (Utils.get_value_from_topic: the
                    # last group of the first match).
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": r"store/v1/devices/([^/]+)/event",
                    "deviceProfileExpressionSource": "constant",
                    "deviceProfileExpression": "default",
                },
                "sendDataOnlyOnChange": False,
                "timeout": 60000,
                "attributes": [],
                "timeseries": [{"type": "integer", "key": "seq", "value": "${data.seq}"}],
            },
        }],
        "requestsMapping": {},
    }
    (config_dir / "tb_gateway.json").write_text(json.dumps(gateway, indent=2))
    (config_dir / "mqtt.json").write_text(json.dumps(connector, indent=2))
    (config_dir / "logs.json").write_text(json.dumps(_package_logs_config(bin_dir), indent=2))
    env = {key: value for key, value in os.environ.items()
           if key not in GATEWAY_ENV_OVERRIDES and not key.startswith("TB_GW_")}
    env.update({
        "TB_GW_CONFIG_DIR": f"{config_dir}/",
        "TB_GW_LOGS_PATH": str(logs_dir),
        "PYTHONUNBUFFERED": "1",  # its log lines reach peer.log as they happen (the benchmark waits on them)
    })
    # The console script runs thingsboard_gateway.tb_gateway:daemon, which reads TB_GW_CONFIG_DIR.
    return GatewayFiles(folder=folder, command=[str(bin_dir / "thingsboard-gateway")], env=env)


def gateway_errors(log_text: str) -> dict[str, int]:
    """ERROR and EXCEPTION lines of the gateway's log, counted by their message with numbers blanked."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        if "|ERROR|" in line or "|EXCEPTION|" in line:
            message = re.sub(r"\d+", "N", line.split(" - ")[-1].strip())[:120]
            counts[message] = counts.get(message, 0) + 1
    return counts


def run_standin(host: str, port: int, conn: Connection) -> None:
    """Answer the gateway's getSessionLimits calls and attribute requests, as ThingsBoard would."""
    lock = threading.Lock()
    answered = {"getSessionLimits": 0, "attributes": 0, "other_rpc": 0}
    subscribed = threading.Event()

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Never raise out of a paho callback: the network thread would die with it.
        try:
            if msg.topic.startswith(RPC_REQUEST):
                request = json.loads(msg.payload)
                if request.get("method") != "getSessionLimits":
                    # No other client-side RPC is made by the gateway's core; counted, left unanswered.
                    with lock:
                        answered["other_rpc"] += 1
                    return
                client.publish(RPC_RESPONSE + msg.topic[len(RPC_REQUEST):], json.dumps(SESSION_LIMITS), qos=1)
                with lock:
                    answered["getSessionLimits"] += 1
            elif msg.topic.startswith(ATTRIBUTES_REQUEST):
                client.publish(ATTRIBUTES_RESPONSE + msg.topic[len(ATTRIBUTES_REQUEST):], "{}", qos=1)
                with lock:
                    answered["attributes"] += 1
        except (ValueError, AttributeError):
            return

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="chaos-tb-standin", protocol=paho.MQTTv311,
                         clean_session=False)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe([(RPC_REQUEST + "+", 1), (ATTRIBUTES_REQUEST + "+", 1)])
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(host, port, keepalive=10)
    client.loop_start()
    subscribed.wait(10)
    conn.send("ready")
    while conn.recv() != "stop":
        with lock:
            conn.send(dict(answered))
    with lock:
        conn.send(dict(answered))
    client.loop_stop()
    client.disconnect()

