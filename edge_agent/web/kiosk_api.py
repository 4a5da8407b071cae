"""The touch kiosk's JSON API and live stream under `/kiosk/{kiosk_id}/api` (contract: docs/kiosk-api.md).

A public shopper endpoint (no session, DESIGN.md section 7): it reads the catalog, records scans and cart
additions, and places orders; nothing else. Every request is checked before anything is stored:
- the kiosk id must be configured (404 otherwise, same answer for malformed and unknown ids);
- POST bodies are read up to MAX_BODY bytes (413 past that), must be `application/json` (415 otherwise:
  a cross-site form cannot send that type without a CORS preflight, which this API never answers, so
  another site cannot place orders from a shopper's browser), strict JSON (no NaN, bounded nesting) and
  match their model exactly (`extra="forbid"`, bounded strings and lists): 422 otherwise;
- orders are rate limited per client address (429 with Retry-After).
Prices in answers and orders always come from the agent's catalog; the page never sends one.
Refusals are counted as bad input (`kiosk_api`) in the metrics.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devices.labels.money import format_money, unit_price_text
from devices.labels.qr import QRCodeError, qr_matrix
from devices.labels.registry import TagRegistry
from edge_agent.services.catalog import SKU_PATTERN, Product, ProductCatalog
from edge_agent.services.kiosks import KioskHub, KioskSpec, LiveEvent
from edge_agent.services.lockers import CollectStatus, LockerService
from edge_agent.services.orders import (
    MAX_LINES,
    MAX_QUANTITY,
    OrderError,
    OrderService,
    OrderUnavailableError,
    PlacedOrder,
)
from edge_agent.services.rate_limits import SlidingWindow
from edge_agent.services.store_health import sse_frame
from edge_agent.web.responses import NO_STORE, collect_answer, event_stream
from mqtt_io.strict_json import StrictJsonError, loads_strict

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
MAX_QUERY = 100
MAX_CODE = 512
MAX_QR_DATA = 512
PAGE_DEFAULT = 24
PAGE_MAX = 100
OFFSET_MAX = 100_000
PING_S = 15.0
ORDER_NUMBER_RE = re.compile(r"^[KSD][0-9]{4}-[0-9]{4,6}$")

MESSAGES = {
    "zh-CN": {
        "unknown": "未找到该商品，请扫描商品条码或货架标签上的二维码。",
        "pickup_shelf": "货架 {shelf} 第 {slot} 格的标签正在闪烁。工作人员会把订单交给您。",
        "pickup_wrong": "此取件码无效，请检查后重试。",
        "pickup_locked_out": "错误次数过多，请 {seconds} 秒后再试。",
        "pickup_elsewhere": "您的包裹在 {bank} 号取件柜，请在该取件柜的屏幕上输入取件码。",
        "pickup_unavailable": "现在无法取件，请联系工作人员。",
    },
    "en": {
        "unknown": "This code is not a product of this store. Please scan a product barcode or a shelf tag.",
        "pickup_shelf": "Shelf {shelf}, slot {slot} is flashing. A member of staff will hand you your order.",
        "pickup_wrong": "This code is not valid. Please check it and try again.",
        "pickup_locked_out": "Too many wrong codes. Please try again in {seconds} seconds.",
        "pickup_elsewhere": "Your parcel is in locker {bank}. Please type your code on that locker's screen.",
        "pickup_unavailable": "This order cannot be picked up right now. Please ask a member of staff.",
    },
}


# -- request bodies -------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CartAdd(_Body):
    sku: str = Field(pattern=SKU_PATTERN, description="The product added to the cart.")
    quantity: int = Field(1, ge=1, le=MAX_QUANTITY, description="How many.")


class PickupCodeIn(_Body):
    # Loose on purpose (as on the locker screen): whatever was typed is checked and counted by the service.
    code: str = Field(min_length=1, max_length=64, description="The customer's pickup code as typed or scanned.")


class ScanIn(_Body):
    code: str = Field(min_length=1, max_length=MAX_CODE, description="What the keyboard-wedge scanner typed.")


class OrderLineIn(_Body):
    sku: str = Field(pattern=SKU_PATTERN)
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class OrderIn(_Body):
    items: list[OrderLineIn] = Field(min_length=1, max_length=MAX_LINES)
    fulfilment: str = Field(max_length=16)


class HeartbeatIn(_Body):
    pass


B = TypeVar("B", bound=_Body)


# -- the context ----------------------------------------------------------------------------------


@dataclass
class KioskApi:
    """What the kiosk endpoints need; built by the runtime from the configuration."""

    hub: KioskHub
    catalog: ProductCatalog
    orders: OrderService
    tags: TagRegistry
    store_id: str
    currency: str
    price_locale: str
    public_base_url: str
    idle_s: int = 60
    warning_s: int = 15
    product_url_template: str | None = None  # [scan_links]: {sku}, {store_id}, {tag_id}
    checkout_url_template: str | None = None
    orders_per_minute: int = 10
    on_bad_input: Callable[[str, str], None] | None = None
    # Pickup orders (lockers and pickup shelves): the kiosk's "Pick up an order" code entry; None: no pickups.
    lockers: LockerService | None = None

    def __post_init__(self) -> None:
        self.rate = SlidingWindow(self.orders_per_minute)
        self.public_base_url = self.public_base_url.rstrip("/")

    # -- rendering --------------------------------------------------------------------------

    def money(self, amount: Decimal | None, currency: str) -> str | None:
        return None if amount is None else format_money(amount, currency, self.price_locale)

    def phone_urls(self, products: list[Product]) -> dict[str, str]:
        """The "continue on your phone" link per sku: the cloud's product page, else a paired tag's scan link."""
        if self.product_url_template:
            return {
                p.sku: self.product_url_template.format(
                    sku=quote(p.sku, safe=""), store_id=quote(self.store_id, safe=""), tag_id=""
                )
                for p in products
            }
        links: dict[str, str] = {}
        for tag in self.tags.by_sku([p.sku for p in products]):
            if tag.sku is not None and tag.sku not in links:
                links[tag.sku] = f"{self.public_base_url}/s/{tag.scan_code}"
        return links

    def product_json(self, p: Product, phone_url: str | None) -> dict[str, Any]:
        return {
            "sku": p.sku,
            "name": p.name,
            "price": format(p.price, "f"),
            "currency": p.currency,
            "price_text": self.money(p.price, p.currency),
            "unit_price": None if p.unit_price is None else format(p.unit_price, "f"),
            "unit_label": p.unit_label,
            "unit_price_text": None
            if p.unit_price is None
            else unit_price_text(p.unit_price, p.currency, self.price_locale, p.unit_label),
            "former_price": None if p.former_price is None else format(p.former_price, "f"),
            "former_price_text": self.money(p.former_price, p.currency),
            "promotion": p.promotion,
            "category": p.category,
            "image_url": p.image_url,
            "on_shelf": p.on_shelf,
            "available": p.available,
            "barcode": p.barcode,
            "phone_url": phone_url,
        }

    def products_json(self, products: list[Product]) -> list[dict[str, Any]]:
        urls = self.phone_urls(products) if products else {}
        return [self.product_json(p, urls.get(p.sku)) for p in products]

    def one_product_json(self, product: Product) -> dict[str, Any]:
        return self.products_json([product])[0]

    def order_json(self, order: PlacedOrder) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "order_number": order.order_number,
            "items": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "price": format(line.price, "f"),
                    "price_text": self.money(line.price, order.currency),
                    "line_total": format(line.line_total, "f"),
                    "line_total_text": self.money(line.line_total, order.currency),
                }
                for line in order.items
            ],
            "total": format(order.total, "f"),
            "total_text": self.money(order.total, order.currency),
            "currency": order.currency,
            "fulfilment": order.fulfilment,
            "checkout_url": order.checkout_url,
            "qr_data": order.checkout_url or order.order_number,
            "created_ms": order.created_ms,
        }

    def qr_allowed(self, data: str) -> bool:
        """Only what a kiosk shows: our own links, the configured cloud pages, order numbers."""
        if ORDER_NUMBER_RE.fullmatch(data):
            return True
        if any(c.isspace() or not c.isprintable() for c in data):
            return False
        prefixes = [self.public_base_url + "/"]
        for template in (self.product_url_template, self.checkout_url_template):
            if template:
                prefixes.append(_origin(template) + "/")
        return any(data.startswith(prefix) for prefix in prefixes)

    def bad(self, reason: str) -> None:
        if self.on_bad_input is not None:
            self.on_bad_input("kiosk_api", reason)


def _origin(url: str) -> str:
    """`https://host:port` of a URL (or template): everything before the path."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def qr_svg(data: str) -> str:
    """The QR code of `data` as a small SVG: one path of unit squares, a 4-module quiet zone."""
    rows = qr_matrix(data)
    size = len(rows) + 8
    parts = [
        f"M{x + 4},{y + 4}h1v1h-1z" for y, row in enumerate(rows) for x, dark in enumerate(row) if dark
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
        f'<rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{"".join(parts)}"/></svg>'
    )


# -- the router -----------------------------------------------------------------------------------


def kiosk_api_router(api: KioskApi) -> APIRouter:
    router = APIRouter(prefix="/kiosk/{kiosk_id}/api", tags=["kiosk"])

    def kiosk(kiosk_id: str) -> KioskSpec:
        spec = api.hub.get(kiosk_id)
        if spec is None:
            api.bad("unknown_kiosk")
            raise HTTPException(status_code=404, detail="no such kiosk")
        return spec

    async def body(request: Request, model: type[B]) -> B:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            api.bad("content_type")
            raise HTTPException(status_code=415, detail="send application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            api.bad("too_large")
            raise HTTPException(status_code=413, detail=f"at most {MAX_BODY} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                api.bad("too_large")
                raise HTTPException(status_code=413, detail=f"at most {MAX_BODY} bytes")
        try:
            return model.model_validate(loads_strict(bytes(raw)))
        except StrictJsonError as exc:
            api.bad("json")
            raise HTTPException(status_code=422, detail=f"not JSON: {exc}") from None
        except ValidationError as exc:
            api.bad("invalid")
            detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
            raise HTTPException(status_code=422, detail=detail) from None

    def answer(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status_code, headers={**NO_STORE, **(headers or {})})

    @router.get("/config")
    def config(kiosk_id: str) -> JSONResponse:
        spec = kiosk(kiosk_id)
        return answer({
            "kiosk_id": spec.id,
            "name": spec.name,
            "store_id": api.store_id,
            "lang": spec.lang,
            "orientation": spec.orientation,
            "currency": api.currency,
            "fulfilments": api.orders.fulfilments(),
            "idle_s": api.idle_s,
            "warning_s": api.warning_s,
            "public_base_url": api.public_base_url,
            "max_lines": MAX_LINES,
            "max_quantity": MAX_QUANTITY,
            "pickup": api.lockers is not None,  # the "Pick up an order" code entry (POST /pickup)
        })

    @router.get("/categories")
    def categories(kiosk_id: str) -> JSONResponse:
        kiosk(kiosk_id)
        return answer({"categories": [{"id": c, "name": c, "count": n} for c, n in api.catalog.categories()]})

    @router.get("/products")
    def products(
        kiosk_id: str,
        category: str | None = Query(None, max_length=64),
        q: str | None = Query(None, max_length=MAX_QUERY),
        offset: int = Query(0, ge=0, le=OFFSET_MAX),
        limit: int = Query(PAGE_DEFAULT, ge=1, le=PAGE_MAX),
    ) -> JSONResponse:
        kiosk(kiosk_id)
        page, total = api.catalog.browse(category=category or None, text=q, offset=offset, limit=limit)
        return answer({"products": api.products_json(page), "total": total, "offset": offset, "limit": limit})

    @router.get("/products/{sku}")
    def product(kiosk_id: str, sku: str) -> JSONResponse:
        kiosk(kiosk_id)
        found = api.catalog.get(sku) if re.fullmatch(SKU_PATTERN, sku) else None
        if found is None:
            raise HTTPException(status_code=404, detail="no such product")
        return answer(api.one_product_json(found))

    @router.get("/qr")
    def qr(kiosk_id: str, data: str = Query(min_length=1, max_length=MAX_QR_DATA)) -> Response:
        kiosk(kiosk_id)
        if not api.qr_allowed(data):
            api.bad("qr_data")
            raise HTTPException(status_code=400, detail="only our own links and order numbers are drawn")
        try:
            svg = qr_svg(data)
        except QRCodeError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        # The same data always draws the same code: the browser may keep it for the session.
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})

    @router.post("/cart/add")
    async def cart_add(kiosk_id: str, request: Request) -> JSONResponse:
        spec = kiosk(kiosk_id)
        entry = await body(request, CartAdd)
        found = api.catalog.get(entry.sku)
        if found is None:
            raise HTTPException(status_code=404, detail="no such product")
        shown = api.one_product_json(found)
        if not found.available:
            return answer({"detail": f"{found.name} is not available", "product": shown}, 409)
        await api.hub.cart_added(spec.id, found, entry.quantity)
        return answer(shown)

    @router.post("/scan")
    async def scan(kiosk_id: str, request: Request) -> JSONResponse:
        spec = kiosk(kiosk_id)
        entry = await body(request, ScanIn)
        found = await api.hub.scanned(spec.id, entry.code, "wedge")
        if found is None:
            return answer({"status": "unknown", "message": MESSAGES[spec.lang]["unknown"]})
        return answer({"status": "ok", "product": api.one_product_json(found)})

    @router.post("/pickup")
    async def pickup(kiosk_id: str, request: Request) -> JSONResponse:
        """A customer's pickup code: the one shared check (LockerService.collect, terminal `kiosk:<id>`: same
        throttle, lockouts and audit as the locker screens). An order on a pickup shelf: its label flashes and
        the answer names shelf and slot. An order in a locker: nothing opens from here; the answer names the
        locker bank (its code stays valid there)."""
        spec = kiosk(kiosk_id)
        entry = await body(request, PickupCodeIn)
        if api.lockers is None:
            return answer({"detail": {"error": "no_pickups", "message": "this store has no pickup orders"}}, 404)
        texts = MESSAGES[spec.lang]
        # A bank no locker has: a locker order answers ELSEWHERE (its bank) and never opens a door from here.
        result = await api.lockers.collect(f"kiosk:{spec.id}", entry.code.strip(), bank=f"kiosk:{spec.id}")
        status_code, headers, fields = collect_answer(result)
        if result.status is CollectStatus.SHELF and result.slot is not None:
            message = texts["pickup_shelf"].format(shelf=result.slot["shelf_name"], slot=result.slot["position"])
        elif result.status is CollectStatus.LOCKED_OUT:
            message = texts["pickup_locked_out"].format(seconds=fields["seconds_left"])
        elif result.status is CollectStatus.ELSEWHERE:
            message = texts["pickup_elsewhere"].format(bank=result.bank)
        elif result.status is CollectStatus.WRONG:
            message = texts["pickup_wrong"]
        else:  # nothing opens from a kiosk: any other outcome is "unavailable" here
            return answer({"status": "unavailable", "message": texts["pickup_unavailable"]}, 503)
        return answer({**fields, "message": message}, status_code, headers)

    @router.post("/orders")
    async def place_order(kiosk_id: str, request: Request) -> JSONResponse:
        spec = kiosk(kiosk_id)
        entry = await body(request, OrderIn)
        client = request.client.host if request.client else "unknown"
        wait = api.rate.check(client)
        if wait > 0:
            api.bad("order_rate")
            return answer({"detail": "too many orders from this address: please wait"}, 429,
                          {"Retry-After": str(max(1, int(wait + 0.999)))})
        items = [(line.sku, line.quantity) for line in entry.items]
        try:
            order = await api.orders.place(source=f"kiosk:{spec.id}", items=items, fulfilment=entry.fulfilment)
        except OrderUnavailableError as exc:
            return answer({"detail": exc.message}, 503)
        except OrderError as exc:
            return answer({"detail": exc.message, "sku": exc.sku}, 409)
        return answer(api.order_json(order), 201)

    @router.get("/orders/{order_id}")
    def get_order(kiosk_id: str, order_id: str) -> JSONResponse:
        spec = kiosk(kiosk_id)
        order = api.orders.get(order_id) if len(order_id) <= 64 else None
        if order is None or order.source != f"kiosk:{spec.id}":
            raise HTTPException(status_code=404, detail="no such order")
        return answer(api.order_json(order))

    @router.post("/heartbeat")
    async def heartbeat(kiosk_id: str, request: Request) -> JSONResponse:
        spec = kiosk(kiosk_id)
        await body(request, HeartbeatIn)
        api.hub.heartbeat(spec.id)
        return answer({"ok": True})

    @router.get("/live")
    async def live(kiosk_id: str, request: Request) -> StreamingResponse:
        spec = kiosk(kiosk_id)
        # Checked here so that a refusal is a plain 429; the stream itself opens in the generator, whose
        # `finally` is then sure to close it (a generator never started never runs its `finally`).
        if not api.hub.stream_slots(spec.id):
            api.bad("too_many_streams")
            raise HTTPException(status_code=429, detail="too many live streams for this kiosk")
        return event_stream(_events(api, spec, request))

    return router


async def _events(api: KioskApi, spec: KioskSpec, request: Request) -> AsyncIterator[bytes]:
    try:
        async with api.hub.stream(spec.id) as stream:
            yield b"retry: 2000\n\n" + sse_frame("hello", {"kiosk_id": spec.id})
            while not stream.closed:
                event = await stream.get(PING_S)
                if event is None:
                    if stream.closed or await request.is_disconnected():
                        return
                    yield b": ping\n\n"
                    continue
                yield _render(api, spec, event)
    except OverflowError:  # another page of this kiosk took the last slot meanwhile
        return


def _render(api: KioskApi, spec: KioskSpec, event: LiveEvent) -> bytes:
    if event.kind == "price" and event.product is not None:
        return sse_frame("price", api.one_product_json(event.product))
    if event.kind == "scan":
        if event.product is None:
            return sse_frame("scan", {"status": "unknown", "message": MESSAGES[spec.lang]["unknown"]})
        return sse_frame("scan", {"status": "ok", "product": api.one_product_json(event.product)})
    return sse_frame(event.kind, event.data)
