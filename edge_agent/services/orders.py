"""Orders placed in the store: at a kiosk, on a tag's scan-link page, or from an MQTT device (issue 5).

The agent never takes payment (DESIGN.md section 1a). An order here is a priced cart with a fulfilment choice:
- `phone`: the shopper pays on the phone; the answer carries a checkout URL (from `[kiosk]
  checkout_url_template`) that the kiosk shows as a QR code. The cart *is* the order: the cloud receives it in
  `order.created` and its checkout page looks it up by `order_id`.
- `counter`, `locker`: reserved for pickup at the counter or in a locker, paid there or online.
- `till`: paid at the till, which finds the order by its number.

Prices come from the catalog at the moment of ordering, never from the client. An unknown or unavailable sku,
a bad quantity, mixed currencies or a fulfilment the store did not enable raise `OrderError` and store nothing.

`order_id` is a UUIDv7 (for the cloud); `order_number` is for people: `{P}{MMDD}-{NNNN}`, a per-store, per-day
counter (local time) with a one-letter prefix naming the source (K kiosk, S scan link, D device), e.g.
`K1123-0042`. The counter is shared by all sources, so the digits alone are unique for the day. It is handed
out in the same transaction that stores the order, so it works offline and never repeats.

Durability (DESIGN.md section 7): the order is committed first, then `order.created` is published (critical
class: the outbox refuses rather than drops it), then the row is marked published. A crash between the two
leaves an unpublished row that `recover()` publishes again at start-up with the same payload (the cloud
deduplicates on `order_id`). An outbox that refuses the event (full) turns the order into `refused`, and the
caller gets `OrderUnavailableError`, so a shopper is never told "ordered" for an order the cloud cannot hear of.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import uuid_utils

from cloud_link.outbox import OutboxFullError
from cloud_link.ports import DurableStore, EventSink
from edge_agent.services.catalog import SKU_RE, ProductCatalog, canonical_decimal, decimal_text

log = logging.getLogger(__name__)

FULFILMENTS = ("phone", "counter", "locker", "till")
MAX_LINES = 50
MAX_QUANTITY = 99
SOURCE_PREFIXES = {"kiosk": "K", "tag": "S", "device": "D"}
# `kiosk:k1`, `tag:0123456789abcdef`, `device:scanner-3`
SOURCE_ID_MAX = 64
RECOVER_BATCH = 100
# Orders are the cloud's once announced; the agent keeps them this long (a kiosk reloaded on its
# confirmation, a till looking a number up), then deletes them so the table stays bounded.
KEEP_DAYS = 30
PURGE_EVERY_S = 3600.0
DAY_MS = 86_400_000


class OrderError(Exception):
    """The order was refused; nothing was stored. `sku` names the line at fault, when there is one."""

    def __init__(self, message: str, *, sku: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sku = sku


class OrderUnavailableError(OrderError):
    """The order could not be recorded right now (the outbox is full); the shopper should order at the counter."""


@dataclass(frozen=True)
class OrderLine:
    sku: str
    name: str
    quantity: int
    price: Decimal  # unit price from the catalog at ordering time
    line_total: Decimal


@dataclass(frozen=True)
class PlacedOrder:
    order_id: str
    order_number: str
    items: list[OrderLine]
    total: Decimal
    currency: str
    fulfilment: str
    source: str
    checkout_url: str | None
    created_ms: int = 0

    def payload(self, store_id: str) -> dict[str, Any]:
        """The `order.created` payload (cloud_link/schemas/payload.order.created.json)."""
        body: dict[str, Any] = {
            "order_id": self.order_id,
            "order_number": self.order_number,
            "source": self.source,
            "fulfilment": self.fulfilment,
            "currency": self.currency,
            "items": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "price": decimal_text(line.price),
                    "line_total": decimal_text(line.line_total),
                }
                for line in self.items
            ],
            "total": decimal_text(self.total),
            "item_count": sum(line.quantity for line in self.items),
            "created_ms": self.created_ms,
        }
        if self.checkout_url is not None:
            body["checkout_url"] = self.checkout_url
        return body


def check_source(source: str) -> str:
    kind, sep, ident = source.partition(":")
    if not sep or kind not in SOURCE_PREFIXES or not ident or len(ident) > SOURCE_ID_MAX or not SKU_RE.fullmatch(ident):
        raise OrderError(f"source must be kiosk:<id>, tag:<id> or device:<id>, got {source[:80]!r}")
    return source


def checkout_url(template: str | None, *, store_id: str, order_id: str, order_number: str) -> str | None:
    """The cloud checkout URL for a `phone` order; the template's fields are url-safe by construction."""
    if not template:
        return None
    return template.format(store_id=store_id, order_id=order_id, order_number=order_number)


def _day_and_prefix(ms: int) -> tuple[str, str]:
    local = time.localtime(ms / 1000)
    return time.strftime("%Y%m%d", local), time.strftime("%m%d", local)


class OrderService:
    def __init__(
        self,
        db: DurableStore,
        catalog: ProductCatalog,
        events: EventSink,
        *,
        store_id: str,
        fulfilments: Sequence[str] = FULFILMENTS,
        checkout_url_template: str | None = None,
    ) -> None:
        unknown = [f for f in fulfilments if f not in FULFILMENTS]
        if unknown:
            raise ValueError(f"unknown fulfilments {unknown}: expected some of {FULFILMENTS}")
        if "phone" in fulfilments and not checkout_url_template:
            raise ValueError("the phone fulfilment needs a checkout_url_template")
        self._db = db
        self._catalog = catalog
        self._events = events
        self._store_id = store_id
        self._fulfilments = list(dict.fromkeys(fulfilments))
        self._template = checkout_url_template

    def fulfilments(self) -> list[str]:
        """The checkout choices this store enabled, in the order to show them."""
        return list(self._fulfilments)

    # -- placing ------------------------------------------------------------------------------

    def price(self, items: Sequence[tuple[str, int]]) -> tuple[list[OrderLine], Decimal, str]:
        """Price the lines from the catalog now; raises OrderError for anything that cannot be ordered."""
        if not items:
            raise OrderError("an order needs at least one line")
        if len(items) > MAX_LINES:
            raise OrderError(f"at most {MAX_LINES} lines per order, got {len(items)}")
        seen: set[str] = set()
        for sku, quantity in items:
            if not isinstance(sku, str) or not SKU_RE.fullmatch(sku):
                raise OrderError(f"{str(sku)[:80]!r} is not a valid sku")
            if sku in seen:
                raise OrderError(f"{sku} is given twice: one line per product", sku=sku)
            seen.add(sku)
            if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
                raise OrderError(f"quantity of {sku} must be 1 to {MAX_QUANTITY}", sku=sku)
        products = self._catalog.get_many([sku for sku, _ in items])
        lines: list[OrderLine] = []
        currency: str | None = None
        for sku, quantity in items:
            product = products.get(sku)
            if product is None:
                raise OrderError(f"{sku} is not in the catalog", sku=sku)
            if not product.available:
                raise OrderError(f"{product.name} ({sku}) is not available", sku=sku)
            if currency is None:
                currency = product.currency
            elif product.currency != currency:
                raise OrderError(f"{sku} is priced in {product.currency}, the order in {currency}", sku=sku)
            line_total = canonical_decimal(product.price * quantity)
            lines.append(OrderLine(sku, product.name, quantity, product.price, line_total))
        assert currency is not None
        return lines, canonical_decimal(sum((line.line_total for line in lines), Decimal(0))), currency

    async def place(self, *, source: str, items: list[tuple[str, int]], fulfilment: str) -> PlacedOrder:
        """Price, store and announce an order (`order.created`); works while the cloud is unreachable."""
        check_source(source)
        if fulfilment not in self._fulfilments:
            raise OrderError(f"fulfilment {fulfilment[:20]!r} is not offered here: choose one of {self._fulfilments}")
        lines, total, currency = self.price(items)
        order_id = str(uuid_utils.uuid7())
        created_ms = time.time_ns() // 1_000_000
        day, mmdd = _day_and_prefix(created_ms)
        prefix = SOURCE_PREFIXES[source.partition(":")[0]]

        def job(conn: sqlite3.Connection) -> tuple[str, str | None]:
            row = conn.execute("SELECT COALESCE(MAX(day_seq), 0) + 1 FROM orders WHERE day = ?", (day,)).fetchone()
            seq = int(row[0])
            number = f"{prefix}{mmdd}-{seq:04d}"
            url = checkout_url(
                self._template if fulfilment == "phone" else None,
                store_id=self._store_id, order_id=order_id, order_number=number,
            )
            order = PlacedOrder(order_id, number, lines, total, currency, fulfilment, source, url, created_ms)
            conn.execute(
                "INSERT INTO orders(order_id, order_number, day, day_seq, source, fulfilment, currency, total, "
                "payload, state, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'placed', ?)",
                (order_id, number, day, seq, source, fulfilment, currency, decimal_text(total),
                 json.dumps(order.payload(self._store_id), ensure_ascii=False), created_ms),
            )
            return number, url

        number, url = await self._db.write(job)
        order = PlacedOrder(order_id, number, lines, total, currency, fulfilment, source, url, created_ms)
        await self._announce(order_id, order.payload(self._store_id))
        log.info("order %s (%s) from %s: %d lines, %s %s", number, order_id, source, len(lines), total, currency)
        return order

    async def _announce(self, order_id: str, payload: dict[str, Any]) -> None:
        try:
            await self._events.publish_event("order.created", payload)
        except OutboxFullError as exc:
            await self._db.write(
                lambda conn: conn.execute("UPDATE orders SET state = 'refused' WHERE order_id = ?", (order_id,))
            )
            raise OrderUnavailableError(
                "the order cannot be recorded right now: please order at the counter"
            ) from exc
        await self._db.write(
            lambda conn: conn.execute("UPDATE orders SET state = 'published' WHERE order_id = ?", (order_id,))
        )

    async def recover(self) -> int:
        """Publish `order.created` for orders stored but not announced before a crash; returns how many."""
        count = 0
        while True:
            rows = self._db.read(
                lambda conn: conn.execute(
                    "SELECT order_id, payload FROM orders WHERE state = 'placed' ORDER BY created_ms LIMIT ?",
                    (RECOVER_BATCH,),
                ).fetchall()
            )
            if not rows:
                return count
            for order_id, payload in rows:
                try:
                    await self._announce(str(order_id), json.loads(payload))
                except OrderUnavailableError:
                    log.error("order %s could not be announced after a restart: the outbox is full", order_id)
                count += 1

    async def purge(self, keep_days: int = KEEP_DAYS) -> int:
        """Delete announced and refused orders older than `keep_days`; returns how many (never unannounced ones)."""
        cutoff = time.time_ns() // 1_000_000 - keep_days * DAY_MS

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM orders WHERE state != 'placed' AND created_ms < ?", (cutoff,)
            ).rowcount

        return int(await self._db.write(job))

    async def purge_loop(self, keep_days: int = KEEP_DAYS, every_s: float = PURGE_EVERY_S) -> None:
        while True:
            try:
                gone = await self.purge(keep_days)
                if gone:
                    log.info("deleted %d orders older than %d days", gone, keep_days)
            except Exception:  # the database's trouble is reported by its other users; try again later
                log.exception("purging old orders failed")
            await asyncio.sleep(every_s)

    # -- reading ------------------------------------------------------------------------------

    def get(self, order_id: str) -> PlacedOrder | None:
        """An order that was placed and announced (refused ones are not orders)."""
        try:
            uuid.UUID(order_id)
        except (ValueError, TypeError, AttributeError):
            return None
        row = self._db.read(
            lambda conn: conn.execute(
                "SELECT payload FROM orders WHERE order_id = ? AND state != 'refused'", (order_id,)
            ).fetchone()
        )
        return None if row is None else _from_payload(json.loads(row[0]))


def _from_payload(body: dict[str, Any]) -> PlacedOrder:
    return PlacedOrder(
        order_id=body["order_id"],
        order_number=body["order_number"],
        items=[
            OrderLine(i["sku"], i["name"], int(i["quantity"]), Decimal(i["price"]), Decimal(i["line_total"]))
            for i in body["items"]
        ],
        total=Decimal(body["total"]),
        currency=body["currency"],
        fulfilment=body["fulfilment"],
        source=body["source"],
        checkout_url=body.get("checkout_url"),
        created_ms=int(body["created_ms"]),
    )
