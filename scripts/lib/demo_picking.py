"""Demo: pick-to-light on the emulated shelf tags, step by step.

Once the first tags show their prices, the stand-in cloud sends a pick list (`pick.start`, as the retailer's
cloud would) for a picker with a handheld scanner: its products' tags light green and show a pick page. Then a
few seconds apart: the first line is confirmed by pressing the tag's button (the emulator's control socket),
the second by the picker's handheld scanning the product's barcode on the in-store broker. Each tag goes dark
and shows its price again; `pick.completed` reaches the cloud. A second list (blue, one line) then stays open
for the web UI's picking board, where staff confirm it. What the script prints comes from what the emulated
tags report (its state directory: pictures and LED commands per tag), not from what was asked.

Usage: python scripts/lib/demo_picking.py CLOUD_PORT STORE_PORT STORE_ID TAGS SEED STATE_DIR CONTROL_SOCKET WEB_URL
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from demo_seed import NAMES, ean13  # scripts/lib, this script's folder, is first on sys.path
from paho.mqtt.enums import CallbackAPIVersion

from cloud_link.events import format_ts, now_ms
from firmware_bridge.emulators.base_station import mixed

PICKER = "demo-picker-1"  # the handheld's device id is its picker id: its scans confirm its own list first
STEP_S = 5.0


_T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[picking] {time.monotonic() - _T0:5.1f}s {text}", flush=True)


def tag_states(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The emulator's view of its tags (written a few times a second): tag id -> hash, LED commands, pictures."""
    try:
        doc = json.loads((state_dir / "tags.json").read_text())
    except (OSError, ValueError):
        return {}
    return {t["tag"]: t for t in doc.get("tags", [])}


def shown(state_dir: Path, tag: str) -> str | None:
    """The hash of the picture a tag shows, None when the state file cannot be read this moment."""
    return tag_states(state_dir).get(tag, {}).get("hash")


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def control(path: str, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        return sock.makefile().readline().strip()


class Cloud:
    """The stand-in cloud's pick commands, with their results."""

    def __init__(self, port: int, store: str) -> None:
        self.topic = f"retail/v1/{store}/commands"
        self.results: dict[str, dict[str, Any]] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-cloud-picking")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(f"retail/v1/{store}/commands/result", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        payload = json.loads(msg.payload).get("payload", {})
        self.results[payload.get("command_id", "")] = payload

    def send(self, command_type: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        cid = f"demo-{uuid.uuid4()}"
        body = json.dumps({"command_id": cid, "type": command_type, "ts": format_ts(now_ms()), "payload": payload})
        self.client.publish(self.topic, body, qos=1).wait_for_publish(10)
        wait_for(lambda: cid in self.results, 30)
        return self.results.get(cid)


class Handheld:
    """The picker's handheld scanner on the in-store broker (bound to no kiosk: a staff scanner)."""

    def __init__(self, port: int) -> None:
        self.base = f"store/v1/devices/{PICKER}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{PICKER}")
        self.client.will_set(f"{self.base}/availability", "offline", qos=1, retain=True)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        announce = {"kind": "scanner", "model": "HS-2", "fw": "1.4.2", "capabilities": ["scan"]}
        self._pub("announce", json.dumps(announce), retain=True)
        self._pub("availability", "online", retain=True)

    def _pub(self, channel: str, body: str, *, retain: bool = False) -> None:
        self.client.publish(f"{self.base}/{channel}", body, qos=1, retain=retain).wait_for_publish(10)

    def scan(self, code: str) -> None:
        self._pub("event", json.dumps({"kind": "scan", "data": {"code": code, "symbology": "ean13"}}))


def name(i: int) -> str:
    return NAMES[i % len(NAMES)][0]


def main() -> int:
    cloud_port, store_port, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    count, seed, state_dir, ctl, web = int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]), sys.argv[7], sys.argv[8]
    tags = sorted(spec.tag.hex() for spec in mixed(count, seed))  # tag i shows product demo-i (demo_seed.py)
    picks = [0, 1, 2]
    # Start once the tags of the pick list show their first (price) picture.
    if not wait_for(lambda: all(tag_states(state_dir).get(tags[i], {}).get("pictures_shown") for i in picks), 180):
        say("the tags did not show their prices within 3 minutes; no pick list")
        return 1
    time.sleep(2)
    before = tag_states(state_dir)
    price = {i: before[tags[i]]["hash"] for i in picks}
    flashes = {i: before[tags[i]]["led_flashes"] for i in picks}
    handheld = Handheld(store_port)
    cloud = Cloud(cloud_port, store)
    lines = [(0, 2, "SO-1001"), (1, 1, "SO-1001")]
    say(f"the cloud sends pick list DEMO-1 for picker {PICKER} (green): "
        + ", ".join(f"{q} x {name(i)} for {o}" for i, q, o in lines))  # fmt: skip
    result = cloud.send("pick.start", {
        "list_id": "DEMO-1", "picker": PICKER, "colour": "green", "order_ids": ["SO-1001"],
        "lines": [{"order_id": o, "sku": f"demo-{i:04d}", "quantity": q} for i, q, o in lines],
    })  # fmt: skip
    say(f"pick.start answered: {json.dumps((result or {}).get('result', result), ensure_ascii=False)}")
    # Print each tag's light and pick page as the emulator reports them (the LED at the tag's next check-in,
    # or at once once its zone listens; the page as soon as the radio carries it).
    pending = {(i, what) for i, _, _ in lines for what in ("led", "page")}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        states = tag_states(state_dir)
        for i, q, o in lines:
            state = states.get(tags[i], {})
            if (i, "led") in pending and state.get("led_flashes", 0) > flashes[i]:
                pending.discard((i, "led"))
                say(f"tag {tags[i]} ({name(i)}): LED flashing green")
            if (i, "page") in pending and state.get("hash", price[i]) != price[i]:
                pending.discard((i, "page"))
                say(f"tag {tags[i]} ({name(i)}): shows its pick page ({q} x, {o}, {PICKER})")
        time.sleep(0.2)
    for i, what in sorted(pending):
        say(f"tag {tags[i]} ({name(i)}): no {what} seen within 60 s")
    say(f"watch it live on the picking board: {web}/ui/picking (staff sign-in)")

    time.sleep(STEP_S)
    say(f"the picker presses the button on tag {tags[0]} ({name(0)}): line 1 taken")
    say(f"emulator: {control(ctl, f'button {tags[0]} 1')}")
    back = wait_for(lambda: shown(state_dir, tags[0]) == price[0], 30)
    say(f"tag {tags[0]}: {'back on its price page' if back else 'price page NOT back yet'}")

    time.sleep(STEP_S)
    say(f"the picker's handheld scans {name(1)} ({ean13(1)}): line 2 taken, list DEMO-1 complete")
    handheld.scan(ean13(1))
    back = wait_for(lambda: shown(state_dir, tags[1]) == price[1], 30)
    say(f"tag {tags[1]}: {'back on its price page' if back else 'price page NOT back yet'}")

    time.sleep(STEP_S)
    i = picks[2]
    say(f"the cloud sends pick list DEMO-2 for picker wang (blue): 3 x {name(i)} for SO-1002; it waits for you "
        f"on the picking board ({web}/ui/picking)")  # fmt: skip
    cloud.send("pick.start", {"list_id": "DEMO-2", "picker": "wang", "colour": "blue",
                              "lines": [{"order_id": "SO-1002", "sku": f"demo-{i:04d}", "quantity": 3}]})  # fmt: skip
    lit = wait_for(lambda: tag_states(state_dir).get(tags[i], {}).get("led_flashes", 0) > flashes[i], 30)
    say(f"tag {tags[i]} ({name(i)}): LED {'flashing blue' if lit else 'NOT lit'}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
