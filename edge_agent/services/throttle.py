"""Failure throttle with growing lockouts, on two SQLite tables: shared by pickup codes and staff sign-in.

One `Throttle` counts failures per key (a terminal such as `locker-screen:A`, or a staff number) in an
attempts table and keeps lockouts in a lockouts table (DESIGN.md section 7):
- at most `max_failures` failures per key within `window_ms`; the failure that reaches the limit starts a
  lockout;
- lockout levels: level 1 lasts `first_lockout_ms`, each next level doubles it up to `max_lockout_ms`;
  after a lockout ends the key is still over the limit until its old failures leave the window, so one
  more failure locks it again, one level higher;
- decay: the level drops by one for every full `level_decay_ms` since the last lockout ended;
- lockouts are rows, so they survive restarts; a wall clock set backwards cannot stretch one beyond
  `max_lockout_ms`.

The methods take the caller's connection and run inside the caller's write transaction (`Database.write`),
so checking, recording and locking are one atomic step with whatever else the caller does (a code lookup).

A check that takes time outside the transaction (argon2 on a password or PIN: sign_in_gate.py) reserves its
attempt first (`reserve`: a row in flight, `ok = -1`) and settles it after (`settle`). Attempts in flight count
against the failures a key has left, so forty requests sent at once get no more checks than forty sent one after
the other would.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

PENDING = -1  # the `ok` of an attempt reserved and being checked (0 failed, 1 succeeded)

# Attempts are kept this long (the windows need only minutes); older ones are removed as new ones arrive.
ATTEMPTS_KEPT_MS = 24 * 3600 * 1000

# The table pairs a Throttle may use: (attempts, lockouts, key column). Table names cannot be SQL
# parameters, so only these known names are ever formatted into a statement.
TABLES = {
    "code": ("code_attempts", "code_lockouts", "terminal"),
    "signin": ("signin_attempts", "signin_lockouts", "key"),
}


class LockoutPolicy(Protocol):
    """What a Throttle needs of a policy (pickup_codes.ThrottlePolicy is one)."""

    @property
    def max_failures(self) -> int: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def max_lockout_ms(self) -> int: ...
    @property
    def level_decay_ms(self) -> int: ...
    @property
    def max_level(self) -> int: ...
    def lockout_ms(self, level: int) -> int: ...


@dataclass(frozen=True)
class Failure:
    """What recording one failure did: the failures now in the window and, if it started one, the lockout."""

    failures: int
    locked_ms: int = 0  # length of the lockout this failure started; 0 when none
    level: int = 0


class Throttle:
    def __init__(self, policy: LockoutPolicy, tables: str = "code", *, what: str = "terminal") -> None:
        self.policy = policy
        self._attempts, self._lockouts, self._key = TABLES[tables]
        self._what = what  # for log lines: "terminal", "staff number"

    def seconds_left(self, conn: sqlite3.Connection, key: str, now: int) -> int:
        """Seconds until `key` may try again; 0 when it is not locked out."""
        row = conn.execute(
            f"SELECT until_ms FROM {self._lockouts} WHERE {self._key} = ?", (key,)  # noqa: S608 - known names
        ).fetchone()
        if row is None:
            return 0
        until = min(int(row[0]), now + self.policy.max_lockout_ms)  # a clock set backwards cannot stretch it
        return max(0, math.ceil((until - now) / 1000))

    def success(self, conn: sqlite3.Connection, key: str, now: int) -> None:
        """Record a success. It does not reset the failure count: someone holding one valid secret could
        otherwise clear the count between guesses."""
        self._purge(conn, now)
        conn.execute(
            f"INSERT INTO {self._attempts}({self._key}, ts_ms, ok) VALUES (?, ?, 1)", (key, now)  # noqa: S608
        )

    def failure(self, conn: sqlite3.Connection, key: str, now: int) -> Failure:
        """Record a failure; lock `key` out when it makes `max_failures` within the window."""
        self._purge(conn, now)
        conn.execute(
            f"INSERT INTO {self._attempts}({self._key}, ts_ms, ok) VALUES (?, ?, 0)", (key, now)  # noqa: S608
        )
        return self._judge(conn, key, now)

    def may_reserve(self, conn: sqlite3.Connection, key: str, now: int) -> bool:
        """Whether `key` may start one more attempt now: not locked out, and its attempts in flight leave room
        under `max_failures` (with none in flight the rule is `failure`'s: a key not locked out may try)."""
        if self.seconds_left(conn, key, now) > 0:
            return False
        failed, pending = conn.execute(
            f"SELECT COALESCE(SUM(ok = 0), 0), COALESCE(SUM(ok = {PENDING}), 0) FROM {self._attempts} "  # noqa: S608
            f"WHERE {self._key} = ? AND ts_ms > ?",
            (key, now - self.policy.window_ms),
        ).fetchone()
        return int(pending) == 0 or int(failed) + int(pending) < self.policy.max_failures

    def reserve(self, conn: sqlite3.Connection, key: str, now: int) -> int:
        """An attempt in flight for `key` (call `may_reserve` first, in the same transaction); returns its row."""
        self._purge(conn, now)
        cur = conn.execute(
            f"INSERT INTO {self._attempts}({self._key}, ts_ms, ok) VALUES (?, ?, {PENDING})",  # noqa: S608
            (key, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def settle(self, conn: sqlite3.Connection, attempt: int, key: str, now: int, *, ok: bool) -> Failure:
        """The reserved `attempt` succeeded or failed. A failure locks `key` out as `failure` would, unless a
        concurrent attempt already did (one burst starts one lockout, not one level per request)."""
        conn.execute(
            f"UPDATE {self._attempts} SET ok = ? WHERE rowid = ?", (1 if ok else 0, attempt)  # noqa: S608
        )
        if ok or self.seconds_left(conn, key, now) > 0:
            return Failure(0)
        return self._judge(conn, key, now)

    def _judge(self, conn: sqlite3.Connection, key: str, now: int) -> Failure:
        p = self.policy
        failures = int(conn.execute(
            f"SELECT COUNT(*) FROM {self._attempts} WHERE {self._key} = ? AND ts_ms > ? AND ok = 0",  # noqa: S608
            (key, now - p.window_ms),
        ).fetchone()[0])
        if failures < p.max_failures:
            return Failure(failures)
        lock = conn.execute(
            f"SELECT until_ms, level FROM {self._lockouts} WHERE {self._key} = ?", (key,)  # noqa: S608
        ).fetchone()
        level = 1
        if lock is not None:
            quiet = max(0, now - int(lock[0]))
            level = min(max(0, int(lock[1]) - quiet // p.level_decay_ms) + 1, p.max_level)
        locked_ms = p.lockout_ms(level)
        conn.execute(
            f"INSERT INTO {self._lockouts}({self._key}, until_ms, level) VALUES (?, ?, ?) "  # noqa: S608
            f"ON CONFLICT({self._key}) DO UPDATE SET until_ms = excluded.until_ms, level = excluded.level",
            (key, now + locked_ms, level),
        )
        log.warning(
            "%s %s locked out for %d s (level %d) after %d failures",
            self._what, key, locked_ms // 1000, level, failures,
        )
        return Failure(failures, locked_ms, level)

    def _purge(self, conn: sqlite3.Connection, now: int) -> None:
        conn.execute(f"DELETE FROM {self._attempts} WHERE ts_ms < ?", (now - ATTEMPTS_KEPT_MS,))  # noqa: S608
