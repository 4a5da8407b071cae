"""`GET /docs` (technician): Swagger UI on the agent's OpenAPI document, from local files only.

The store's internet may be down and the UI must not reach a CDN, so Swagger UI's files come from the
`swagger-ui-py` package (PyPI; it ships swagger-ui-dist 5.x, which reads the OpenAPI 3.1 documents FastAPI
writes; only its static files are used) and are served by the agent, behind sign-in like the document itself
(`/openapi.json`). The page's start-up is a file (`static/docs/init.js`), not an
inline script. Its CSP is the admin pages' except for `style-src`: Swagger UI's React components set inline
styles, which 'unsafe-inline' for styles (never for scripts) allows.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from edge_agent.services.web_users import Role
from edge_agent.web.auth import require

DOCS_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_SECURITY = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# name served under /docs/assets/ -> (where it comes from, media type)
_SWAGGER_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
}
_OWN_FILES = {
    "init.js": "text/javascript; charset=utf-8",
    "docs.css": "text/css; charset=utf-8",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>JSON API · Store Edge Agent</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="stylesheet" href="/docs/assets/docs.css">
</head>
<body>
<header class="docs-top"><a href="/">Store Edge Agent</a>
<span>JSON API (OpenAPI: <a href="/openapi.json">/openapi.json</a>)</span></header>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
"""


@functools.cache
def _asset(name: str) -> bytes:
    # Read on first use (the bundle is ~1.5 MB), then kept.
    if name in _SWAGGER_FILES:
        return resources.files("swagger_ui").joinpath("static", name).read_bytes()
    return resources.files("edge_agent.web").joinpath("static", "docs", name).read_bytes()


def api_docs_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[Depends(require(Role.TECHNICIAN))])
    media = {**_SWAGGER_FILES, **_OWN_FILES}

    @router.get("/docs", response_class=HTMLResponse)
    def docs_page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={**_SECURITY, "Cache-Control": "no-store"})

    @router.get("/docs/assets/{name}")
    def docs_asset(name: str) -> Response:
        if name not in media:
            return Response(b"not found\n", status_code=404, media_type="text/plain", headers=_SECURITY)
        return Response(
            _asset(name), media_type=media[name], headers={**_SECURITY, "Cache-Control": "private, max-age=3600"}
        )

    return router
