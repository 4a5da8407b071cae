"""Scan links: what a shopper's phone gets from a shelf tag's QR code, `{labels.public_base_url}/s/{code}`.

The web layer (`edge_agent/web/scan_links.py`) asks this service four things:
- which tag a code names (`resolve`: one indexed read of `tags.scan_code`, no product read on the hot path);
- where to send the shopper (`decide`: a 302 to `[scan_links].product_url_template`, or the local page);
- to record the scan (`record`: a `scan.tag` event, durable in the outbox before the answer goes out);
- and, from the local page, to place an order for pickup (`place_order`, through the kiosk's OrderService).

What a scan event holds is limited on purpose (DESIGN.md section 7, public shopper pages): the tag, its
product, and a coarse client type read from the User-Agent (`client_type`), never the address, the
User-Agent itself or a cookie. Requests that are not a shopper scanning (HEAD, link-preview fetchers and
crawlers, `is_preview_fetch`) are answered the same but not recorded.

The pieces that hold state are bounded: the rate limiter (services/rate_limits.TokenBucket) tracks at most
`MAX_TRACKED_CLIENTS` addresses and the order-form tokens at most `MAX_USED_TOKENS` used ones.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from cloud_link.outbox import OutboxFullError
from cloud_link.ports import DurableStore
from edge_agent.config import ScanLinksSection
from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.services.orders import OrderService, PlacedOrder
from edge_agent.services.rate_limits import TokenBucket

log = logging.getLogger(__name__)

SCAN_EVENT = "scan.tag"
# Codes the agent draws are 10 characters of devices.labels.registry.SCAN_ALPHABET; anything of plain
# lowercase letters and digits and sensible length is looked up (codes set by an import or a benchmark
# may use the whole range), anything else is malformed without touching the database.
SCAN_CODE_RE = re.compile(r"^[0-9a-z]{4,32}$")

ClientType = Literal["wechat", "alipay", "ios", "android", "desktop", "other"]
CLIENT_TYPES: tuple[ClientType, ...] = ("wechat", "alipay", "ios", "android", "desktop", "other")
Answer = Literal["redirect", "local_page", "no_product"]

# In-app browsers first (they also say iPhone or Android), then the platform.
_CLIENT_RULES: tuple[tuple[re.Pattern[str], ClientType], ...] = (
    (re.compile(r"MicroMessenger|WeChat|WXWork", re.I), "wechat"),
    (re.compile(r"AlipayClient|AliApp\(AP", re.I), "alipay"),
    (re.compile(r"iPhone|iPad|iPod|\bCPU OS\b", re.I), "ios"),
    (re.compile(r"Android|HarmonyOS|OpenHarmony", re.I), "android"),
    (re.compile(r"Windows NT|Macintosh|Mac OS X|X11|Linux x86_64|CrOS", re.I), "desktop"),
)
# Fetchers that open a link for a preview card or an index, not a shopper: chat apps' link previews
# (WhatsApp, Telegram, Slack, Discord, Skype, iMessage's "facebookexternalhit"), search and social crawlers
# (Baiduspider, Sogou's spiders, 360Spider, Bytespider, Googlebot, bingbot ...), and command-line HTTP tools.
# A bot names itself with "bot" glued to a name and followed by "/", "-", ";", "+", " (" or the
# end, so phone models (CUBOT X30) and Chinese in-app browsers (baiduboxapp, SogouMobileBrowser) still count
# as shoppers. WeChat has no documented preview User-Agent (its previews come from its servers with a
# desktop browser's); those cannot be told apart and are counted as desktop scans.
_PREVIEW_RE = re.compile(
    r"[a-z]bot(?:/|-|;|\+|\s\(|\s*$)|spider|crawler|slurp|preview|facebookexternalhit|^whatsapp/"
    r"|embedly|quora link|vkshare"
    r"|^curl/|^wget/|^python-|^go-http-client|^java/|^okhttp|^libwww|^apache-httpclient|^axios/|^node-fetch",
    re.I,
)

# Codes -> tags remembered (a store has a few thousand tags); emptied when full and on any pairing change.
MAX_CACHED_TARGETS = 50_000
FORM_TOKEN_TTL_S = 30 * 60
MAX_USED_TOKENS = 50_000
MAX_QUANTITY = 20
# An order from a tag's page is picked up (and paid) at the counter.
PICKUP_FULFILMENT = "counter"


# User-Agents repeat (a store's shoppers carry a few phone models and app versions), and matching the
# patterns above costs ~50 us a request (measured by bench.kiosk --profile): remembered, bounded.
@functools.lru_cache(maxsize=2048)
def client_type(user_agent: str | None) -> ClientType:
    """The coarse kind of client from a User-Agent: all a scan event says about who scanned."""
    if user_agent:
        for pattern, kind in _CLIENT_RULES:
            if pattern.search(user_agent):
                return kind
    return "other"


@functools.lru_cache(maxsize=2048)
def is_preview_fetch(user_agent: str | None) -> bool:
    """A link-preview fetcher, crawler or HTTP tool rather than a shopper's browser (not recorded)."""
    return bool(user_agent) and _PREVIEW_RE.search(user_agent or "") is not None


def normalise_code(raw: str) -> str | None:
    """The code as stored (lowercase), or None when it cannot be one (never reaches the database)."""
    if len(raw) > 32:
        return None
    code = raw.lower()
    return code if SCAN_CODE_RE.fullmatch(code) else None


# -- order-form tokens ----------------------------------------------------------------------------


class FormTokens:
    """A signed, single-use token in the local page's order form (CSRF defence with no session).

    The page is public, so there is no session to bind a CSRF token to. The token is an HMAC over the tag,
    the time it was issued and a random nonce, under a key only the agent knows: a form can only be posted
    with a token the agent handed out within `ttl_s` for that very tag, which a page on another origin cannot
    read (the same-origin policy). The web layer also checks Origin/Referer. Each nonce is accepted once, so
    a double tap or a reload of the confirmation does not order twice (the first order's answer is kept and
    shown again).

    Once: `claim` marks a nonce in progress before the order is placed (no await between the look and the mark),
    so posts of one token sent at once place one order; the others wait for that first answer (`Claim.wait`).
    A first attempt that placed nothing (`release`) frees the nonce for another try.
    """

    def __init__(self, key: bytes, *, ttl_s: float = FORM_TOKEN_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock
        self._used: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # nonce -> (expires, outcome)
        self._in_progress: dict[str, asyncio.Future[Any]] = {}  # nonce -> the first post's outcome, once known

    def issue(self, tag_id: str) -> str:
        issued = int(self._clock())
        nonce = secrets.token_urlsafe(12)
        body = f"{tag_id}.{issued}.{nonce}"
        return f"{body}.{self._mac(body)}"

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def check(self, token: str, tag_id: str) -> str | None:
        """The token's nonce when it is genuine, for this tag and fresh; None otherwise."""
        parts = token.split(".")
        if len(token) > 200 or len(parts) != 4:
            return None
        tag, issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{tag}.{issued}.{nonce}")):
            return None
        if tag != tag_id or not issued.isdigit():
            return None
        age = self._clock() - int(issued)
        if age < -60 or age > self.ttl_s:
            return None
        return nonce

    def outcome(self, nonce: str) -> tuple[bool, Any]:
        """(True, what was stored) when the nonce was used already."""
        self._expire()
        found = self._used.get(nonce)
        return (False, None) if found is None else (True, found[1])

    def claim(self, nonce: str) -> Claim:
        """The nonce for this request, unless it was used (`used`, with its outcome) or another request holds it
        (`wait`: the outcome it will end with, None if it placed nothing). The caller that gets neither must end
        with `use` or `release`."""
        used, outcome = self.outcome(nonce)
        if used:
            return Claim(used=True, outcome=outcome)
        first = self._in_progress.get(nonce)
        if first is not None:
            return Claim(wait=asyncio.shield(first))
        self._in_progress[nonce] = asyncio.get_running_loop().create_future()
        return Claim()

    def use(self, nonce: str, outcome: Any) -> None:
        self._expire()
        while len(self._used) >= MAX_USED_TOKENS:
            self._used.popitem(last=False)
        self._used[nonce] = (self._clock() + self.ttl_s + 60, outcome)
        self._settle(nonce, outcome)

    def release(self, nonce: str) -> None:
        """The claim placed nothing: requests waiting on it learn that (None), and the nonce may be posted again."""
        self._settle(nonce, None)

    def _settle(self, nonce: str, outcome: Any) -> None:
        first = self._in_progress.pop(nonce, None)
        if first is not None and not first.done():
            first.set_result(outcome)

    def _expire(self) -> None:
        now = self._clock()
        while self._used:
            nonce, (expires, _) = next(iter(self._used.items()))
            if expires > now:
                break
            del self._used[nonce]


@dataclass(frozen=True)
class Claim:
    """What `FormTokens.claim` found: used already (and its outcome), held by a request in flight (await `wait`
    for its outcome), or neither (this request holds it now)."""

    used: bool = False
    outcome: Any = None
    wait: Awaitable[Any] | None = None


def form_key(store_key: bytes | None) -> bytes:
    """Derived from the store's HMAC key when there is one (tokens survive a restart), else random."""
    if store_key is None:
        return secrets.token_bytes(32)
    return hmac.new(store_key, b"edge-agent scan-link order form v1", hashlib.sha256).digest()


# -- the service ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanTarget:
    tag_id: str
    sku: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    answer: Answer
    location: str | None = None  # the redirect's target when answer == "redirect"


class ScanLinkService:
    def __init__(
        self,
        db: DurableStore,
        catalog: ProductCatalog,
        publish: Callable[[str, dict[str, Any]], Awaitable[Any]],
        settings: ScanLinksSection,
        *,
        store_id: str,
        cloud_up: Callable[[], bool],
        form_secret: bytes,
        orders: OrderService | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._db = db
        self.catalog = catalog
        self._publish = publish
        self.settings = settings
        self.store_id = store_id
        self._cloud_up = cloud_up
        self._orders = orders  # the local order form's; None: the form is not offered
        self.limiter = TokenBucket(settings.rate_limit_per_minute, settings.rate_limit_burst)
        # Form tokens age on the agent's steady clock when given one: a wall clock stepped while a shopper fills
        # in the form neither expires the form nor keeps it alive.
        self.tokens = FormTokens(form_secret) if clock is None else FormTokens(form_secret, clock=clock)
        self.recorded = 0
        self.not_recorded = 0
        # A read on the event loop per scan costs more than it looks under load (the sqlite call releases the
        # GIL and waits to get it back from the writer thread): known codes are remembered. A code's tag never
        # changes; its sku changes only through pair_tags or a product's deletion, both of which announce
        # on_pairing_change, which empties the memory. Unknown codes are not remembered (a tag adopted later
        # gets its code then), so guessing costs a read, at the rate limit's pace. wiring/scan_links.py connects
        # forget_targets to the catalog.
        self._targets: dict[str, ScanTarget] = {}

    def forget_targets(self, tag_ids: list[str]) -> None:
        self._targets.clear()

    def resolve(self, code: str) -> ScanTarget | None:
        """The tag a (normalised) code names: remembered, else one read on the unique index of tags.scan_code."""
        found = self._targets.get(code)
        if found is not None:
            return found
        row = self._db.read(lambda c: c.execute("SELECT tag_id, sku FROM tags WHERE scan_code = ?", (code,)).fetchone())
        if row is None:
            return None
        if len(self._targets) >= MAX_CACHED_TARGETS:
            self._targets.clear()
        target = ScanTarget(str(row[0]), None if row[1] is None else str(row[1]))
        self._targets[code] = target
        return target

    def decide(self, target: ScanTarget) -> Decision:
        if target.sku is None:
            return Decision("no_product")
        template = self.settings.product_url_template
        mode = self.settings.local_page
        if template is None or mode == "always" or (mode == "when_cloud_down" and not self._cloud_up()):
            return Decision("local_page")
        quote = urllib.parse.quote
        location = template.format(
            sku=quote(target.sku, safe=""), store_id=quote(self.store_id, safe=""), tag_id=quote(target.tag_id, safe="")
        )
        return Decision("redirect", location)

    async def record(self, target: ScanTarget, client: ClientType, answer: Answer) -> bool:
        """The scan as a durable scan.tag event; False when the outbox refused it (full: alarm raised).

        A full outbox never keeps a shopper from the product: the answer goes out all the same.
        """
        payload = {"tag_id": target.tag_id, "sku": target.sku, "client": client, "answer": answer}
        try:
            await self._publish(SCAN_EVENT, payload)
        except OutboxFullError:
            self.not_recorded += 1
            log.error("scan of tag %s not recorded: the outbox is full", target.tag_id)
            return False
        self.recorded += 1
        return True

    def product(self, sku: str) -> Product | None:
        return self.catalog.get(sku)

    @property
    def orders_enabled(self) -> bool:
        """Orders for pickup from the local page: an order service that offers pickup at the counter."""
        orders = self._orders
        return orders is not None and PICKUP_FULFILMENT in orders.fulfilments()

    async def place_order(self, target: ScanTarget, quantity: int) -> PlacedOrder:
        """Raises OrderError (refused: e.g. no longer available) or OrderUnavailableError (outbox full)."""
        orders = self._orders
        if orders is None or target.sku is None:
            raise RuntimeError("ordering is not available")
        return await orders.place(
            source=f"tag:{target.tag_id}", items=[(target.sku, quantity)], fulfilment=PICKUP_FULFILMENT
        )


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
