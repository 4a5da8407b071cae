"""Serving a touch-screen page and its assets: shared by the locker screen and the kiosk.

Each screen is one HTML page (a `string.Template` with `$name_ext` placeholders for its asset URLs) plus
CSS, JS and icons under `edge_agent/web/static/<folder>/` (vanilla, no build step, nothing from a CDN:
the store's internet may be down while the screen must keep working). The files are read once, when the
router is built, and only names listed in the bundle are served, so no request path reaches the disk.
Asset URLs carry a hash of the content (`?v=`), so a cached copy is always the right one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from string import Template

from fastapi import APIRouter
from fastapi.responses import Response

STATIC_PACKAGE = "edge_agent.web"


def content_security_policy(img_src: str = "'self'") -> str:
    """No inline script or style anywhere (the JS and CSS are files from 'self'): an injected string in a
    message can then never run. 'none' for everything the page does not use; no framing (clickjacking a
    shopper's screen), no form posts, no <base> rewriting. Only the image sources differ per page."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {img_src}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@dataclass(frozen=True)
class ScreenHeaders:
    """The headers of a page, its assets, and its 404s, for one Content-Security-Policy."""

    security: dict[str, str]
    page: dict[str, str]
    asset: dict[str, str]

    @classmethod
    def for_policy(cls, csp: str, referrer_policy: str = "no-referrer") -> ScreenHeaders:
        security = {
            "Content-Security-Policy": csp,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": referrer_policy,
        }
        return cls(
            security=security,
            # The page is never cached: after an upgrade the screen must load the new page (and asset URLs).
            page={**security, "Cache-Control": "no-store"},
            asset={**security, "Cache-Control": "public, max-age=86400, immutable"},
        )


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


class ScreenAssets:
    """The files of one screen (`static/<folder>/`): the page template, its assets, and their route."""

    def __init__(self, folder: str, assets: Mapping[str, str], headers: ScreenHeaders) -> None:
        self.folder = folder
        self.prefix = f"/static/{folder}"
        self.headers = headers
        self._assets: dict[str, _Asset] = {}
        for name, media_type in assets.items():
            body = self.read(name)
            self._assets[name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
        # "kiosk.js" -> $kiosk_js in the page template.
        self.urls = {
            name.replace(".", "_").replace("-", "_"): f"{self.prefix}/{name}?v={asset.version}"
            for name, asset in self._assets.items()
        }

    def read(self, name: str) -> bytes:
        return resources.files(STATIC_PACKAGE).joinpath("static", self.folder, name).read_bytes()

    def template(self, name: str) -> Template:
        return Template(self.read(name).decode("utf-8"))

    def add_route(self, router: APIRouter) -> None:
        """`GET /static/<folder>/{name}` for the listed assets; anything else is a 404."""
        assets, headers = self._assets, self.headers

        @router.get(self.prefix + "/{name}")
        async def asset(name: str) -> Response:
            found = assets.get(name)
            if found is None:
                return Response(b"not found\n", status_code=404, media_type="text/plain", headers=headers.security)
            return Response(found.body, media_type=found.media_type, headers=headers.asset)
