"""`edge-agent cloud-watch`: print what arrives on the cloud broker, one line per message.

For the demo and for technicians checking a store's uplink with the cloud's own broker credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def add_parsers(sub: Any) -> None:
    watch = sub.add_parser("cloud-watch", help="print what arrives on a (cloud) MQTT broker")
    watch.add_argument("--host", default="127.0.0.1")
    watch.add_argument("--port", type=int, default=1883)
    watch.add_argument("--topic", default="retail/#")
    watch.add_argument("--ca-file", default=None, help="use TLS with this CA bundle")
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace) -> int:
    return run_cloud_watch(args.host, args.port, args.topic, args.ca_file)


def describe(topic: str, payload: bytes) -> str:
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{topic}  <{len(payload)} bytes, not JSON>"
    if not isinstance(doc, dict):
        return f"{topic}  {doc!r}"
    if "seq" in doc and "type" in doc:
        body = json.dumps(doc.get("payload"), ensure_ascii=False)
        return f"event seq={doc['seq']} {doc['type']:<18} {body[:100]}"
    if "status" in doc and "boot" in doc and "agent_version" in doc:
        return f"status {doc['status']} (boot {doc['boot']}{', ' + doc['reason'] if doc.get('reason') else ''})"
    if "device_id" in doc and "state" in doc:
        return f"state  {doc['device_id']} rev={doc['rev']} {json.dumps(doc['state'], ensure_ascii=False)[:100]}"
    return f"{topic}  {json.dumps(doc, ensure_ascii=False)[:120]}"


def run_cloud_watch(host: str, port: int, topic: str, ca_file: str | None = None) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
    if ca_file:
        client.tls_set(ca_certs=ca_file)

    def on_connect(c: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            print(f"[cloud] {describe(msg.topic, bytes(msg.payload))}", flush=True)
        except Exception as exc:  # a printing problem must not kill the watcher
            print(f"[cloud] cannot show a message on {msg.topic}: {exc}", file=sys.stderr, flush=True)

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"cannot reach {host}:{port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    client.disconnect()
    client.loop_stop()
    return 0
