"""Who may call what: sessions, roles and CSRF for every route of the technician web UI and its JSON API.

Every route needs a signed-in session with a role (`require(Role.X)` as a dependency) unless it is one of
the public routes of `PUBLIC_ROUTES`: the shopper pages (kiosk, locker screen, scan links, which carry
their own bearer sessions where they need one), `/healthz`, `/metrics`, the sign-in and setup pages, and
the admin pages' static files. `check_route_policy(app)` runs when the app is built and refuses a route
that is neither, so a new endpoint without a policy cannot ship by accident (DESIGN.md section 7).

State-changing requests (anything but GET/HEAD/OPTIONS) also need the session's CSRF token in the
`X-CSRF-Token` header, and a request whose `Origin` names another site is refused before anything else.
API routes answer 401/403 JSON; page routes send a browser that is not signed in to `/login`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from edge_agent.services.web_sessions import WebSession, WebSessions
from edge_agent.services.web_users import Role, WebUsers

SESSION_COOKIE = "edge_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Path templates (as FastAPI registers them) that need no web UI session. Anything else needs `require`.
PUBLIC_ROUTES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"/healthz",
        r"/metrics",
        # Shopper pages and their APIs (DESIGN.md section 7): they read and act only on what a shopper may.
        r"/kiosk/\{kiosk_id\}(/api/.*)?",
        r"/locker/\{bank_id\}(/api/.*)?",
        r"/s",
        r"/s/\{[a-z_]+(:path)?\}(/order)?",
        r"/static/(kiosk|locker|scan)/\{name\}",
        # What a browser needs before it has a session.
        r"/login",
        r"/setup",
        r"/api/auth/(state|login|setup)",
        r"/static/admin/\{name\}",
        r"/favicon\.ico",
    )
)


def is_public(path: str) -> bool:
    return any(p.fullmatch(path) for p in PUBLIC_ROUTES)


class NotSignedInError(HTTPException):
    def __init__(self) -> None:
        super().__init__(401, "sign in first")


@dataclass
class WebAuth:
    """What the auth dependencies need; kept on `app.state.auth`."""

    users: WebUsers
    sessions: WebSessions
    # The HTTPS port, when the agent serves one: the admin pages then send non-loopback plain-HTTP visitors
    # there, so a password never crosses the store's LAN in clear.
    https_port: int | None = None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def same_origin(request: Request) -> bool:
    """False when the request names an Origin (or, lacking one, a Referer) on another host and port."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin == "null":
        # What a sandboxed frame sends, but also what a browser sends for its own page's POST when the page's
        # referrer policy is no-referrer (the Fetch standard; Firefox does). Sec-Fetch-Site is set by the
        # browser and cannot be forged by a page: it tells the two apart.
        return request.headers.get("sec-fetch-site") == "same-origin"
    if not origin:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.netloc.lower() == host.lower()


def _refuse(status: int, error: str, message: str) -> HTTPException:
    return HTTPException(status, {"error": error, "message": message})


def _make_require(role: Role) -> Callable[[Request], Awaitable[WebSession]]:
    async def require_session(request: Request) -> WebSession:
        auth: WebAuth = request.app.state.auth
        if request.method not in SAFE_METHODS and not same_origin(request):
            raise _refuse(403, "cross_origin", "requests from other sites are refused")
        token = request.cookies.get(SESSION_COOKIE)
        session = await auth.sessions.use(token) if token else None
        if session is None:
            raise NotSignedInError()
        if not session.role.allows(role):
            raise _refuse(403, "forbidden", f"this needs the {role.value} role")
        if request.method not in SAFE_METHODS and not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            raise _refuse(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
        request.state.web_session = session
        return session

    require_session.required_role = role  # type: ignore[attr-defined]
    require_session.__name__ = f"require_{role.value}"
    return require_session


_REQUIRE = {role: _make_require(role) for role in Role}


def require(role: Role) -> Callable[[Request], Awaitable[WebSession]]:
    """The dependency that admits a signed-in session of `role` or higher (and checks CSRF on writes).
    One function per role, so FastAPI runs it once per request however many times a route names it."""
    return _REQUIRE[role]


def required_role(route: Any) -> Role | None:
    """The lowest role the route's dependencies demand; None when it demands none. `route` is an APIRoute or
    a `RouteInfo.context` (which also carries the dependencies of the routers it was included through)."""
    roles: list[Role] = []

    def walk(dependant: Dependant) -> None:
        for dep in dependant.dependencies:
            role = getattr(dep.call, "required_role", None)
            if isinstance(role, Role):
                roles.append(role)
            walk(dep)

    dependant = getattr(route, "dependant", None)
    if isinstance(dependant, Dependant):
        walk(dependant)
    return max(roles, key=lambda r: r.rank) if roles else None


@dataclass(frozen=True)
class RouteInfo:
    """One route as the app serves it: full path template, methods, and who may call it."""

    path: str
    methods: frozenset[str]
    role: Role | None  # the role its dependencies require; None: none (public, or a hole)
    is_api: bool  # a FastAPI route (dependencies apply); False: a plain Starlette route or a mount
    context: Any  # the APIRoute / Route / Mount, or FastAPI's RouteContext for an included router's route


def iter_routes(routes: Iterable[Any]) -> Iterator[RouteInfo]:
    """Every route of `app.routes`, included routers flattened. FastAPI 0.16x keeps an included router as one
    `_IncludedRouter` entry in `app.routes` (its routes resolved lazily, with the prefixes and dependencies of
    the routers it was included through): a plain walk of `app.routes` would see none of its routes."""
    try:
        from fastapi.routing import iter_route_contexts  # noqa: PLC0415 - FastAPI >= 0.16x only
    except ImportError:  # older FastAPI copies included routes into app.routes
        contexts: Iterable[Any] = list(routes)
    else:
        contexts = iter_route_contexts(list(routes))
    for ctx in contexts:
        original = getattr(ctx, "original_route", ctx)
        path = getattr(ctx, "path", None)
        if not isinstance(path, str):
            continue
        if isinstance(original, APIRoute):
            yield RouteInfo(path, frozenset(ctx.methods or ()), required_role(ctx), True, ctx)
        elif isinstance(original, Mount):
            yield RouteInfo(path.rstrip("/") + "/{path:path}", frozenset({"GET"}), None, False, ctx)
        elif isinstance(original, Route):
            methods = frozenset(ctx.methods or {"GET"}) - {"HEAD"}
            yield RouteInfo(path, methods, None, False, ctx)


def check_route_policy(routes: Iterable[Any]) -> None:
    """Refuse to build an app with a route that is neither public nor guarded by `require` (a plain Starlette
    route or mount cannot carry `require`, so one that is not public is refused too)."""
    unguarded = [
        f"{sorted(info.methods)} {info.path}"
        for info in iter_routes(routes)
        if not is_public(info.path) and info.role is None
    ]
    if unguarded:
        raise RuntimeError("routes without an access policy (add require(Role...)): " + ", ".join(unguarded))


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def install_auth(app: FastAPI, auth: WebAuth) -> None:
    """Keep `auth` on the app, send signed-out browsers to /login, and keep admin traffic off plain HTTP."""
    app.state.auth = auth

    @app.exception_handler(NotSignedInError)
    async def not_signed_in(request: Request, exc: NotSignedInError) -> Response:
        if wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return JSONResponse({"error": "not_signed_in", "message": "sign in first"}, status_code=401)

    # Pure ASGI, not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps every request, the scan
    # links included, in a task and a pair of memory streams, which cost the scan links 40 % of their
    # throughput (issue 13, measured by bench.kiosk). This one looks at the scope and passes it on.
    app.add_middleware(AdminOverHttps, auth=auth)


class AdminOverHttps:
    """Send a remote browser's plain-HTTP request for an admin page to the same path on the HTTPS port.

    Shopper pages and probes stay on HTTP (`_is_public_path`), and so does everything from loopback (the
    demo, the tests, a technician's SSH tunnel); with no HTTPS port configured nothing is redirected."""

    def __init__(self, app: ASGIApp, auth: WebAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._must_redirect(scope):
            request = Request(scope)
            host = (request.url.hostname or "localhost").strip("[]")
            host = f"[{host}]" if ":" in host else host
            query = f"?{request.url.query}" if request.url.query else ""
            target = f"https://{host}:{self.auth.https_port}{request.url.path}{query}"
            await RedirectResponse(target, status_code=308)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _must_redirect(self, scope: Scope) -> bool:
        if self.auth.https_port is None or scope.get("scheme") == "https":
            return False
        client = scope.get("client")
        return not is_loopback(client[0] if client else None) and not _is_public_path(scope["path"])


_PUBLIC_PATH_PREFIXES = ("/kiosk/", "/locker/", "/s/", "/static/kiosk/", "/static/locker/", "/static/scan/")


def _is_public_path(path: str) -> bool:
    """The concrete request paths of the shopper pages and probes, which stay on plain HTTP (a kiosk's
    Chromium and a phone following a tag's QR code must not meet a self-signed certificate)."""
    return path in ("/healthz", "/metrics", "/s") or path.startswith(_PUBLIC_PATH_PREFIXES)


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
        path="/",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request))
