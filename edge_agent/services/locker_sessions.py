"""Sessions of staff and couriers signed in on a locker screen: in memory only, short, bound to one bank.

- A session is an opaque token (`secrets.token_urlsafe(32)`, 256 bits) handed out at sign-in. Only the
  token's SHA-256 is kept as the dictionary key, so a lookup compares digests of the token, never the token
  itself byte by byte against stored tokens (nothing to learn from lookup timing).
- It belongs to the bank whose screen signed in; presented at another bank's API it is refused.
- It ends after `idle_s` (60 s) without use, the screen's idle reset, and `absolute_s` (15 min) after sign-in
  whatever happens; at sign-out; and at a restart (nothing is written to disk: a restart signs everyone out,
  which is the safe direction).
- The token travels in an `Authorization: Bearer` header set by the page's JavaScript, never in a cookie: a
  browser never attaches it on its own, so another site cannot make the screen's browser act (no CSRF).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Role = Literal["staff", "courier"]

IDLE_S = 60.0
ABSOLUTE_S = 15 * 60.0
# Each screen has at most a few people signed in at once; this bounds memory against a flood of sign-ins.
MAX_SESSIONS = 256


@dataclass
class Session:
    bank: str
    role: Role
    actor: str  # staff:<number> or courier:<id>, as written to the audit log
    credential: str  # what signed in (staff number, courier code MAC): checked again at each use
    started: float  # monotonic seconds
    last_used: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class SessionStore:
    def __init__(
        self,
        *,
        idle_s: float = IDLE_S,
        absolute_s: float = ABSOLUTE_S,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._max = max_sessions
        self._clock = clock
        self._sessions: dict[bytes, Session] = {}

    def start(self, bank: str, role: Role, actor: str, credential: str = "") -> str:
        """A new session; returns its token (the only place the token exists outside the client)."""
        self._purge()
        if len(self._sessions) >= self._max:
            # The oldest session goes: a flood of sign-ins cannot grow memory, and real users re-sign in.
            oldest = min(self._sessions, key=lambda k: self._sessions[k].started)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._sessions[_digest(token)] = Session(bank, role, actor, credential, now, now)
        return token

    def use(self, token: str, bank: str) -> Session | None:
        """The live session of `token` at `bank`, its idle timer refreshed; None when missing, expired or
        from another bank (the caller answers all three the same way)."""
        key = _digest(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[key]
            return None
        if session.bank != bank:
            return None
        session.last_used = now
        return session

    def end(self, token: str) -> bool:
        return self._sessions.pop(_digest(token), None) is not None

    def end_actor(self, actor: str) -> int:
        """Sign out every session of `actor` (a removed staff member); returns how many ended."""
        keys = [k for k, s in self._sessions.items() if s.actor == actor]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def __len__(self) -> int:
        self._purge()
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_used >= self.idle_s or now - session.started >= self.absolute_s

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]
