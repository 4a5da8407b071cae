"""Signed-in browsers of the technician web UI.

- A session is an opaque token (`secrets.token_urlsafe(32)`, 256 bits) sent as an HttpOnly, SameSite=Strict
  cookie. The database keeps only its SHA-256, so a copy of the database (a diagnostics bundle, a backup)
  signs nobody in.
- Each session has its own CSRF token (256 bits), which the page reads from `/api/auth/me` and sends back
  in an `X-CSRF-Token` header on every state-changing request. SameSite=Strict already keeps other sites'
  requests from carrying the cookie; the token is the second, independent lock.
- A session ends after `idle_s` (30 min) without use, `absolute_s` (12 h) after sign-in, at sign-out, and
  when its user's password or role changes or the user is removed. Sessions are on disk: restarting the
  agent (after a configuration change) does not sign the technician out.
- The account's role is read at every request, so a role taken away applies at once.
- Its times (`created_ms`, `last_seen_ms`) are on the agent's steady clock (services/agent_clock): a wall clock
  set back cannot keep a session alive, nor one set ahead and back end it twice.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.services.web_users import Role

IDLE_S = 30 * 60
ABSOLUTE_S = 12 * 3600
# last_seen is written at most this often per session: a page's many requests cost one write a minute.
TOUCH_EVERY_MS = 60 * 1000
# A user signing in again and again (a script) cannot grow the table without bound.
MAX_SESSIONS_PER_USER = 20


@dataclass(frozen=True)
class WebSession:
    token_hash: str
    username: str
    role: Role
    csrf: str
    created_ms: int
    last_seen_ms: int

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf.encode(), presented.encode("utf-8", "replace"))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class WebSessions:
    def __init__(
        self,
        db: DurableStore,
        *,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self.idle_ms = int(idle_s * 1000)
        self.absolute_ms = int(absolute_s * 1000)
        self._clock = clock

    async def start(self, username: str, client: str | None = None) -> tuple[str, WebSession]:
        """A new session for `username`; returns its token (which exists nowhere else) and the session."""
        token = secrets.token_urlsafe(32)
        digest = token_hash(token)
        csrf = secrets.token_urlsafe(32)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> Role:
            row = conn.execute("SELECT role FROM web_users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise LookupError(username)
            self._purge(conn, now)
            conn.execute(
                "DELETE FROM web_sessions WHERE token_hash IN (SELECT token_hash FROM web_sessions WHERE username = ? "
                "ORDER BY last_seen_ms DESC LIMIT -1 OFFSET ?)",
                (username, MAX_SESSIONS_PER_USER - 1),
            )
            conn.execute(
                "INSERT INTO web_sessions(token_hash, username, csrf, created_ms, last_seen_ms, client) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest, username, csrf, now, now, (client or "")[:64]),
            )
            return Role(str(row[0]))

        role = await self._db.write(job)
        return token, WebSession(digest, username, role, csrf, now, now)

    def _live(self, row: tuple[Any, ...] | None, now: int) -> WebSession | None:
        if row is None:
            return None
        digest, username, role, csrf, created, seen = row
        session = WebSession(str(digest), str(username), Role(str(role)), str(csrf), int(created), int(seen))
        if now - session.last_seen_ms > self.idle_ms or now - session.created_ms > self.absolute_ms:
            return None
        return session

    async def use(self, token: str) -> WebSession | None:
        """The live session of `token`, its idle timer refreshed; None when unknown or expired."""
        if not token or len(token) > 128:
            return None
        digest = token_hash(token)
        now = self._clock()
        row = self._db.read(lambda c: c.execute(
            "SELECT s.token_hash, s.username, u.role, s.csrf, s.created_ms, s.last_seen_ms "
            "FROM web_sessions s JOIN web_users u ON u.username = s.username WHERE s.token_hash = ?",
            (digest,),
        ).fetchone())
        session = self._live(row, now)
        if session is None:
            if row is not None:
                await self._db.write(lambda c: c.execute("DELETE FROM web_sessions WHERE token_hash = ?", (digest,)))
            return None
        if now - session.last_seen_ms >= TOUCH_EVERY_MS:
            await self._db.write(lambda c: c.execute(
                "UPDATE web_sessions SET last_seen_ms = ? WHERE token_hash = ?", (now, digest)
            ))
        return session

    async def end(self, token: str) -> None:
        digest = token_hash(token)
        await self._db.write(lambda c: c.execute("DELETE FROM web_sessions WHERE token_hash = ?", (digest,)))

    async def end_user(self, username: str, *, keep: str | None = None) -> int:
        """End every session of `username` (but `keep`, a token hash: the one that changed the password)."""
        return int(await self._db.write(lambda c: c.execute(
            "DELETE FROM web_sessions WHERE username = ? AND token_hash != ?", (username, keep or "")
        ).rowcount))

    def count(self) -> int:
        now = self._clock()
        return int(self._db.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM web_sessions WHERE last_seen_ms > ? AND created_ms > ?",
            (now - self.idle_ms, now - self.absolute_ms),
        ).fetchone()[0]))

    def _purge(self, conn: sqlite3.Connection, now: int) -> None:
        conn.execute(
            "DELETE FROM web_sessions WHERE last_seen_ms < ? OR created_ms < ?",
            (now - self.idle_ms, now - self.absolute_ms),
        )
