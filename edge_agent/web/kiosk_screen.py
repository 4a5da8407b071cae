"""The kiosk page: what a touch kiosk (Chromium in kiosk mode) shows, and its assets.

`GET /kiosk/{kiosk_id}` serves one HTML page; `GET /static/kiosk/{name}` serves its CSS, JS and icon. The page
does everything through the kiosk's JSON API and live stream (`kiosk_api.py`, contract in docs/kiosk-api.md).
A public shopper page (DESIGN.md section 7): it holds no data of its own, only the kiosk's id and language.

The files are under `edge_agent/web/static/kiosk/`, served by `screen_assets.py` as the locker screen's are.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from edge_agent.services.kiosks import KioskHub
from edge_agent.web.screen_assets import ScreenAssets, ScreenHeaders, content_security_policy

ASSETS = {
    "kiosk.css": "text/css; charset=utf-8",
    "kiosk.js": "text/javascript; charset=utf-8",
    # Our own icon: without one Chromium asks for /favicon.ico, and a 404 there is noise in the console.
    "icon.svg": "image/svg+xml",
}
# Product pictures are the catalog's `image_url`s (https only, on the retailer's CDN: the agent never
# fetches them), QR codes are SVGs from the kiosk's API ('self'); data: for pictures inlined by a catalog.
# Scripts, styles and connections (fetch, EventSource) stay 'self' only, as on the locker screen.
CONTENT_SECURITY_POLICY = content_security_policy("'self' https: data:")
HEADERS = ScreenHeaders.for_policy(CONTENT_SECURITY_POLICY)
LANGS = ("zh-CN", "en")


def kiosk_screen_router(kiosks: KioskHub) -> APIRouter:
    router = APIRouter(tags=["kiosk"])
    files = ScreenAssets("kiosk", ASSETS, HEADERS)
    page = files.template("index.html")
    not_found = files.read("not-found.html")

    @router.get("/kiosk/{kiosk_id}", response_class=HTMLResponse)
    async def screen(kiosk_id: str) -> Response:
        spec = kiosks.get(kiosk_id)  # the page exists exactly when its API does
        if spec is None:
            return HTMLResponse(not_found, status_code=404, headers=HEADERS.page)
        lang = spec.lang if spec.lang in LANGS else "en"
        # Kiosk ids are letters, digits and "_.-" (KIOSK_ID_RE); escaped all the same.
        body = page.substitute(kiosk=html.escape(spec.id, quote=True), lang=lang, **files.urls)
        return HTMLResponse(body, headers=HEADERS.page)

    files.add_route(router)
    return router
