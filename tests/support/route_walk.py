"""The route walk (issue 6, "authorisation everywhere"): every route the app registers is requested without a
session and with every role below the one it needs, and must refuse; every guarded write must also refuse a
properly signed-in session that does not send its CSRF token.

It walks `app.routes` itself, so a router added later is walked without anyone listing it here. It talks HTTP
to a live agent (`base_url`), so the real middleware, cookies and dependencies answer. Used by
`tests/test_route_walk.py` and by `bench.ui` (its `unauthorized_routes` figure).

Blocking (sync httpx): when the agent runs in the caller's event loop, call it in a thread
(`await asyncio.to_thread(unauthorized_routes, ...)`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from edge_agent.services.web_users import Role
from edge_agent.web.auth import CSRF_HEADER, SAFE_METHODS, is_public, iter_routes

# Path parameter values the routes would plausibly see; anything else gets "1" (an int and a str alike).
_PLAUSIBLE = {
    "kiosk_id": "k1",
    "bank_id": "A",
    "bank": "A",
    "username": "nobody-here",
    "tag_id": "000000000001",
    "sku": "SKU-1",
    "compartment_id": "A-01",
    "compartment": "A-01",
    "device_id": "device-1",
    "board_id": "kerong-0",
    "board": "kerong-0",
    "station": "bs1",
    "name": "x",
    "code": "12345678",
    "raw_code": "12345678",
}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")
_REFUSED = {401, 403}
_TIMEOUT = httpx.Timeout(10.0)


@dataclass
class Account:
    role: Role
    cookie: str
    csrf: str


@dataclass
class RouteWalk:
    unauthorized: list[str] = field(default_factory=list)  # "METHOD path (as who)" that should have refused
    public: list[str] = field(default_factory=list)  # "METHOD path" skipped: public by policy
    checked: int = 0  # requests made


def fill_path(path: str) -> str:
    """`/api/x/{kiosk_id}/{n:int}` -> `/api/x/k1/1`."""

    def value(match: re.Match[str]) -> str:
        name, convertor = match.group(1), match.group(2)
        if convertor == "int":
            return "1"
        if convertor == "float":
            return "1.0"
        if convertor == "uuid":
            return str(uuid.UUID(int=1))
        if convertor == "path":
            return "a/b"
        return _PLAUSIBLE.get(name, "1")

    return _PARAM.sub(value, path)


def _sign_in(client: httpx.Client, username: str, password: str) -> tuple[str, str]:
    answer = client.post("/api/auth/login", json={"username": username, "password": password})
    if answer.status_code != 200:
        raise RuntimeError(f"route walk: cannot sign in {username}: {answer.status_code} {answer.text[:200]}")
    cookie = answer.cookies.get("edge_session")
    if not cookie:
        raise RuntimeError(f"route walk: signing in {username} set no session cookie")
    return cookie, str(answer.json()["csrf"])


def _routes(app: FastAPI) -> Iterator[tuple[str, str, Role | None, bool]]:
    """(method, path template, required role, is an API route) for every route, included routers flattened."""
    for info in iter_routes(app.routes):
        for method in sorted(info.methods):
            yield method, info.path, info.role, info.is_api


def _status(client: httpx.Client, method: str, path: str, headers: dict[str, str], cookie: str | None) -> tuple[
    int, str
]:
    """Only the status and Location: the body is never read (an unguarded stream would never end)."""
    kwargs: dict[str, Any] = {"headers": headers}
    if method not in SAFE_METHODS:
        kwargs["json"] = {}  # well-formed JSON, so a refusal cannot hide behind a body parse error
    if cookie is not None:
        client.cookies.set("edge_session", cookie)
    else:
        client.cookies.clear()
    request = client.build_request(method, path, **kwargs)
    response = client.send(request, stream=True)
    try:
        return response.status_code, response.headers.get("location", "")
    finally:
        response.close()


def _refused(status: int, location: str, page: bool) -> bool:
    return status in _REFUSED or (page and status == 303 and location.startswith("/login"))


def walk_routes(base_url: str, app: FastAPI, accounts: dict[str, tuple[str, str]]) -> RouteWalk:
    """Walk every route of `app` on the agent at `base_url`; `accounts` maps "staff", "technician" and
    "admin" to (username, password) of existing accounts (missing roles are simply not tried)."""
    walk = RouteWalk()
    with httpx.Client(base_url=base_url, timeout=_TIMEOUT, follow_redirects=False) as client:
        signed_in: dict[Role, Account] = {}
        for role_name, (username, password) in accounts.items():
            role = Role(role_name)
            cookie, csrf = _sign_in(client, username, password)
            signed_in[role] = Account(role, cookie, csrf)
        csrf_checks: list[tuple[str, str, Account]] = []
        for method, template, needed, is_api in _routes(app):
            if method in ("HEAD", "OPTIONS"):
                continue
            if is_public(template):
                walk.public.append(f"{method} {template}")
                continue
            path = fill_path(template)
            page = method == "GET" and not template.startswith("/api/")
            anonymous_headers = {"Accept": "text/html"} if page else {"Accept": "application/json"}
            status, location = _status(client, method, path, anonymous_headers, None)
            walk.checked += 1
            if not _refused(status, location, page):
                walk.unauthorized.append(f"{method} {template} (as anonymous: {status})")
            if not is_api or needed is None:
                # Neither public nor guarded: refused only if something else guards it; the anonymous try
                # above decided. (create_app refuses unguarded API routes, so this is a plain route.)
                continue
            for role, account in signed_in.items():
                if role.rank >= needed.rank:
                    continue
                headers = {"Accept": "application/json", CSRF_HEADER: account.csrf}
                status, _ = _status(client, method, path, headers, account.cookie)
                walk.checked += 1
                if status != 403:
                    walk.unauthorized.append(f"{method} {template} (as {role.value}: {status})")
            if method not in SAFE_METHODS:
                allowed = [a for r, a in signed_in.items() if r.rank >= needed.rank]
                if allowed:
                    csrf_checks.append((method, template, min(allowed, key=lambda a: a.role.rank)))
        # Last, so that a write which wrongly went through (a sign-out, say) cannot spoil the role checks.
        for method, template, account in csrf_checks:
            status, _ = _status(client, method, fill_path(template), {"Accept": "application/json"}, account.cookie)
            walk.checked += 1
            if status != 403:
                walk.unauthorized.append(f"{method} {template} (as {account.role.value} without CSRF: {status})")
            wrong = {"Accept": "application/json", CSRF_HEADER: "not-the-token"}
            status, _ = _status(client, method, fill_path(template), wrong, account.cookie)
            walk.checked += 1
            if status != 403:
                walk.unauthorized.append(
                    f"{method} {template} (as {account.role.value} with a wrong CSRF token: {status})"
                )
    return walk


def unauthorized_routes(base_url: str, app: FastAPI, accounts: dict[str, tuple[str, str]]) -> list[str]:
    """"METHOD path (as who: status)" for every request that should have been refused and was not; [] is good."""
    return walk_routes(base_url, app, accounts).unauthorized
