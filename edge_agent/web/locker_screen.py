"""The locker screen: the page a locker bank's touch screen shows (Chromium in kiosk mode), and its assets.

`GET /locker/{bank_id}` serves one HTML page; `GET /static/locker/{name}` serves its CSS and JS. The page
does everything through the JSON API (`locker_api.py` for customers, `locker_staff_api.py` for staff and
couriers). A public shopper page (DESIGN.md section 7): it holds no data of its own, only the bank's id.

The assets are files under `edge_agent/web/static/locker/` (vanilla JS and CSS, no build step, nothing
from a CDN: the store's internet may be down while the screen must keep working). They are read once,
when the router is built, and only names in `ASSETS` are served, so no request path reaches the disk.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from string import Template

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from edge_agent.services.lockers import LockerService
from edge_agent.web.locker_api import is_bank

STATIC_PACKAGE = "edge_agent.web"
STATIC_DIR = ("static", "locker")
ASSETS_PREFIX = "/static/locker"
ASSETS = {
    "locker.css": "text/css; charset=utf-8",
    "locker.js": "text/javascript; charset=utf-8",
    # Our own icon: without one Chromium asks for /favicon.ico, and a 404 there is noise in the console.
    "icon.svg": "image/svg+xml",
}

# No inline script or style anywhere (the JS and CSS are files from 'self'): an injected string in a
# message can then never run. 'none' for everything the page does not use; no framing (clickjacking a
# door-opening screen), no form posts, no <base> rewriting.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page is never cached: after an upgrade the screen must load the new page (and its new asset URLs).
PAGE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
# Asset URLs carry a hash of their content, so a cached copy is always the right one.
ASSET_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400, immutable"}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


def _read(name: str) -> bytes:
    return resources.files(STATIC_PACKAGE).joinpath(*STATIC_DIR, name).read_bytes()


def _load_assets() -> dict[str, _Asset]:
    assets = {}
    for name, media_type in ASSETS.items():
        body = _read(name)
        assets[name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


def locker_screen_router(lockers: LockerService) -> APIRouter:
    router = APIRouter(tags=["locker screen"])
    assets = _load_assets()
    page = Template(_read("index.html").decode("utf-8"))
    not_found = _read("not-found.html")
    urls = {
        name.replace(".", "_"): f"{ASSETS_PREFIX}/{name}?v={asset.version}" for name, asset in assets.items()
    }

    @router.get("/locker/{bank_id}", response_class=HTMLResponse)
    async def screen(bank_id: str) -> Response:
        if not is_bank(lockers, bank_id):  # the page exists exactly when its API does
            return HTMLResponse(not_found, status_code=404, headers=PAGE_HEADERS)
        # is_bank holds bank_id to letters, digits and "_.-"; escaped all the same.
        body = page.substitute(bank=html.escape(bank_id, quote=True), **urls)
        return HTMLResponse(body, headers=PAGE_HEADERS)

    @router.get(ASSETS_PREFIX + "/{name}")
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return Response(b"not found\n", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
        return Response(found.body, media_type=found.media_type, headers=ASSET_HEADERS)

    return router
