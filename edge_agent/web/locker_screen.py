"""The locker screen: the page a locker bank's touch screen shows (Chromium in kiosk mode), and its assets.

`GET /locker/{bank_id}` serves one HTML page; `GET /static/locker/{name}` serves its CSS and JS. The page
does everything through the JSON API (`locker_api.py` for customers, `locker_staff_api.py` for staff and
couriers). A public shopper page (DESIGN.md section 7): it holds no data of its own, only the bank's id.

The assets are files under `edge_agent/web/static/locker/`, served by `screen_assets.py` (read once, only
the names listed here, URLs with a content hash), as the kiosk's are.
"""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from edge_agent.services.lockers import LockerService
from edge_agent.web.locker_api import is_bank
from edge_agent.web.screen_assets import ScreenAssets, ScreenHeaders, content_security_policy

ASSETS = {
    "locker.css": "text/css; charset=utf-8",
    "locker.js": "text/javascript; charset=utf-8",
    # Our own icon: without one Chromium asks for /favicon.ico, and a 404 there is noise in the console.
    "icon.svg": "image/svg+xml",
}
# Only our own files: the locker screen shows no pictures from elsewhere.
CONTENT_SECURITY_POLICY = content_security_policy("'self'")
HEADERS = ScreenHeaders.for_policy(CONTENT_SECURITY_POLICY)


def locker_screen_router(lockers: LockerService) -> APIRouter:
    router = APIRouter(tags=["locker screen"])
    files = ScreenAssets("locker", ASSETS, HEADERS)
    page = files.template("index.html")
    not_found = files.read("not-found.html")

    @router.get("/locker/{bank_id}", response_class=HTMLResponse)
    async def screen(bank_id: str) -> Response:
        if not is_bank(lockers, bank_id):  # the page exists exactly when its API does
            return HTMLResponse(not_found, status_code=404, headers=HEADERS.page)
        # is_bank holds bank_id to letters, digits and "_.-"; escaped all the same.
        body = page.substitute(bank=html.escape(bank_id, quote=True), **files.urls)
        return HTMLResponse(body, headers=HEADERS.page)

    files.add_route(router)
    return router
