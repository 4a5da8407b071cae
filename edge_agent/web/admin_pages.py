"""The technician web UI's pages: one shell (`static/admin/shell.html`) per page, each with its own script.

A page is HTML with no data in it; its script fetches everything from the JSON API, so the page itself needs
only the role its API does (a page a role may not use redirects a signed-out browser to /login and answers
403 to a signed-in one). The sign-in and setup pages are public. Assets are served as the kiosk's and the
locker screen's are (`screen_assets.py`: read once, listed names only, content-hashed URLs, strict CSP).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edge_agent.services.web_users import Role, WebUsers
from edge_agent.web.auth import require
from edge_agent.web.screen_assets import ScreenAssets, ScreenHeaders, content_security_policy


@dataclass(frozen=True)
class Page:
    path: str
    name: str  # data-page, and the script: static/admin/<name>.js
    title: str
    role: Role | None  # None: public (sign-in, setup)


# Every page of the UI. A page's script is static/admin/<name>.js, listed in ASSETS by `_assets()`.
PAGES: tuple[Page, ...] = (
    Page("/login", "login", "Sign in", None),
    Page("/setup", "setup", "Setup", None),
    Page("/", "dashboard", "Dashboard", Role.STAFF),
    Page("/ui/devices", "devices", "Devices", Role.TECHNICIAN),
    Page("/ui/discovery", "discovery", "Discovery", Role.TECHNICIAN),
    Page("/ui/pairing", "pairing", "Pairing", Role.TECHNICIAN),
    Page("/ui/lockers", "lockers", "Lockers", Role.STAFF),
    Page("/ui/picking", "picking", "Picking", Role.STAFF),
    Page("/ui/shelves", "shelves", "Pickup shelves", Role.STAFF),  # technicians also define shelves there
    Page("/ui/events", "events", "Events and audit", Role.TECHNICIAN),
    Page("/ui/config", "config", "Configuration", Role.ADMIN),
    Page("/ui/users", "users", "Users", Role.ADMIN),
    Page("/ui/account", "account", "Account", Role.STAFF),  # any role: my password (the name in the header links here)
)

_SCRIPT_OF = {"setup": "login"}  # the setup page shares the sign-in page's script


def _script(page: Page) -> str:
    return _SCRIPT_OF.get(page.name, page.name) + ".js"


def _assets() -> dict[str, str]:
    assets = {
        "admin.css": "text/css; charset=utf-8",
        "admin.js": "text/javascript; charset=utf-8",
        "icon.svg": "image/svg+xml",
    }
    for page in PAGES:
        assets[_script(page)] = "text/javascript; charset=utf-8"
    return assets


# Tag previews are PNGs served by the agent (self) or built as blob:/data: URLs by the page's script.
CONTENT_SECURITY_POLICY = content_security_policy("'self' data: blob:")
# same-origin, not no-referrer: under no-referrer browsers may send `Origin: null` with the pages' own API writes
# (the Fetch standard says so, Firefox did), which auth.same_origin must treat as another site.
HEADERS = ScreenHeaders.for_policy(CONTENT_SECURITY_POLICY, referrer_policy="same-origin")


def admin_pages_router(store_id: str, users: WebUsers) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = ScreenAssets("admin", _assets(), HEADERS)
    shell = files.template("shell.html")
    store = html.escape(store_id, quote=True)

    def render(page: Page) -> HTMLResponse:
        body = shell.substitute(
            title=html.escape(page.title), page=page.name, store=store,
            page_js=files.urls[_script(page).replace(".", "_")], **files.urls,
        )
        return HTMLResponse(body, headers=HEADERS.page)

    def add(page: Page) -> None:
        if page.role is None:
            def public_page(request: Request) -> Response:
                if page.name == "login" and users.count() == 0:
                    return RedirectResponse("/setup", status_code=303)  # nobody could sign in yet
                return render(page)

            router.add_api_route(page.path, public_page, methods=["GET"], response_class=HTMLResponse)
            return
        guard: Callable[..., object] = require(page.role)

        def guarded_page() -> Response:
            return render(page)

        router.add_api_route(
            page.path, guarded_page, methods=["GET"], response_class=HTMLResponse, dependencies=[Depends(guard)]
        )

    for page in PAGES:
        add(page)

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(files.read("icon.svg"), media_type="image/svg+xml", headers=HEADERS.asset)

    files.add_route(router)
    return router
