"""Scan links: `GET /s/{code}` (a shelf tag's QR code) and the local product page's `POST /s/{code}/order`.

A public shopper page (DESIGN.md section 7): no session, and it can only read one product and place an
order for pickup. `GET /s/{code}`, in order:
1. the rate limit per client address (`[scan_links].rate_limit_*`): 429 with Retry-After and a page;
2. the code: malformed or unknown -> a friendly 404 page in zh-CN and en (counted as bad input);
3. the decision (ScanLinkService.decide): a 302 to the configured cloud URL, or the local product page
   (no template, `local_page = "always"`, or `"when_cloud_down"` while the cloud link is down), or a page
   saying the tag has no product yet;
4. the scan.tag event, durable in the outbox BEFORE the answer is sent. Not recorded: HEAD requests,
   link-preview fetchers and crawlers (ScanLinkService docs), and in-page navigation (a `lang` query, which
   QR codes never carry). They get the same answer.

Pages are plain HTML with one inline stylesheet allowed by its hash in the Content-Security-Policy: no
script at all, so no injected text can run; forms post only to this origin. The order form carries a
signed single-use token (FormTokens) and its POST must come from this origin (Origin, else Referer): with
no session there is no cookie to ride on, but a cross-site form could still place orders in a shopper's
name from their phone's address; the token needs a page from the agent, which another origin cannot read.
The page's Referrer-Policy is `same-origin` because `no-referrer` makes browsers send `Origin: null` with
a form POST, which this check must refuse.

Client addresses come from the TCP connection: behind a reverse proxy every shopper has the proxy's address
and shares its rate limit (raise `rate_limit_per_minute` there).
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from devices.labels.money import format_money, unit_price_text
from edge_agent.metrics import AgentMetrics
from edge_agent.services.catalog import Product
from edge_agent.services.orders import OrderError, OrderUnavailableError, PlacedOrder
from edge_agent.services.scan_links import (
    MAX_QUANTITY,
    ScanLinkService,
    ScanTarget,
    client_type,
    is_preview_fetch,
    normalise_code,
    retry_after_header,
)

log = logging.getLogger(__name__)

Lang = Literal["zh-CN", "en"]
BAD_INPUT_SOURCE = "scan_link"
MAX_FORM_BYTES = 2048

STRINGS: dict[Lang, dict[str, str]] = {
    "en": {
        "lang_name": "English",
        "not_found_title": "Tag not found",
        "not_found": "We cannot find this shelf tag. Please check the code or ask a member of staff.",
        "no_product_title": "Not set up yet",
        "no_product": "This shelf tag has no product yet. Please ask a member of staff.",
        "limited_title": "Too many requests",
        "limited": "Too many scans from your connection. Please wait {seconds} s and try again.",
        "on_shelf": "On the shelf in this store",
        "order": "Order for pickup",
        "quantity": "Quantity (1 to {max})",
        "place": "Place order",
        "pickup_note": "Collect and pay at the counter; we keep the order ready for you.",
        "ordered_title": "Order placed",
        "ordered": "Your order number",
        "ordered_note": "Show this number at the counter to collect and pay.",
        "total": "Total",
        "pay": "Pay now",
        "back": "Back to the product",
        "expired_title": "Please try again",
        "expired": "This order form has expired or did not come from this store's page. Please open the product "
        "again.",
        "bad_quantity_title": "Please check the quantity",
        "bad_quantity": "Please choose a quantity from 1 to {max}.",
        "failed_title": "Order not placed",
        "failed": "We could not place your order just now. Please try again or ask a member of staff.",
        "no_orders_title": "Ordering not available",
        "no_orders": "Ordering is not available here. Please ask a member of staff.",
        "unit": "Unit price",
        "unavailable": "Not available to order at the moment.",
    },
    "zh-CN": {
        "lang_name": "中文",
        "not_found_title": "找不到价签",
        "not_found": "找不到这个货架价签。请检查二维码或联系店员。",
        "no_product_title": "尚未设置",
        "no_product": "这个价签还没有关联商品。请联系店员。",
        "limited_title": "请求太多",
        "limited": "您的网络扫码次数过多。请等待 {seconds} 秒后重试。",
        "on_shelf": "本店货架有售",
        "order": "到店自提下单",
        "quantity": "数量（1 至 {max}）",
        "place": "提交订单",
        "pickup_note": "请到收银台取货并付款，我们会为您备好商品。",
        "ordered_title": "下单成功",
        "ordered": "您的订单号",
        "ordered_note": "请在收银台出示此订单号取货并付款。",
        "total": "合计",
        "pay": "立即支付",
        "back": "返回商品",
        "expired_title": "请重试",
        "expired": "此订单表单已过期或并非来自本店页面。请重新打开商品页面。",
        "bad_quantity_title": "请检查数量",
        "bad_quantity": "请选择 1 至 {max} 的数量。",
        "failed_title": "下单失败",
        "failed": "暂时无法提交订单。请重试或联系店员。",
        "no_orders_title": "暂不支持下单",
        "no_orders": "此处暂不支持下单。请联系店员。",
        "unit": "单价",
        "unavailable": "该商品暂时无法下单。",
    },
}
OTHER: dict[Lang, Lang] = {"en": "zh-CN", "zh-CN": "en"}


def pick_language(query_lang: str | None, accept_language: str | None, default: Lang) -> Lang:
    """`?lang=` first, then the best of zh/en in Accept-Language (q-values honoured), then the store's."""
    if query_lang:
        q = query_lang.lower()
        if q.startswith("zh"):
            return "zh-CN"
        if q.startswith("en"):
            return "en"
    if accept_language:
        best: tuple[float, int, Lang] | None = None
        for index, part in enumerate(accept_language[:512].split(",")[:20]):
            tag, _, params = part.strip().partition(";")
            tag = tag.strip().lower()
            lang: Lang | None = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
            if lang is None:
                continue
            weight = 1.0
            params = params.strip()
            if params.startswith("q="):
                try:
                    weight = float(params[2:])
                except ValueError:
                    continue
            if weight <= 0:
                continue
            if best is None or (weight, -index) > (best[0], best[1]):
                best = (weight, -index, lang)
        if best is not None:
            return best[2]
    return default


@dataclass(frozen=True)
class _Pages:
    layout: Template
    css: str
    headers: dict[str, str]


def _read(name: str) -> str:
    return resources.files("edge_agent.web").joinpath("static", "scan", name).read_text(encoding="utf-8")


def _load_pages() -> _Pages:
    css = _read("scan.css")
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    csp = "; ".join(
        [
            "default-src 'none'",
            f"style-src 'sha256-{digest}'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # Not no-referrer: that makes a same-origin form POST carry `Origin: null` (see the module docs).
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    return _Pages(Template(_read("layout.html")), css, headers)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


SCAN_PATH = "/s/{raw_code}"


def scan_route(router: APIRouter) -> Route:
    """The plain Starlette route of `GET /s/{raw_code}` in a router made by `scan_links_router`."""
    for route in router.routes:
        if isinstance(route, Route) and route.path == SCAN_PATH:
            return route
    raise LookupError(f"no {SCAN_PATH} route in this router")


class ScanLinkLane:
    """Pure ASGI middleware: a shelf tag's scan link goes straight to its route.

    Every phone that scans a tag's QR code lands on `GET /s/{code}`, the hottest path of the web server
    (bench.kiosk). Through the whole app each scan also passed FastAPI's exception and exit-stack middleware
    and its router, about a sixth of the request's CPU in a profile. The scan route is a plain Starlette
    route with no dependencies and raises no HTTPException, so none of that does anything for it; this lane
    uses the route's own matching and handler, and everything else (the order form, `/s/` with a path,
    other methods) goes on through the app as before. Installed as the outermost user middleware: the
    server-error middleware around it still turns an exception into a 500."""

    def __init__(self, app: ASGIApp, route: Route) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/s/"):
            match, child_scope = self.route.matches(scope)
            if match is Match.FULL:  # PARTIAL (another method) goes on to the app: its 405
                scope.update(child_scope)
                await self.route.handle(scope, receive, send)
                return
        await self.app(scope, receive, send)


def scan_links_router(
    service: ScanLinkService,
    metrics: AgentMetrics,
    *,
    price_locale: str,
    public_base_url: str,
) -> APIRouter:
    router = APIRouter(tags=["scan links"])
    pages = _load_pages()
    default_lang: Lang = "zh-CN" if price_locale.lower().startswith("zh") else "en"
    public = urllib.parse.urlsplit(public_base_url)
    public_origin = f"{public.scheme}://{public.netloc}".lower()
    redirect_headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    def page(lang: Lang, title_key: str, body: str, *, status: int = 200, switch: bool = True,
             extra: Mapping[str, str] | None = None, title: str | None = None) -> HTMLResponse:
        text = STRINGS[lang]
        other = OTHER[lang]
        footer = (
            f'<footer><a href="?lang={other}" hreflang="{other}" lang="{other}">{_e(STRINGS[other]["lang_name"])}</a>'
            "</footer>"
            if switch
            else ""
        )
        document = pages.layout.substitute(
            lang=lang, title=_e(title or text[title_key]), css=pages.css, body=body, footer=footer
        )
        headers = dict(pages.headers)
        if extra:
            headers.update(extra)
        return HTMLResponse(document, status_code=status, headers=headers)

    def message(lang: Lang, key: str, *, status: int, switch: bool = True, **fmt: Any) -> HTMLResponse:
        text = STRINGS[lang]
        body = f"<h1>{_e(text[key + '_title'])}</h1>\n<p>{_e(text[key].format(max=MAX_QUANTITY, **fmt))}</p>"
        extra = {"Retry-After": retry_after_header(float(fmt["seconds"]))} if "seconds" in fmt else None
        return page(lang, key + "_title", body, status=status, switch=switch, extra=extra)

    def lang_of(request: Request) -> Lang:
        return pick_language(request.query_params.get("lang"), request.headers.get("accept-language"), default_lang)

    def limited(request: Request) -> float:
        client = request.client.host if request.client is not None else "unknown"
        return service.limiter.take(client)

    def not_found(request: Request, reason: str) -> HTMLResponse:
        metrics.bad_input(BAD_INPUT_SOURCE, reason)
        return message(lang_of(request), "not_found", status=404)

    def too_many(request: Request, wait: float) -> HTMLResponse:
        metrics.bad_input(BAD_INPUT_SOURCE, "rate_limited")
        return message(lang_of(request), "limited", status=429, seconds=retry_after_header(wait))

    def product_body(lang: Lang, code: str, product: Product, target: ScanTarget) -> str:
        text = STRINGS[lang]
        price = format_money(product.price, product.currency, price_locale)
        parts = [f"<h1>{_e(product.name)}</h1>"]
        former = ""
        if product.former_price is not None and product.former_price > product.price:
            was = format_money(product.former_price, product.currency, price_locale)
            former = f'<span class="former">{_e(was)}</span>'
        parts.append(f'<p class="price">{_e(price)}{former}</p>')
        if product.unit_price is not None:
            unit = unit_price_text(product.unit_price, product.currency, price_locale, product.unit_label)
            parts.append(f'<p class="unit">{_e(text["unit"])}: {_e(unit)}</p>')
        if product.promotion:
            parts.append(f'<p class="promo">{_e(product.promotion)}</p>')
        if product.origin:
            parts.append(f'<p class="meta">{_e(product.origin)}</p>')
        if product.on_shelf:
            parts.append(f'<p class="shelf">{_e(text["on_shelf"])}</p>')
        if not product.available:
            parts.append(f'<p class="note">{_e(text["unavailable"])}</p>')
        elif service.orders_enabled:
            token = service.tokens.issue(target.tag_id)
            parts.append(
                f'<form method="post" action="{_e(code)}/order">'
                f'<input type="hidden" name="t" value="{_e(token)}">'
                f'<input type="hidden" name="lang" value="{lang}">'
                f'<label for="quantity">{_e(text["quantity"].format(max=MAX_QUANTITY))}</label>'
                f'<input id="quantity" name="quantity" type="number" inputmode="numeric" min="1" '
                f'max="{MAX_QUANTITY}" value="1" required>'
                f'<button type="submit">{_e(text["order"])}</button>'
                f'<p class="note">{_e(text["pickup_note"])}</p>'
                "</form>"
            )
        return "\n".join(parts)

    def ordered_page(lang: Lang, code: str, order: PlacedOrder) -> HTMLResponse:
        text = STRINGS[lang]
        total = format_money(order.total, order.currency, price_locale)
        parts = [
            f"<h1>{_e(text['ordered_title'])}</h1>",
            f"<p>{_e(text['ordered'])}</p>",
            f'<p class="number">{_e(order.order_number)}</p>',
            f"<p>{_e(text['total'])}: {_e(total)}</p>",
            f'<p class="note">{_e(text["ordered_note"])}</p>',
        ]
        checkout = order.checkout_url
        if checkout and checkout.startswith(("https://", "http://")):
            parts.append(f'<a class="button" href="{_e(checkout)}">{_e(text["pay"])}</a>')
        parts.append(f'<p><a href="../{_e(code)}?lang={lang}">{_e(text["back"])}</a></p>')
        return page(lang, "ordered_title", "\n".join(parts), switch=False)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            # Origin: null is what a sandboxed or no-referrer context sends: never ours.
            if origin == "null":
                return False
            referer = request.headers.get("referer")
            if not referer:
                return False
            parts = urllib.parse.urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        found = urllib.parse.urlsplit(origin)
        host = request.headers.get("host", "")
        return bool(found.netloc) and (found.netloc.lower() == host.lower() or origin.lower() == public_origin)

    # A plain Starlette route, not FastAPI's: the scan link is the hot path (bench.kiosk), and FastAPI's
    # dependency solving for its two parameters cost ~100 us a request there. GET implies HEAD.
    async def scan(request: Request) -> Response:
        raw_code: str = request.path_params["raw_code"]
        wait = limited(request)
        if wait:
            return too_many(request, wait)
        code = normalise_code(raw_code)
        if code is None:
            return not_found(request, "malformed_code")
        target = service.resolve(code)
        if target is None:
            return not_found(request, "unknown_code")
        decision = service.decide(target)
        ua = request.headers.get("user-agent")
        if request.method == "GET" and "lang" not in request.query_params and not is_preview_fetch(ua):
            await service.record(target, client_type(ua), decision.answer)
        if decision.location is not None:
            return Response(status_code=302, headers={"Location": decision.location, **redirect_headers})
        lang = lang_of(request)
        product = service.product(target.sku) if target.sku is not None else None
        if product is None:
            return message(lang, "no_product", status=200)
        return page(lang, "", product_body(lang, code, product, target), title=product.name)

    router.add_route(SCAN_PATH, scan, methods=["GET"], include_in_schema=False)

    @router.post("/s/{raw_code}/order", include_in_schema=False)
    async def order(raw_code: str, request: Request) -> Response:
        wait = limited(request)
        if wait:
            return too_many(request, wait)
        code = normalise_code(raw_code)
        target = service.resolve(code) if code is not None else None
        if code is None or target is None or target.sku is None:
            return not_found(request, "unknown_code")
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_FORM_BYTES):
            metrics.bad_input(BAD_INPUT_SOURCE, "form_too_large")
            return message(lang_of(request), "expired", status=413, switch=False)
        body = await request.body()
        form = urllib.parse.parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), max_num_fields=10)
        lang = pick_language((form.get("lang") or [""])[0], request.headers.get("accept-language"), default_lang)
        if not same_origin(request):
            metrics.bad_input(BAD_INPUT_SOURCE, "cross_origin_post")
            return message(lang, "expired", status=403, switch=False)
        nonce = service.tokens.check((form.get("t") or [""])[0], target.tag_id)
        if nonce is None:
            metrics.bad_input(BAD_INPUT_SOURCE, "bad_form_token")
            return message(lang, "expired", status=403, switch=False)
        used, earlier = service.tokens.outcome(nonce)
        if used:  # a double tap or a reload: the first answer again, no second order
            return ordered_page(lang, code, earlier)
        raw_quantity = (form.get("quantity") or [""])[0].strip()
        if not raw_quantity.isdigit() or not 1 <= int(raw_quantity) <= MAX_QUANTITY:
            metrics.bad_input(BAD_INPUT_SOURCE, "bad_quantity")
            return message(lang, "bad_quantity", status=400, switch=False)
        if not service.orders_enabled:
            return message(lang, "no_orders", status=503, switch=False)
        # Claimed before the first await: posts of one token sent at once place one order between them.
        claim = service.tokens.claim(nonce)
        if claim.used:
            return ordered_page(lang, code, claim.outcome)
        if claim.wait is not None:  # the same token in flight: its answer, once it has one
            first = await claim.wait
            return ordered_page(lang, code, first) if first is not None else message(lang, "failed", status=409,
                                                                                       switch=False)
        placed = None
        try:
            placed = await service.place_order(target, int(raw_quantity))
        except OrderUnavailableError:
            return message(lang, "failed", status=503, switch=False)
        except OrderError as exc:  # e.g. the product stopped being available since the page was shown
            log.info("order for pickup from tag %s refused: %s", target.tag_id, exc.message)
            return message(lang, "failed", status=409, switch=False)
        except Exception:  # the shopper gets a page, never a stack trace; the log has it
            log.exception("order for pickup from tag %s failed", target.tag_id)
            return message(lang, "failed", status=503, switch=False)
        finally:
            if placed is None:
                service.tokens.release(nonce)  # nothing placed (refused, failed or cancelled): it may be posted again
            else:
                service.tokens.use(nonce, placed)
        return ordered_page(lang, code, placed)

    @router.api_route("/s", methods=["GET", "HEAD"], include_in_schema=False)
    @router.api_route("/s/{rest:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def elsewhere(request: Request) -> Response:
        wait = limited(request)
        if wait:
            return too_many(request, wait)
        return not_found(request, "malformed_code")

    return router
