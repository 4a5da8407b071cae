"""One throttled secret check, shared by the web UI's sign-in and the locker screens' staff sign-in.

A password or PIN is checked with argon2, which takes tens of milliseconds outside any transaction. Checking the
lockout first and recording the failure after lets every request that arrives meanwhile through: forty wrong
sign-ins sent at once were all checked, and a right one at the end of the burst was accepted although the account
was locked. So an attempt goes through three steps, each atomic:

1. In one write transaction, before argon2: refused when any of its keys (an account, a client address, a staff
   number, a terminal) is locked out, or has as many attempts in flight as failures left (`Throttle.may_reserve`);
   otherwise an attempt in flight is recorded for every key (`Throttle.reserve`).
2. The check itself (argon2), by the caller.
3. In one write transaction: every reserved attempt is settled as a success or a failure; a failure locks its key
   out as any failure would, and a success runs the caller's own bookkeeping in the same transaction.

Besides, at most `max_pending` attempts per key wait in memory at once (for the argon2 lock or the writer): a
client cannot queue work faster than it is refused. An attempt whose check raises (cancelled) stays in flight,
counted against its keys until the throttle's window passes: never a free guess.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cloud_link.ports import DurableStore
from edge_agent.services.throttle import Failure, Throttle

MAX_PENDING_PER_KEY = 4  # a person signs in once at a time; a few more for screens behind one address


@dataclass(frozen=True)
class Guard:
    """One key an attempt is throttled by, and the throttle (policy and tables) that counts it."""

    throttle: Throttle
    key: str


@dataclass(frozen=True)
class GateResult:
    """`checked` False: refused before any check, `seconds_left` until the next try may succeed. Otherwise `ok` is
    the check's answer and `failures` what settling each guard did (same order), for lockout alarms."""

    checked: bool
    ok: bool = False
    seconds_left: int = 0
    failures: tuple[Failure, ...] = ()

    @property
    def locked_ms(self) -> int:
        """The longest lockout this attempt's failure started; 0 when none."""
        return max((f.locked_ms for f in self.failures), default=0)


class Argon2Check:
    """A password or PIN against its stored argon2id hash, one computation at a time (each takes tens of MiB and
    milliseconds, off the event loop). An unknown account is checked against a dummy hash, so the time taken
    tells nothing; `lock` is also what callers hold for their other argon2 work."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        self.lock = asyncio.Lock()
        self._dummy: str | None = None

    async def check(self, stored: str | None, secret: str, *, well_formed: bool) -> tuple[bool, str | None]:
        """(whether `secret` matches `stored`, a new hash when the hasher's parameters were raised since)."""
        async with self.lock:
            if self._dummy is None:  # the first check pays for it, whoever it is for
                self._dummy = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
            target = stored if stored is not None else self._dummy
            matched = await asyncio.to_thread(self._verify, target, secret if well_formed else "")
            ok = matched and stored is not None and well_formed
            rehashed = None
            if ok and self.hasher.check_needs_rehash(target):
                rehashed = await asyncio.to_thread(self.hasher.hash, secret)
        return ok, rehashed

    def _verify(self, stored: str, secret: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, secret))
        except (VerificationError, InvalidHashError):
            return False


class SignInGate:
    def __init__(self, db: DurableStore, *, steady: Callable[[], int], max_pending: int = MAX_PENDING_PER_KEY) -> None:
        self._db = db
        self._steady = steady  # the throttles' clock: lockouts are durations (services/agent_clock)
        self.max_pending = max_pending
        self._pending: Counter[str] = Counter()

    async def attempt(
        self,
        guards: Sequence[Guard],
        check: Callable[[], Awaitable[bool]],
        *,
        on_success: Callable[[sqlite3.Connection], None] | None = None,
    ) -> GateResult:
        keys = [g.key for g in guards]
        # Counted on the event loop before the first await: concurrent requests see each other here.
        if any(self._pending[k] >= self.max_pending for k in keys):
            return GateResult(checked=False, seconds_left=1)
        self._pending.update(keys)
        try:
            return await self._attempt(guards, check, on_success)
        finally:
            self._pending.subtract(keys)
            for k in keys:
                if self._pending[k] <= 0:
                    del self._pending[k]

    async def _attempt(
        self,
        guards: Sequence[Guard],
        check: Callable[[], Awaitable[bool]],
        on_success: Callable[[sqlite3.Connection], None] | None,
    ) -> GateResult:
        tick = self._steady()

        def reserve(c: sqlite3.Connection) -> list[int] | int:
            if not all(g.throttle.may_reserve(c, g.key, tick) for g in guards):
                return max(1, *(g.throttle.seconds_left(c, g.key, tick) for g in guards))
            return [g.throttle.reserve(c, g.key, tick) for g in guards]

        reserved = await self._db.write(reserve)
        if isinstance(reserved, int):
            return GateResult(checked=False, seconds_left=reserved)
        ok = await check()

        def settle(c: sqlite3.Connection) -> tuple[Failure, ...]:
            failures = tuple(
                g.throttle.settle(c, attempt, g.key, tick, ok=ok) for g, attempt in zip(guards, reserved, strict=True)
            )
            if ok and on_success is not None:
                on_success(c)
            return failures

        failures = await self._db.write(settle)
        locked_ms = max((f.locked_ms for f in failures), default=0)
        return GateResult(checked=True, ok=ok, seconds_left=math.ceil(locked_ms / 1000), failures=failures)
