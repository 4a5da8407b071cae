"""Accounts of the technician web UI: roles, argon2id passwords, the one-time setup token, throttled sign-in.

- **No default account** (DESIGN.md section 7). While no account exists the agent keeps a one-time setup
  token (printed at start, `edge-agent setup-token` prints it again); whoever presents it creates the first
  admin, in the same transaction that deletes the token, so it works exactly once.
- **Roles** are ranked: staff (locker loading and retrieval, alarms) < technician (devices, pairing, tests)
  < admin (users, configuration). A role may do everything the roles below it may.
- **Passwords**: at least 12 characters, hashed with argon2id (argon2-cffi's RFC 9106 low-memory profile),
  off the event loop, one at a time (each costs 64 MiB).
- **Throttle**: 5 failures a minute per account and per client address lock that key out, 60 s doubling up
  to an hour (`throttle.Throttle` on the sign-in tables the locker staff sign-in also uses, with keys of
  their own). Each attempt is counted before argon2 runs (`sign_in_gate`), so a burst of concurrent requests
  gets no more checks than the same requests one after the other. An unknown account costs the same argon2
  work as a wrong password.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher, Type

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.services.pickup_codes import ThrottlePolicy
from edge_agent.services.sign_in_gate import Argon2Check, Guard, SignInGate
from edge_agent.services.throttle import Throttle

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 12
MIN_DISTINCT = 4  # different characters: "aaaaaaaaaaaa" or "abababababab" is no password
MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work one request can ask for
SETUP_TOKEN_KEY = "setup_token"  # noqa: S105 - the name of the row, not a secret
LOGIN_POLICY = ThrottlePolicy(max_failures=5, window_ms=60 * 1000, first_lockout_ms=60 * 1000)

# Passwords people choose when told "at least 12 characters".
_COMMON_PASSWORDS = frozenset({
    "123456789012", "password1234", "passwordpassword", "qwertyuiopas", "administrator", "letmeinletmein",
    "111111111111", "000000000000", "abcdefghijkl", "iloveyou1234", "welcome12345", "adminadmin12",
})


class Role(enum.StrEnum):
    STAFF = "staff"
    TECHNICIAN = "technician"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.STAFF: 1, Role.TECHNICIAN: 2, Role.ADMIN: 3}


class UserError(Exception):
    """An account could not be created or changed; the message says why (never a secret)."""


class WeakPasswordError(UserError, ValueError):
    """The password is too short or too easy to guess."""


class SetupLockedError(UserError):
    """Too many wrong setup tokens from this client address."""

    def __init__(self, seconds_left: int) -> None:
        super().__init__(f"too many wrong setup tokens; try again in {seconds_left} s")
        self.seconds_left = seconds_left


class SignInStatus(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True)
class WebUser:
    username: str
    role: Role
    created_ms: int
    last_sign_in_ms: int | None
    lang: str | None = None


@dataclass(frozen=True)
class SignInResult:
    status: SignInStatus
    user: WebUser | None = None
    seconds_left: int = 0


def check_username(username: str) -> None:
    if not isinstance(username, str) or USERNAME_RE.fullmatch(username) is None:
        raise UserError("a user name is 1-64 letters, digits or . _ @ - and starts with a letter or digit")


def check_password(password: str, username: str | None = None) -> None:
    """Raise WeakPasswordError unless `password` is long enough and not an obvious one."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise WeakPasswordError(f"a password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPasswordError(f"a password must be at most {MAX_PASSWORD} characters")
    if len(set(password)) < MIN_DISTINCT:
        raise WeakPasswordError("a password must not be a few characters repeated")
    if password.lower() in _COMMON_PASSWORDS:
        raise WeakPasswordError("this password is among the most common ones; choose another")
    if username and username.lower() in password.lower():
        raise WeakPasswordError("a password must not contain the user name")


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}") from None


def _row_to_user(row: tuple[Any, ...]) -> WebUser:
    username, role, created_ms, last_sign_in_ms, lang = row
    return WebUser(str(username), Role(str(role)), int(created_ms),
                   None if last_sign_in_ms is None else int(last_sign_in_ms), None if lang is None else str(lang))


_USER_COLUMNS = "username, role, created_ms, last_sign_in_ms, lang"


class WebUsers:
    """The web UI's accounts and the setup token, on the agent's database."""

    def __init__(
        self,
        db: DurableStore,
        *,
        hasher: PasswordHasher | None = None,
        policy: ThrottlePolicy = LOGIN_POLICY,
        clock: Callable[[], int] = now_ms,
        steady: Callable[[], int] | None = None,
    ) -> None:
        self._db = db
        self._hasher = hasher or PasswordHasher(type=Type.ID)
        if self._hasher.type is not Type.ID:
            raise UserError("password hashes must be argon2id")
        self._clock = clock
        self._steady = steady or clock  # the throttles' clock: lockouts are durations (agent_clock)
        self._accounts = Throttle(policy, "signin", what="web account")
        self._clients = Throttle(policy, "signin", what="web client")
        self._argon2 = Argon2Check(self._hasher)
        self._gate = SignInGate(db, steady=self._steady)
        # Called with the username after a password change or removal: the sessions store ends their sessions.
        self.on_credentials_changed: Callable[[str], object] | None = None

    # -- accounts -------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._db.read(lambda c: c.execute("SELECT COUNT(*) FROM web_users").fetchone()[0]))

    def get(self, username: str) -> WebUser | None:
        row = self._db.read(lambda c: c.execute(
            f"SELECT {_USER_COLUMNS} FROM web_users WHERE username = ?", (username,)  # noqa: S608 - constant
        ).fetchone())
        return _row_to_user(row) if row else None

    def list(self) -> list[WebUser]:
        rows = self._db.read(lambda c: c.execute(
            f"SELECT {_USER_COLUMNS} FROM web_users ORDER BY username"  # noqa: S608 - constant
        ).fetchall())
        return [_row_to_user(r) for r in rows]

    async def _hash(self, password: str) -> str:
        async with self._argon2.lock:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def add(self, username: str, password: str, role: Role | str, *, lang: str | None = None) -> WebUser:
        check_username(username)
        role = parse_role(role) if isinstance(role, str) else role
        check_password(password, username)
        hashed = await self._hash(password)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)).fetchone():
                raise UserError(f"user {username} exists already")
            conn.execute(
                "INSERT INTO web_users(username, role, password_hash, created_ms, password_changed_ms, lang) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (username, role.value, hashed, now, now, lang),
            )
            # The setup token exists only while there is no account.
            conn.execute("DELETE FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,))

        await self._db.write(job)
        log.info("web user %s added with role %s", username, role.value)
        return WebUser(username, role, now, None, lang)

    async def set_password(self, username: str, password: str) -> None:
        check_password(password, username)
        hashed = await self._hash(password)
        now = self._clock()
        changed = await self._db.write(lambda c: c.execute(
            "UPDATE web_users SET password_hash = ?, password_changed_ms = ? WHERE username = ?",
            (hashed, now, username),
        ).rowcount)
        if not changed:
            raise UserError(f"no user {username}")
        log.info("password of web user %s changed", username)
        self._changed(username)

    async def set_role(self, username: str, role: Role | str) -> None:
        role = parse_role(role) if isinstance(role, str) else role

        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT role FROM web_users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise UserError(f"no user {username}")
            if row[0] == Role.ADMIN and role is not Role.ADMIN and _admins(conn) == 1:
                raise UserError("the last admin cannot lose the admin role")
            conn.execute("UPDATE web_users SET role = ? WHERE username = ?", (role.value, username))

        await self._db.write(job)
        self._changed(username)

    async def remove(self, username: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT role FROM web_users WHERE username = ?", (username,)).fetchone()
            if row is None:
                return False
            if row[0] == Role.ADMIN and _admins(conn) == 1:
                raise UserError("the last admin cannot be removed")
            conn.execute("DELETE FROM web_sessions WHERE username = ?", (username,))
            conn.execute("DELETE FROM web_users WHERE username = ?", (username,))
            return True

        removed = await self._db.write(job)
        if removed:
            log.info("web user %s removed", username)
            self._changed(username)
        return removed

    def _changed(self, username: str) -> None:
        if self.on_credentials_changed is not None:
            self.on_credentials_changed(username)

    # -- the setup token ------------------------------------------------------------------------

    def setup_token(self) -> str | None:
        """The current setup token, None when there is none (accounts exist, or it was never drawn)."""
        row = self._db.read(lambda c: c.execute(
            "SELECT value FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,)
        ).fetchone())
        return None if row is None else str(row[0])

    async def ensure_setup_token(self) -> str | None:
        """Draw the setup token if there is no account and no token yet; return it (None once set up)."""
        token = "-".join(secrets.token_hex(3) for _ in range(4))  # 96 bits, readable off a console: 1a2b3c-...
        now = self._clock()

        def job(conn: sqlite3.Connection) -> str | None:
            if conn.execute("SELECT COUNT(*) FROM web_users").fetchone()[0]:
                conn.execute("DELETE FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,))
                return None
            row = conn.execute("SELECT value FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute(
                "INSERT INTO agent_settings(key, value, updated_ms) VALUES (?, ?, ?)", (SETUP_TOKEN_KEY, token, now)
            )
            return token

        return await self._db.write(job)

    async def complete_setup(
        self, token: str, username: str, password: str, *, client: str = "unknown", lang: str | None = None
    ) -> WebUser:
        """Create the first admin with the setup token; the token dies in the same transaction. Wrong tokens
        count against the client address like wrong passwords (SetupLockedError once it is locked out)."""
        check_username(username)
        check_password(password, username)
        client_key = f"web-client:{client}"
        now, tick = self._clock(), self._steady()
        left = self._db.read(lambda c: self._clients.seconds_left(c, client_key, tick))
        if left > 0:
            raise SetupLockedError(left)
        hashed = await self._hash(password)

        def job(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT value FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,)).fetchone()
            valid = row is not None and isinstance(token, str) and hmac.compare_digest(
                str(row[0]).encode(), token.strip().lower().encode()
            )
            # The lockout again, in the transaction: requests that passed the first look meanwhile are refused.
            if self._clients.seconds_left(conn, client_key, tick) > 0:
                return False
            if not valid or conn.execute("SELECT COUNT(*) FROM web_users").fetchone()[0]:
                self._clients.failure(conn, client_key, tick)
                return False
            conn.execute("DELETE FROM agent_settings WHERE key = ?", (SETUP_TOKEN_KEY,))
            conn.execute(
                "INSERT INTO web_users(username, role, password_hash, created_ms, password_changed_ms, lang) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (username, Role.ADMIN.value, hashed, now, now, lang),
            )
            return True

        if not await self._db.write(job):
            raise UserError("the setup token is not valid (it works once, until the first admin exists)")
        log.warning("first admin %s created with the setup token; the token is used up", username)
        return WebUser(username, Role.ADMIN, now, None, lang)

    # -- signing in -----------------------------------------------------------------------------

    async def sign_in(self, username: str, password: str, client: str) -> SignInResult:
        """Check a password, throttled per account and per client address (sign_in_gate: the attempt is counted
        before argon2 runs, so concurrent requests get no more checks than sequential ones)."""
        name_ok = isinstance(username, str) and USERNAME_RE.fullmatch(username) is not None
        password_ok = isinstance(password, str) and 0 < len(password) <= MAX_PASSWORD
        guards = [Guard(self._clients, f"web-client:{client}")]
        if name_ok:
            guards.append(Guard(self._accounts, f"web-user:{username.lower()}"))
        now = self._clock()
        new_hash: str | None = None

        async def check() -> bool:
            nonlocal new_hash
            row = None
            if name_ok:
                row = self._db.read(lambda c: c.execute(
                    "SELECT password_hash FROM web_users WHERE username = ?", (username,)
                ).fetchone())
            ok, new_hash = await self._argon2.check(
                None if row is None else str(row[0]), password if password_ok else "", well_formed=password_ok
            )
            return ok

        def success(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE web_users SET last_sign_in_ms = ?, password_hash = COALESCE(?, password_hash) "
                "WHERE username = ?",
                (now, new_hash, username),
            )

        result = await self._gate.attempt(guards, check, on_success=success)
        if not result.checked or result.locked_ms:
            return SignInResult(SignInStatus.LOCKED_OUT, seconds_left=result.seconds_left)
        if not result.ok:
            return SignInResult(SignInStatus.WRONG)
        user = self.get(username)
        if user is None:  # removed between the check and now
            return SignInResult(SignInStatus.WRONG)
        return SignInResult(SignInStatus.OK, user=user)


def _admins(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM web_users WHERE role = ?", (Role.ADMIN.value,)).fetchone()[0])
