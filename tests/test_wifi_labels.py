"""Wi-Fi labels end to end: LabelService with only the MQTT label station, a real Mosquitto, and the simulated
labels: check-in and registration, pixel-exact pictures confirmed by hash, deltas, wrong hashes retried,
garbage counted, retained pictures cleared, sleeping labels and a broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.labels.render import LabelContent, render_label
from devices.labels.render_pool import RenderPool
from devices.labels.updates import LabelService, LabelSettings
from devices.labels.wifi import (
    PICTURE_HEADER,
    LabelMessageError,
    MqttLabelStation,
    PictureMessage,
    PictureMessageError,
    add_wifi_labels,
    parse_checkin,
    parse_label_topic,
    parse_result,
)
from devices.simulators.wifi_labels import WifiLabelSimulator, wifi_label_mix
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.storage import Database
from edge_agent.wiring.labels import connect_catalog, product_to_content
from firmware_bridge.picture import Encoding, encode_picture, picture_hash
from firmware_bridge.tag_types import TAG_TYPES_BY_NAME, tag_type
from mqtt_io.driver import Endpoint
from tests.conftest import wait_until
from tests.support.broker import Broker

PREFIX = "store/v1"
BASE_URL = "https://shop.example/store-0001"
LOCALE = "zh_CN"


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: dict[str, dict[str, Any]] = {}

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        self.states[device_id] = state

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]


@dataclass
class Rig:
    db: Database
    catalog: ProductCatalog
    labels: LabelService
    station: MqttLabelStation
    sim: WifiLabelSimulator
    events: RecordingEvents
    tags: list[str] = field(default_factory=list)

    def expected_raw(self, tag_id: str) -> bytes:
        rec = self.labels.registry.get(tag_id)
        assert rec is not None and rec.sku is not None
        product = self.catalog.get(rec.sku)
        assert product is not None
        return render_label(
            product_to_content(product, LOCALE), tag_type(rec.type_code), rotation=rec.rotation,
            scan_url=self.labels.settings.scan_url(rec.scan_code),
        ).raw

    def job(self, tag_id: str) -> tuple[str, int] | None:
        row = self.db.read(lambda c: c.execute("SELECT state, attempts FROM tag_jobs WHERE tag_id = ?",
                                               (tag_id,)).fetchone())
        return None if row is None else (str(row[0]), int(row[1]))

    def updated(self, tag_id: str) -> list[dict[str, Any]]:
        return [p for p in self.events.of("tag.updated") if p["tag_id"] == tag_id]

    async def pair_all(self, price: str = "12.80") -> None:
        await self.catalog.upsert([product(i, price) for i in range(len(self.tags))])
        await self.catalog.pair_tags([(t, f"sku-{i:03d}") for i, t in enumerate(self.tags)])


def product(i: int, price: str) -> Product:
    names = ["有机纯牛奶 250ml", "Bio Vollmilch 1 L", "Jasmine rice 5 kg", "农夫山泉 550ml", "Croissant", "苹果"]
    return Product(sku=f"sku-{i:03d}", name=names[i % len(names)], price=Decimal(price), currency="CNY",
                   unit_price=Decimal(price), unit_label="500 g", origin="中国")


@contextlib.asynccontextmanager
async def wifi_rig(tmp_path: Path, broker: Broker, n: int = 4, *, sleeping: int = 0) -> AsyncIterator[Rig]:
    db = Database(tmp_path / "data")
    catalog = ProductCatalog(db)
    renderer = RenderPool(1)
    events = RecordingEvents()

    def content(sku: str) -> LabelContent | None:
        p = catalog.get(sku)
        return None if p is None else product_to_content(p, LOCALE)

    labels = LabelService(db, content=content, events=events, renderer=renderer,
                          settings=LabelSettings(public_base_url=BASE_URL))
    endpoint = Endpoint(host=broker.host, port=broker.port, client_id="edge-agent-test-labels", keepalive=10)
    station = add_wifi_labels(labels, endpoint, topic_prefix=PREFIX)
    station.backoff_min, station.backoff_max = 0.2, 1.0
    connect_catalog(labels, catalog)
    # A long check-in interval: the labels report at boot, the tests decide when else.
    sim = WifiLabelSimulator(broker.host, broker.port, wifi_label_mix(n, seed=7), prefix=PREFIX,
                             checkin_interval=600.0, seed=7)
    for tag in sim.tags[:sleeping]:
        sim.sleep(tag)
    task = asyncio.create_task(labels.run(), name="labels-under-test")
    try:
        await wait_until(lambda: station.connected, timeout=10)
        await asyncio.to_thread(sim.start)
        rig = Rig(db, catalog, labels, station, sim, events, sorted(t.hex() for t in sim.tags))
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await asyncio.to_thread(sim.stop)
        renderer.close()
        db.close()


class Spy:
    """An independent client on the in-store broker that records what arrives on a topic filter."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"spy-{time.monotonic_ns()}",
                                  protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "spy did not subscribe"

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def pictures(self, tag_id: str) -> list[PictureMessage]:
        with self._lock:
            return [PictureMessage.from_bytes(p) for t, p, _ in self.messages if t.split("/")[-2] == tag_id and p]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}", protocol=paho.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def retained_pictures(broker: Broker, wait: float = 1.0) -> dict[str, bytes]:
    """The pictures the broker holds retained, as a newly subscribing label would get them."""
    spy = Spy(broker, f"{PREFIX}/labels/+/picture")
    time.sleep(wait)
    spy.stop()
    return {t.split("/")[-2]: p for t, p, retain in spy.messages if retain and p}


# -- codec and parsers ----------------------------------------------------------------------------------


def test_picture_header_byte_by_byte() -> None:
    msg = PictureMessage(0x1234, Encoding.DELTA_ZLIB, 0x00012345, bytes(range(1, 9)), bytes(range(9, 17)), b"\xaa\xbb")
    data = msg.to_bytes()
    assert PICTURE_HEADER.size == 27
    assert data == (
        b"ESL1" + b"\x34\x12" + b"\x02" + b"\x45\x23\x01\x00" + bytes(range(1, 9)) + bytes(range(9, 17)) + b"\xaa\xbb"
    )
    assert PictureMessage.from_bytes(data) == msg
    full = PictureMessage(7, Encoding.ZLIB, 10, b"\x01" * 8, None, b"x")
    assert full.to_bytes()[19:27] == bytes(8)  # no base: zeros
    assert PictureMessage.from_bytes(full.to_bytes()) == full
    # The example in docs/mqtt-devices.md section 4.3.
    example = PictureMessage(7, Encoding.ZLIB, 9472, bytes.fromhex("9c1e5b0a77d2f341"), None, b"\x78\x9c")
    assert example.to_bytes().hex(" ") == (
        "45 53 4c 31 07 00 01 00 25 00 00 9c 1e 5b 0a 77 d2 f3 41 00 00 00 00 00 00 00 00 78 9c"
    )
    for bad in (b"", b"ESL1", b"XSL1" + data[4:], data[:4] + b"\x00\x00" + data[6:], data[:6] + b"\x07" + data[7:],
                full.to_bytes()[:19] + b"\x01" * 8 + b"x", data[:19] + bytes(8) + b"x"):
        with pytest.raises(PictureMessageError):
            PictureMessage.from_bytes(bad)


def test_label_message_parsers_are_strict() -> None:
    tag = bytes.fromhex("571f000000000001")
    assert parse_label_topic(PREFIX, f"{PREFIX}/labels/571f000000000001/checkin") == (tag, "checkin")
    for topic in (f"{PREFIX}/labels/571F000000000001/checkin", f"{PREFIX}/labels/571f/checkin",
                  f"{PREFIX}/labels/571f000000000001/picture", f"{PREFIX}/devices/571f000000000001/checkin",
                  "other/labels/571f000000000001/checkin"):
        with pytest.raises(LabelMessageError):
            parse_label_topic(PREFIX, topic)
    good = {"type": "2.9-bwr", "battery_mv": 2900, "temperature_c": 21.5, "rssi": -60, "lqi": 200, "fw": 513,
            "hash": None}
    checkin = parse_checkin(tag, good)
    assert (checkin.type_code, checkin.temperature_dc, checkin.hash) == (TAG_TYPES_BY_NAME["2.9-bwr"].code, 215,
                                                                         bytes(8))
    for change in ({"type": "3.0-bwr"}, {"type": 3}, {"battery_mv": True}, {"battery_mv": 70000}, {"rssi": -200},
                   {"temperature_c": "21"}, {"hash": "xyz"}, {"hash": "ABCDEF0123456789"}, {"fw": 1.5}):
        with pytest.raises(LabelMessageError):
            parse_checkin(tag, {**good, **change})
    with pytest.raises(LabelMessageError):
        parse_checkin(tag, {k: v for k, v in good.items() if k != "lqi"})
    assert parse_result({"xfer": 3, "hash": "00112233445566aa"}).hash == bytes.fromhex("00112233445566aa")
    assert parse_result({"xfer": 3, "error": "base_unknown"}).error == "base_unknown"
    for body in ({"xfer": 3}, {"xfer": 0, "hash": "00112233445566aa"}, {"xfer": "3", "error": "busy"},
                 {"xfer": 3, "error": "melted"}, {"xfer": 3, "hash": "00112233445566aa", "error": "busy"}):
        with pytest.raises(LabelMessageError):
            parse_result(body)


# -- end to end ------------------------------------------------------------------------------------------


async def test_labels_check_in_and_pairing_shows_exact_pictures(tmp_path: Path, local_broker: Broker) -> None:
    async with wifi_rig(tmp_path, local_broker, 5) as rig:
        labels, sim = rig.labels, rig.sim
        await wait_until(lambda: len(labels.registry.all()) == 5, timeout=15)
        for rec in labels.registry.all():
            tag = bytes.fromhex(rec.tag_id)
            assert rec.base_station == "wifi"
            assert rec.type_code == sim.tag_type(tag).code
            assert rec.current_hash == sim.hash(tag).hex()
        await wait_until(lambda: len(rig.events.of("tag.discovered")) == 5, timeout=5)
        assert {e["tag_id"] for e in rig.events.of("tag.discovered")} == set(rig.tags)
        assert sorted(t.hex() for t, _, _ in await rig.station.sync()) == rig.tags

        await rig.pair_all()
        await wait_until(lambda: labels.progress()["confirmed"] == 5, timeout=60)
        for t in rig.tags:
            raw = sim.picture(bytes.fromhex(t))
            assert raw == rig.expected_raw(t), f"label {t} shows another picture"
            rec = labels.registry.get(t)
            assert rec is not None and rec.current_hash == picture_hash(raw).hex()
            [event] = rig.updated(t)
            assert event["hash"] == rec.current_hash and event["attempts"] == 1
        assert rig.station.stats.transfers_done == 5 and rig.station.bad_messages == 0


async def test_a_price_change_travels_as_a_delta(tmp_path: Path, local_broker: Broker) -> None:
    spy = await asyncio.to_thread(Spy, local_broker, f"{PREFIX}/labels/+/picture")
    try:
        async with wifi_rig(tmp_path, local_broker, 3) as rig:
            labels, sim = rig.labels, rig.sim
            await wait_until(lambda: len(labels.registry.all()) == 3, timeout=15)
            await rig.pair_all()
            await wait_until(lambda: labels.progress()["confirmed"] == 3, timeout=60)
            first = rig.tags[0]
            [full] = spy.pictures(first)
            assert full.encoding == Encoding.ZLIB and full.base_hash is None
            old_hash = sim.hash(bytes.fromhex(first))

            await rig.catalog.upsert([product(0, "9.90")])
            await wait_until(lambda: len(rig.updated(first)) == 2, timeout=60)
            await wait_until(lambda: len(spy.pictures(first)) == 2, timeout=5)
            delta = spy.pictures(first)[-1]
            assert delta.encoding == Encoding.DELTA_ZLIB
            assert delta.base_hash == old_hash
            raw = sim.picture(bytes.fromhex(first))
            assert raw == rig.expected_raw(first)
            assert delta.hash == picture_hash(raw) and delta.raw_len == len(raw)
            assert len(delta.data) < len(raw) * 0.15
            assert rig.updated(first)[-1]["bytes"] == PICTURE_HEADER.size + len(delta.data)
            # The other labels were not touched.
            assert all(len(rig.updated(t)) == 1 for t in rig.tags[1:])
    finally:
        await asyncio.to_thread(spy.stop)


async def test_a_wrong_hash_is_not_confirmed_and_the_job_retries(tmp_path: Path, local_broker: Broker) -> None:
    async with wifi_rig(tmp_path, local_broker, 2) as rig:
        labels, sim, station = rig.labels, rig.sim, rig.station
        await wait_until(lambda: len(labels.registry.all()) == 2, timeout=15)
        liar = rig.tags[0]
        sim.misreport_hash(bytes.fromhex(liar))
        await rig.pair_all()
        await wait_until(lambda: station.stats.reasons.get("wrong_hash") == 1, timeout=30)
        await wait_until(lambda: rig.job(liar) == ("queued", 1), timeout=5)
        assert rig.updated(liar) == []
        assert labels.stats.retried >= 1
        # The retry (after its backoff) brings the confirmation, with the label's true hash.
        await wait_until(lambda: rig.job(liar) == ("confirmed", 2), timeout=30)
        [event] = rig.updated(liar)
        assert event["attempts"] == 2
        assert event["hash"] == sim.hash(bytes.fromhex(liar)).hex() == picture_hash(rig.expected_raw(liar)).hex()
        assert sim.picture(bytes.fromhex(liar)) == rig.expected_raw(liar)
        await wait_until(lambda: rig.job(rig.tags[1]) == ("confirmed", 1), timeout=30)


async def test_garbage_on_label_topics_is_counted_not_fatal(tmp_path: Path, local_broker: Broker) -> None:
    # Left retained at the broker by a misbehaving label: delivered (flagged retained) when the agent subscribes.
    for channel, payload in (("button", b'{"button": 1}'), ("result", b'{"xfer": 1, "error": "busy"}')):
        await asyncio.to_thread(publish_retained, local_broker, f"{PREFIX}/labels/571f00000000beef/{channel}", payload)
    async with wifi_rig(tmp_path, local_broker, 2) as rig:
        labels, sim, station = rig.labels, rig.sim, rig.station
        await wait_until(lambda: len(labels.registry.all()) == 2, timeout=15)
        await wait_until(lambda: station.stats.retained_ignored == 2, timeout=10)
        tag_id = rig.tags[0]
        good_checkin = b'{"type": "2.9-bwr", "battery_mv": 2900, "temperature_c": 21, "rssi": -60, "lqi": 9, "fw": 1}'
        garbage: list[tuple[str, str, bytes, str]] = [
            (tag_id, "checkin", b"\xff{not json", "malformed_json"),
            (tag_id, "checkin", b"[1, 2, 3]", "not_object"),
            (tag_id, "checkin", b'{"battery_mv": NaN}', "malformed_json"),
            (tag_id, "checkin", good_checkin.replace(b"2.9-bwr", b"9.9-rgb"), "unknown_tag_type"),
            (tag_id, "checkin", good_checkin.replace(b"2900", b"true"), "bad_field"),
            (tag_id, "checkin", good_checkin, "bad_field"),  # no "hash"
            (tag_id, "checkin", b" " * 5000, "too_large"),
            (tag_id, "result", b'{"xfer": 4242, "hash": "00112233445566aa"}', "unknown_xfer"),
            (tag_id, "result", b'{"xfer": 1}', "bad_field"),
            (tag_id, "button", b'{"button": "one"}', "bad_field"),
            (tag_id, "button", b"", "malformed_json"),
            ("NOT-A-TAG", "button", b'{"button": 1}', "bad_tag_id"),
            (tag_id.upper(), "result", b"{}", "bad_tag_id"),
        ]
        for t, channel, payload, _ in garbage:
            await asyncio.to_thread(sim.send_raw, t, channel, payload)
        await wait_until(lambda: station.bad_messages == len(garbage), timeout=10)
        expected: dict[str, int] = {}
        for *_, reason in garbage:
            expected[reason] = expected.get(reason, 0) + 1
        assert station.stats.bad_reasons == expected
        # The retained result and button press waiting at the broker were ignored, not counted as bad.
        assert station.stats.retained_ignored == 2
        assert station.connected and station.stats.connects == 1
        # Still fully working: a button press, an LED flash, a picture.
        await asyncio.to_thread(sim.press_button, bytes.fromhex(tag_id), 2)
        await wait_until(lambda: rig.events.of("tag.button") == [{"tag_id": tag_id, "button": 2}], timeout=10)
        assert await labels.flash(tag_id, colour=1, count=3, period_ms=250) == 0
        await wait_until(lambda: len(sim.leds(bytes.fromhex(tag_id))) == 1, timeout=10)
        led = sim.leds(bytes.fromhex(tag_id))[0]
        assert (led.colour, led.count, led.period_ms) == (1, 3, 250)
        await rig.pair_all()
        await wait_until(lambda: labels.progress()["confirmed"] == 2, timeout=60)
        assert station.bad_messages == len(garbage)


async def test_the_retained_picture_is_cleared_after_the_result(tmp_path: Path, local_broker: Broker) -> None:
    async with wifi_rig(tmp_path, local_broker, 3, sleeping=1) as rig:
        labels, sim, station = rig.labels, rig.sim, rig.station
        sleeper = sim.tags[0]
        await wait_until(lambda: len(labels.registry.all()) == 2, timeout=15)
        # The sleeping label is known from an earlier check-in (it registered, then went to sleep).
        sim.wake(sleeper)
        await wait_until(lambda: len(labels.registry.all()) == 3, timeout=15)
        sim.sleep(sleeper)
        await asyncio.sleep(0.3)
        await rig.pair_all()
        awake = [t for t in rig.tags if t != sleeper.hex()]
        await wait_until(lambda: all(rig.job(t) == ("confirmed", 1) for t in awake), timeout=60)
        await wait_until(lambda: station.stats.pictures_cleared == 2, timeout=10)
        # The broker holds the sleeper's picture (it acknowledged the publish) ...
        await wait_until(lambda: (t := station.open_transfer(sleeper)) is not None and t.stored.done(), timeout=10)
        # ... retained: only the sleeper's picture waits at the broker; the others were cleared.
        held = await asyncio.to_thread(retained_pictures, local_broker)
        assert list(held) == [sleeper.hex()]
        assert PictureMessage.from_bytes(held[sleeper.hex()]).hash == picture_hash(rig.expected_raw(sleeper.hex()))
        assert rig.job(sleeper.hex()) == ("sending", 1)
        # It wakes, gets the retained picture, shows it, and the agent clears it.
        sim.wake(sleeper)
        await wait_until(lambda: rig.job(sleeper.hex()) == ("confirmed", 1), timeout=30)
        assert sim.picture(sleeper) == rig.expected_raw(sleeper.hex())
        await wait_until(lambda: station.stats.pictures_cleared == 3, timeout=10)
        assert await asyncio.to_thread(retained_pictures, local_broker) == {}
        # The labels saw the empty retained messages and ignored them.
        await wait_until(lambda: sim.counters().cleared_seen >= 3, timeout=5)
        assert station.transfers_in_flight == 0 and station.open_transfer(sleeper) is None


async def test_a_broker_restart_loses_no_picture(tmp_path: Path, local_broker: Broker) -> None:
    async with wifi_rig(tmp_path, local_broker, 2, sleeping=0) as rig:
        labels, sim, station = rig.labels, rig.sim, rig.station
        await wait_until(lambda: len(labels.registry.all()) == 2, timeout=15)
        sleeper = bytes.fromhex(rig.tags[0])
        sim.sleep(sleeper)
        await asyncio.sleep(0.3)
        await rig.pair_all()
        await wait_until(lambda: rig.job(rig.tags[1]) == ("confirmed", 1), timeout=60)
        token = station.sync_token
        # The broker keeps nothing across this restart (no persistence): the agent publishes the picture again.
        await asyncio.to_thread(local_broker.restart)
        await wait_until(lambda: station.connected and station.sync_token != token, timeout=20)
        assert station.stats.reconnects == 1
        await asyncio.sleep(0.5)
        await asyncio.to_thread(sim.wake, sleeper)
        await wait_until(lambda: rig.job(rig.tags[0]) == ("confirmed", 1), timeout=30)
        assert sim.picture(sleeper) == rig.expected_raw(rig.tags[0])


async def test_push_to_a_label_not_seen_measures_the_picture(tmp_path: Path, local_broker: Broker) -> None:
    """A label that has not checked in since start still gets a well-formed header (raw_len measured)."""
    async with wifi_rig(tmp_path, local_broker, 1, sleeping=1) as rig:
        tag = rig.sim.tags[0]
        raw = bytes(rig.sim.tag_type(tag).raw_bytes - 1) + b"\x01"
        enc = encode_picture(raw)
        transfer = rig.station.push(tag, encoding=int(enc.kind), data=enc.data, picture_hash=enc.hash)
        await asyncio.wait_for(asyncio.shield(transfer.stored), 10)
        rig.sim.wake(tag)
        outcome = await asyncio.wait_for(asyncio.shield(transfer.done), 10)
        assert outcome.ok and outcome.shown_hash == enc.hash
        assert rig.sim.picture(tag) == raw
        bad = rig.station.push(tag, encoding=int(Encoding.ZLIB), data=b"not zlib at all", picture_hash=bytes(8))
        # The tag is now known, so the header carries its raw length and the label refuses the data.
        outcome = await asyncio.wait_for(asyncio.shield(bad.done), 10)
        assert not outcome.ok and outcome.reason == "bad_encoding"
