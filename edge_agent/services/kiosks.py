"""Touch kiosks (issue 5): the configured kiosks, which of them are online, and their live updates.

- Registry: the kiosks of `[[kiosks]]`, by id. Everything else about a kiosk (its pages) is in the web layer.
- Online: a kiosk is online while its page holds at least one live-update stream (`/kiosk/{id}/api/live`,
  SSE), or sent a heartbeat within `heartbeat_s`. Changes go to the cloud as device state `kiosk-{id}`
  through the device-state path (latest only per device, so a flapping kiosk costs one row, not a stream of
  events). A reconnect within `grace_s` is not reported: a page reload is not an outage.
- Live updates: a catalog change reaches every open stream as `price` (the product) or `removed` (its sku);
  a scan (serial scanner, MQTT handheld, or the page's own keyboard wedge) reaches that kiosk's streams as
  `scan`. Each stream has a bounded queue: a page that stops reading loses its oldest updates and is told
  to `reload` (it then reads the catalog afresh), so a stuck browser never holds the agent's memory.
- Scans: `resolve_code` understands EAN-13 / UPC-A (check digit verified) and other catalog barcodes, and
  our own scan links `{public_base_url}/s/{code}` (the tag's product). `scanned` records `scan.kiosk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud_link.events import now_ms
from cloud_link.ports import StateSink
from devices.labels.registry import TagRegistry
from edge_agent.services.catalog import BARCODE_RE, Product, ProductCatalog, gtin_check_digit_ok

log = logging.getLogger(__name__)

KIOSK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Device ids on the contract are at most 64 characters: "kiosk-" + id must fit.
KIOSK_ID_MAX = 58
SCAN_SOURCES = ("wedge", "serial", "mqtt")
MAX_CODE = 512
STREAM_QUEUE = 256
MAX_STREAMS_PER_KIOSK = 8
SCAN_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class KioskSpec:
    id: str
    name: str
    lang: str = "zh-CN"  # zh-CN | en
    orientation: str = "portrait"  # portrait | landscape


@dataclass(frozen=True)
class LiveEvent:
    """One update for open kiosk pages; the web layer renders it (a product in the kiosk's language)."""

    kind: str  # price | removed | scan | message | reload
    product: Product | None = None
    data: dict[str, Any] = field(default_factory=dict)


class LiveStream:
    """One open page's queue of updates. Bounded: on overflow the oldest are dropped and `reload` is sent."""

    def __init__(self, kiosk_id: str, maxsize: int = STREAM_QUEUE) -> None:
        self.kiosk_id = kiosk_id
        self._items: deque[LiveEvent] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.overflowed = 0
        self.closed = False

    def close(self) -> None:
        """The agent is stopping: the page's stream ends (its EventSource reconnects to the next agent)."""
        self.closed = True
        self._ready.set()

    def put(self, event: LiveEvent) -> None:
        if len(self._items) >= self._maxsize:
            # The page missed updates: whatever it shows may be stale, so it reloads everything.
            self._items.clear()
            self._items.append(LiveEvent("reload"))
            self.overflowed += 1
        else:
            self._items.append(event)
        self._ready.set()

    async def get(self, timeout: float) -> LiveEvent | None:
        """The next update, or None after `timeout` seconds without one (time for a keep-alive ping)."""
        if not self._items and not self.closed:  # a closed stream must not wait (the agent is stopping)
            self._ready.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a cancellation that arrives as the
            # event is set (CPython gh-86296), and a lost one would keep a closed page's stream alive.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        return self._items.popleft() if self._items else None


@dataclass
class _Presence:
    streams: int = 0
    last_beat: float = float("-inf")  # monotonic
    last_seen_ms: int | None = None
    reported: bool | None = None  # what the cloud was last told
    since_ms: int | None = None


class KioskHub:
    def __init__(
        self,
        catalog: ProductCatalog,
        tags: TagRegistry,
        events: StateSink,
        kiosks: Sequence[KioskSpec],
        *,
        public_base_url: str,
        heartbeat_s: float = 45.0,
        grace_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._tags = tags
        self._events = events
        self._kiosks = {k.id: k for k in kiosks}
        self._scan_prefix = public_base_url.rstrip("/") + "/s/"
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self._clock = clock
        self._streams: dict[str, list[LiveStream]] = {k.id: [] for k in kiosks}
        self._presence: dict[str, _Presence] = {k.id: _Presence() for k in kiosks}
        self._changed = asyncio.Event()
        self._stopping = False

    # -- registry -----------------------------------------------------------------------------

    def get(self, kiosk_id: str) -> KioskSpec | None:
        return self._kiosks.get(kiosk_id) if KIOSK_ID_RE.fullmatch(kiosk_id) else None

    def kiosks(self) -> list[KioskSpec]:
        return list(self._kiosks.values())

    def online(self, kiosk_id: str) -> bool:
        p = self._presence.get(kiosk_id)
        return p is not None and (p.streams > 0 or self._clock() - p.last_beat < self.heartbeat_s)

    def last_seen_ms(self, kiosk_id: str) -> int | None:
        """When the kiosk's page last beat or closed its stream (wall clock, ms); None if never."""
        p = self._presence.get(kiosk_id)
        return None if p is None else p.last_seen_ms

    def open_streams(self, kiosk_id: str) -> int:
        p = self._presence.get(kiosk_id)
        return 0 if p is None else p.streams

    # -- codes and scans ----------------------------------------------------------------------

    def resolve_code(self, code: str) -> Product | None:
        """The product a scanned code names: a catalog barcode (GTIN check digit verified) or our scan link."""
        code = code.strip()
        if not code or len(code) > MAX_CODE:
            return None
        if code.startswith(self._scan_prefix):
            scan_code = code[len(self._scan_prefix):].split("?", 1)[0].split("#", 1)[0].rstrip("/")
            if not SCAN_CODE_RE.fullmatch(scan_code):
                return None
            tag = self._tags.by_scan_code(scan_code)
            return None if tag is None or tag.sku is None else self._catalog.get(tag.sku)
        if not BARCODE_RE.fullmatch(code):
            return None
        if len(code) in (12, 13) and not gtin_check_digit_ok(code):
            return None  # a misread: never guess a neighbour
        return self._catalog.find_by_barcode(code)

    def code_kind(self, code: str) -> str:
        """What a code looks like, for scan.kiosk: ean13, upca, ean8, scan_link, barcode (other digits), other."""
        if code.startswith(self._scan_prefix):
            return "scan_link"
        if BARCODE_RE.fullmatch(code):
            return {13: "ean13", 12: "upca", 8: "ean8"}.get(len(code), "barcode")
        return "other"

    async def scanned(self, kiosk_id: str, code: str, source: str) -> Product | None:
        """A scanner of this kiosk read `code`: record `scan.kiosk`, tell the kiosk's open pages."""
        if kiosk_id not in self._kiosks:
            raise KeyError(f"no kiosk {kiosk_id!r}")
        product = self.resolve_code(code)
        code = code.strip()
        kind, _, device_id = source.partition(":")
        payload: dict[str, Any] = {
            "kiosk_id": kiosk_id,
            "source": source if source in SCAN_SOURCES else "mqtt",
            "status": "ok" if product is not None else "unknown",
            "code_kind": self.code_kind(code),
        }
        if kind == "device" and device_id:  # an MQTT handheld bound to the kiosk: "device:{device_id}"
            payload["device_id"] = device_id
        if product is not None:
            # Only a code that named a product is sent: an unknown one may be anything a shopper held under
            # the scanner, a payment code or a membership card included, which the cloud must not receive.
            payload["code"] = code
            payload["sku"] = product.sku
        await self._events.publish_event("scan.kiosk", payload)
        if source != "wedge":  # the page that posted a wedge scan has its answer already
            data: dict[str, Any] = {"status": payload["status"]}
            self._push(kiosk_id, LiveEvent("scan", product, data))
        return product

    async def cart_added(self, kiosk_id: str, product: Product, quantity: int) -> None:
        await self._events.publish_event(
            "cart.add",
            {"kiosk_id": kiosk_id, "sku": product.sku, "quantity": quantity,
             "price": format(product.price, "f"), "currency": product.currency},
        )

    # -- live updates -------------------------------------------------------------------------

    def message(self, text: str, kiosk_id: str | None = None) -> None:
        """Show a message on one kiosk's pages, or on every kiosk's."""
        for kid in [kiosk_id] if kiosk_id is not None else list(self._kiosks):
            self._push(kid, LiveEvent("message", data={"text": text}))

    def reload(self, kiosk_id: str | None = None) -> None:
        for kid in [kiosk_id] if kiosk_id is not None else list(self._kiosks):
            self._push(kid, LiveEvent("reload"))

    def _push(self, kiosk_id: str, event: LiveEvent) -> None:
        for stream in self._streams.get(kiosk_id, []):
            stream.put(event)

    def catalog_changed(self, skus: list[str]) -> None:
        if not any(self._streams.values()):
            return
        if len(skus) >= STREAM_QUEUE:
            # A bulk change (a CSV import, a full catalog sync): the pages read the catalog afresh rather than
            # take thousands of events (which would overflow their queues anyway).
            self.reload()
            return
        products = self._catalog.get_many(skus)
        for sku in skus:
            product = products.get(sku)
            event = LiveEvent("removed", data={"sku": sku}) if product is None else LiveEvent("price", product)
            for streams in self._streams.values():
                for stream in streams:
                    stream.put(event)

    def stream_slots(self, kiosk_id: str) -> int:
        """How many more live streams this kiosk may open (0 for an unknown kiosk)."""
        if kiosk_id not in self._kiosks or self._stopping:
            return 0
        return MAX_STREAMS_PER_KIOSK - len(self._streams[kiosk_id])

    @contextlib.asynccontextmanager
    async def stream(self, kiosk_id: str) -> AsyncIterator[LiveStream]:
        """An open page: online while it lasts. Raises KeyError (unknown kiosk) or OverflowError (too many)."""
        if kiosk_id not in self._kiosks:
            raise KeyError(f"no kiosk {kiosk_id!r}")
        streams = self._streams[kiosk_id]
        if len(streams) >= MAX_STREAMS_PER_KIOSK or self._stopping:
            raise OverflowError(f"kiosk {kiosk_id} has {len(streams)} live streams open already")
        live = LiveStream(kiosk_id)
        streams.append(live)
        presence = self._presence[kiosk_id]
        presence.streams += 1
        presence.last_seen_ms = now_ms()
        self._changed.set()
        try:
            yield live
        finally:
            streams.remove(live)
            presence.streams -= 1
            # The page was there until now: a reload reconnects within the grace period unreported.
            presence.last_beat = self._clock() - self.heartbeat_s + min(self.grace_s, self.heartbeat_s)
            presence.last_seen_ms = now_ms()
            self._changed.set()

    def heartbeat(self, kiosk_id: str) -> None:
        presence = self._presence[kiosk_id]
        presence.last_beat = self._clock()
        presence.last_seen_ms = now_ms()
        self._changed.set()

    # -- presence to the cloud ----------------------------------------------------------------

    async def report(self) -> int:
        """Send `kiosk-{id}` state for each kiosk whose online state changed since last told; returns how many."""
        sent = 0
        for kiosk in self._kiosks.values():
            presence = self._presence[kiosk.id]
            online = self.online(kiosk.id)
            if presence.reported == online:
                continue
            presence.since_ms = now_ms()
            await self._events.put_state(
                f"kiosk-{kiosk.id}",
                {
                    "kind": "kiosk",
                    "online": online,
                    "name": kiosk.name,
                    "lang": kiosk.lang,
                    "orientation": kiosk.orientation,
                    "since_ms": presence.since_ms,
                    "last_seen_ms": presence.last_seen_ms,
                },
            )
            presence.reported = online
            sent += 1
        return sent

    async def run(self, poll_s: float = 1.0) -> None:
        """Report presence changes: at once when a stream opens, by polling for heartbeats that lapse.

        When cancelled (the agent stops) every open stream is ended, so the web server is not kept waiting
        for connections that would never close by themselves.
        """
        try:
            while True:
                self._changed.clear()
                try:
                    await self.report()
                except Exception:  # the outbox is the agent's: a failure here must not end kiosk tracking
                    log.exception("kiosk state could not be recorded; trying again")
                # Not wait_for (gh-86296): a page closing as the agent stops sets the event just as the
                # cancellation comes, and wait_for could lose it and keep this loop, and the agent, running.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_s):
                        await self._changed.wait()
        finally:
            self.close()

    def close(self) -> None:
        """End every live stream."""
        self._stopping = True
        for streams in self._streams.values():
            for stream in streams:
                stream.close()

