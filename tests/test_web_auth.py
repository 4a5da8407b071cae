"""Sign-in of the technician web UI over HTTP, on the real app and a real migrated SQLite file: the setup
token works once, the password policy, login throttling (per account and per client address, growing
lockouts, 429 with Retry-After), CSRF and cross-origin refusal, cookie flags, roles, and every way a session
ends (sign-out, a password change, a new role, removal, idle and absolute expiry).

The app is called in-process (httpx's ASGI transport: any client address, http or https scheme) with a clock
the test moves, and light argon2id parameters (the type is what matters here; tests hash many times)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from argon2 import PasswordHasher, Type
from fastapi import FastAPI

from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from edge_agent.metrics import AgentMetrics
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import Role, WebUsers
from edge_agent.storage import Database
from edge_agent.web.app import WebContext, create_app

LIGHT = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
HOST = "edge.test"
GOOD = "correct horse battery"
T0 = 1_800_000_000_000


class MsClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@dataclass
class Rig:
    app: FastAPI
    users: WebUsers
    sessions: WebSessions
    clock: MsClock

    def client(self, address: str = "127.0.0.1", *, https: bool = False) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=f"{'https' if https else 'http'}://{HOST}")

    async def signed_in(self, username: str, password: str = GOOD, address: str = "127.0.0.1") -> Browser:
        http = self.client(address)
        answer = await http.post("/api/auth/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        return Browser(http, answer.json()["csrf"])


@dataclass
class Browser:
    http: httpx.AsyncClient
    csrf: str

    async def write(self, method: str, path: str, json: object = None) -> httpx.Response:
        return await self.http.request(method, path, json=json, headers={"X-CSRF-Token": self.csrf})

    async def me(self) -> int:
        return (await self.http.get("/api/auth/me")).status_code

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()  # the client is already open (it signed in), so `async with` it directly fails


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = Database(tmp_path / "data")
    try:
        outbox = Outbox(db, Topics("retail/v1", "s-1"), max_bytes=1 << 20)
        await outbox.open()
        clock = MsClock()
        users = WebUsers(db, hasher=LIGHT, clock=clock)
        sessions = WebSessions(db, clock=clock)
        app = create_app(WebContext(store_id="s-1", outbox=outbox, metrics=AgentMetrics(), session=None,
                                    users=users, sessions=sessions))
        yield Rig(app, users, sessions, clock)
    finally:
        db.close()


async def test_the_setup_token_creates_the_first_admin_once(rig: Rig) -> None:
    token = await rig.users.ensure_setup_token()
    assert token is not None
    async with rig.client() as http, rig.client("10.0.0.66") as guesser:
        assert (await http.get("/api/auth/state")).json() == {"setup_needed": True}
        assert (await http.get("/login", headers={"Accept": "text/html"})).headers["location"] == "/setup"
        # Guessing tokens: refused, then the guessing address is locked out, even with the right token.
        for n in range(5):
            wrong = await guesser.post("/api/auth/setup", json={"token": f"{n:06d}", "username": "eve",
                                                                "password": GOOD})
            assert wrong.status_code in (400, 429)
        locked = await guesser.post("/api/auth/setup", json={"token": token, "username": "eve", "password": GOOD})
        assert locked.status_code == 429 and locked.json()["detail"]["error"] == "locked_out"
        assert rig.users.count() == 0
        # Too short a password is refused before the token is spent.
        short = await http.post("/api/auth/setup", json={"token": token, "username": "boss", "password": "short pass"})
        assert short.status_code == 422
        made = await http.post("/api/auth/setup", json={"token": token, "username": "boss", "password": GOOD})
        assert made.status_code == 200, made.text
        assert made.json()["user"]["role"] == "admin" and made.json()["csrf"]
        assert (await http.get("/api/auth/me")).json()["username"] == "boss"
        # Used up: the same token again, from anyone, creates nothing; no new token is drawn.
        again = await http.post("/api/auth/setup", json={"token": token, "username": "boss2", "password": GOOD})
        assert again.status_code == 400 and again.json()["detail"]["error"] == "setup_refused"
        assert rig.users.count() == 1
        assert await rig.users.ensure_setup_token() is None and rig.users.setup_token() is None
        assert (await http.get("/api/auth/state")).json() == {"setup_needed": False}


async def test_the_password_policy(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    admin = await rig.signed_in("boss")
    async with admin:
        eleven = await admin.write("POST", "/api/users", {"username": "li", "password": "x" * 5 + "abcdef",
                                                          "role": "staff"})
        assert eleven.status_code == 422
        common = await admin.write("POST", "/api/users", {"username": "li", "password": "password1234",
                                                          "role": "staff"})
        assert common.status_code == 400 and "common" in common.json()["detail"]["message"]
        named = await admin.write("POST", "/api/users", {"username": "li", "password": "li is my name ok",
                                                         "role": "staff"})
        assert named.status_code == 400
        ok = await admin.write("POST", "/api/users", {"username": "li", "password": GOOD, "role": "staff"})
        assert ok.status_code == 201
        own = await admin.write("POST", "/api/auth/password", {"current": GOOD, "new": "too short"})
        assert own.status_code == 422


async def test_login_is_throttled_per_account_and_per_address(rig: Rig) -> None:
    await rig.users.add("tech", GOOD, Role.TECHNICIAN)
    await rig.users.add("boss", GOOD, Role.ADMIN)
    async with rig.client("10.0.0.5") as a, rig.client("10.0.0.6") as b:
        for _ in range(4):
            wrong = await a.post("/api/auth/login", json={"username": "tech", "password": "not the password"})
            assert wrong.status_code == 401 and wrong.json()["detail"]["error"] == "wrong"
        fifth = await a.post("/api/auth/login", json={"username": "tech", "password": "not the password"})
        assert fifth.status_code == 429 and int(fifth.headers["Retry-After"]) == 60
        # Locked: the right password from the same address, another account from it, the account from elsewhere.
        right = await a.post("/api/auth/login", json={"username": "tech", "password": GOOD})
        assert right.status_code == 429 and 0 < int(right.headers["Retry-After"]) <= 60
        assert right.json()["detail"]["error"] == "locked_out"
        other = await a.post("/api/auth/login", json={"username": "boss", "password": GOOD})
        assert other.status_code == 429
        elsewhere = await b.post("/api/auth/login", json={"username": "tech", "password": GOOD})
        assert elsewhere.status_code == 429
        assert (await b.post("/api/auth/login", json={"username": "boss", "password": GOOD})).status_code == 200
        # Once it ends, more guessing locks out for longer (60 s, then 120 s).
        rig.clock.advance(61)
        for _ in range(4):
            await a.post("/api/auth/login", json={"username": "tech", "password": "still wrong!!"})
        second = await a.post("/api/auth/login", json={"username": "tech", "password": "still wrong!!"})
        assert second.status_code == 429 and int(second.headers["Retry-After"]) == 120
        rig.clock.advance(121)
        back = await a.post("/api/auth/login", json={"username": "tech", "password": GOOD})
        assert back.status_code == 200, back.text


async def test_writes_need_the_csrf_token_and_the_same_origin(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    admin = await rig.signed_in("boss")
    body = {"username": "li", "password": GOOD, "role": "staff"}
    async with admin:
        missing = await admin.http.post("/api/users", json=body)
        assert missing.status_code == 403 and missing.json()["detail"]["error"] == "csrf"
        wrong = await admin.http.post("/api/users", json=body, headers={"X-CSRF-Token": admin.csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        foreign = await admin.http.post("/api/users", json=body, headers={"X-CSRF-Token": admin.csrf,
                                                                          "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["detail"]["error"] == "cross_origin"
        assert rig.users.get("li") is None, "nothing refused was done"
        same = await admin.http.post("/api/users", json=body, headers={"X-CSRF-Token": admin.csrf,
                                                                       "Origin": f"http://{HOST}"})
        assert same.status_code == 201 and rig.users.get("li") is not None
        # Reads need no token.
        assert (await admin.http.get("/api/users")).status_code == 200
    # Another site cannot sign a browser in either (no session yet, so no CSRF token: the Origin decides).
    async with rig.client() as http:
        login = await http.post("/api/auth/login", json={"username": "boss", "password": GOOD},
                                headers={"Origin": "https://evil.example"})
        assert login.status_code == 403 and "set-cookie" not in login.headers


async def test_the_session_cookie_flags(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    for https in (False, True):
        async with rig.client(https=https) as http:
            answer = await http.post("/api/auth/login", json={"username": "boss", "password": GOOD})
            cookie = answer.headers["set-cookie"]
            flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
            assert "httponly" in flags and flags["samesite"].lower() == "samesite=strict" and flags["path"] == "Path=/"
            assert ("secure" in flags) is https, cookie
            # The token in the cookie is not what the database keeps (only its SHA-256).
            value = flags["edge_session"].split("=", 1)[1]
            assert len(value) >= 43 and value not in answer.text


async def test_roles_limit_what_a_session_may_do(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    await rig.users.add("tech", GOOD, Role.TECHNICIAN)
    await rig.users.add("clerk", GOOD, Role.STAFF)
    staff, tech, admin = [await rig.signed_in(n) for n in ("clerk", "tech", "boss")]
    async with staff, tech, admin, rig.client() as anonymous:
        # Technician's: the OpenAPI description and the devices page.
        assert (await staff.http.get("/openapi.json")).status_code == 403
        assert (await tech.http.get("/openapi.json")).status_code == 200
        assert (await staff.http.get("/ui/devices", headers={"Accept": "text/html"})).status_code == 403
        assert (await tech.http.get("/ui/devices", headers={"Accept": "text/html"})).status_code == 200
        # Admin's: users.
        assert (await staff.http.get("/api/users")).status_code == 403
        refused = await tech.http.get("/api/users")
        assert refused.status_code == 403 and refused.json()["detail"]["error"] == "forbidden"
        assert (await tech.write("DELETE", "/api/users/clerk")).status_code == 403
        assert rig.users.get("clerk") is not None
        assert (await admin.http.get("/api/users")).status_code == 200
        # Everyone signed in sees the dashboard; nobody signed out does.
        assert (await staff.http.get("/", headers={"Accept": "text/html"})).status_code == 200
        assert (await anonymous.get("/api/users")).status_code == 401
        page = await anonymous.get("/ui/users?x=1", headers={"Accept": "text/html"})
        assert page.status_code == 303 and unquote(page.headers["location"]) == "/login?next=/ui/users?x=1"
        # A role taken away applies at once (the role is read at every request).
        await rig.users.set_role("tech", Role.STAFF)
        assert (await tech.http.get("/openapi.json")).status_code in (401, 403)


async def test_every_way_a_session_ends(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    await rig.users.add("tech", GOOD, Role.TECHNICIAN)
    # Sign-out.
    one = await rig.signed_in("tech")
    async with one:
        assert (await one.write("POST", "/api/auth/logout")).status_code == 200
        assert await one.me() == 401
    # A password change ends the user's other sessions, not the one that made it.
    laptop, phone = await rig.signed_in("tech"), await rig.signed_in("tech")
    async with laptop, phone:
        wrong = await laptop.write("POST", "/api/auth/password", {"current": "not my password", "new": "brand new pass"})
        assert wrong.status_code == 401
        changed = await laptop.write("POST", "/api/auth/password", {"current": GOOD, "new": "brand new pass"})
        assert changed.status_code == 200 and changed.json()["other_sessions_ended"] == 1
        assert await laptop.me() == 200 and await phone.me() == 401
    # The admin resets a password or changes a role: the user signs in again.
    admin = await rig.signed_in("boss")
    victim = await rig.signed_in("tech", "brand new pass")
    async with admin, victim:
        reset = await admin.write("PATCH", "/api/users/tech", {"password": GOOD})
        assert reset.status_code == 200 and await victim.me() == 401
        victim2 = await rig.signed_in("tech")
        async with victim2:
            assert (await admin.write("PATCH", "/api/users/tech", {"role": "staff"})).status_code == 200
            assert await victim2.me() == 401
        # Removal.
        victim3 = await rig.signed_in("tech")
        async with victim3:
            assert (await admin.write("DELETE", "/api/users/tech")).status_code == 204
            assert await victim3.me() == 401
            assert (await admin.write("DELETE", "/api/users/boss")).status_code == 400, "not yourself"
    # Idle for more than 30 minutes; or 12 hours after sign-in however busy.
    idle = await rig.signed_in("boss")
    async with idle:
        rig.clock.advance(29 * 60)
        assert await idle.me() == 200
        rig.clock.advance(29 * 60)
        assert await idle.me() == 200, "each request restarts the idle timer"
        rig.clock.advance(31 * 60)
        assert await idle.me() == 401
    busy = await rig.signed_in("boss")
    async with busy:
        for _ in range(25):
            rig.clock.advance(29 * 60)
            if await busy.me() != 200:
                break
        assert await busy.me() == 401
        assert rig.clock.now - T0 >= 12 * 3600 * 1000


async def test_origin_null_is_refused_unless_the_browser_says_same_origin(rig: Rig) -> None:
    await rig.users.add("boss", GOOD, Role.ADMIN)
    admin = await rig.signed_in("boss")
    async with admin:
        # A sandboxed frame on another site sends Origin: null (and Sec-Fetch-Site: cross-site, or nothing).
        for fetch_site in (None, "cross-site", "same-site"):
            headers = {"X-CSRF-Token": admin.csrf, "Origin": "null"}
            if fetch_site:
                headers["Sec-Fetch-Site"] = fetch_site
            refused = await admin.http.post("/api/users", headers=headers,
                                            json={"username": "li", "password": GOOD, "role": "staff"})
            assert refused.status_code == 403 and refused.json()["detail"]["error"] == "cross_origin"
        # The page's own write from a browser that nulls the Origin (no-referrer): the browser-set
        # Sec-Fetch-Site says it is this site.
        ok = await admin.http.post("/api/users", json={"username": "li", "password": GOOD, "role": "staff"},
                                   headers={"X-CSRF-Token": admin.csrf, "Origin": "null", "Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 201
        # The admin pages ask browsers for same-origin referrers, so they send their real Origin in the first place.
        page = await admin.http.get("/", headers={"Accept": "text/html"})
        assert page.headers["Referrer-Policy"] == "same-origin"
        assert '<meta name="referrer" content="same-origin">' in page.text
