"""Pickup codes: issued, checked, used once, throttled per terminal, and never stored in the clear.

Codes (DESIGN.md section 7, issue 4 part 4):
- A code is 8 digits by default (`code_digits`, 8-12), drawn uniformly with `secrets.randbelow`, leading
  zeros allowed; or issued by the cloud, accepted when it is 8-12 ASCII digits.
- The database holds only `HMAC-SHA256(store key, code)` as hex (`pickup_codes.code_mac`). A code is found
  by its MAC (an index lookup) and the stored MAC is then compared with `hmac.compare_digest`.
- A code opens nothing unless it is live and not past `expires_ms`. It dies (for good) when used,
  cancelled or expired. Every failure answers the same WRONG, whether the code never existed, was used,
  cancelled or has expired: nothing tells a guesser which codes exist.
- When a code dies, its MAC stays (so a re-typed dead code is still WRONG, and the history is kept), until a
  new order happens to draw the same code: then the dead row's MAC is replaced by a tombstone MAC
  (HMAC of the order id under a separate label), which no code can produce.

Throttle per terminal (`ThrottlePolicy`, defaults shown; the mechanics live in `throttle.Throttle`, which the
staff sign-in of the locker screens shares):
- every code typed is recorded in `code_attempts`; at most 10 failed codes per terminal in any 10 minutes:
  the failure that makes 10 in the window starts a lockout;
- while locked out, every code (right or wrong) answers LOCKED_OUT with the seconds left, and is not even
  looked up; those attempts are not recorded (they test nothing);
- lockout levels: the first lockout lasts 30 s, each next one doubles (60 s, 2 min, ...) up to 1 h (level 8,
  where the level stops growing). After
  a lockout ends the terminal is still over the limit until its old failures leave the 10-minute window, so
  one more failure locks it again, one level higher;
- decay: the level drops by one for every full hour (`level_decay_ms`) that passed since the last lockout
  ended, so a terminal that stays quiet returns to 30 s lockouts after a few hours;
- lockouts live in `code_lockouts` and survive restarts. A wall clock set backwards cannot stretch one
  beyond the longest lockout (1 h).
A success does not reset the failure count (someone holding one valid code could otherwise clear it).

Store-wide guessing: when failures across all terminals reach `store_max_failures` (30) within
`store_window_ms` (10 minutes), `on_alarm` is called with a `GuessingAlarm` (the caller raises
`alarm.code_guessing`), at most once per window; `guessing_suspected` tells whether the rate is over.

The store key comes from `edge_agent.secrets.STORE_HMAC_KEY` (environment or systemd credential): see
`store_key()`.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import inspect
import logging
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.secrets import STORE_HMAC_KEY, SecretError, read_secret, where
from edge_agent.services.throttle import Throttle

log = logging.getLogger(__name__)

CODE_RE = re.compile(r"[0-9]{8,12}")
HEX_KEY_RE = re.compile(r"(?:[0-9a-fA-F]{2}){32,}")
MIN_DIGITS = 8
MAX_DIGITS = 12
MIN_KEY_BYTES = 32
ORDER_ID_MAX = 128
TERMINAL_MAX = 64
# A generated code that collides with a live one is drawn again; with 10^8 codes and a few hundred live
# ones a second collision in a row is already a one-in-ten-billion event.
ISSUE_ATTEMPTS = 5
_TOMBSTONE_LABEL = b"edge-agent pickup-code tombstone\x00"

CodeState = str  # live | used | cancelled | expired
LIVE, USED, CANCELLED, EXPIRED = "live", "used", "cancelled", "expired"


class PickupCodeError(Exception):
    """A code could not be issued or changed; the message says why (it never contains a code)."""


class InvalidCodeError(PickupCodeError, ValueError):
    """A code given to `issue` is not 8-12 ASCII digits."""


class CodeCollisionError(PickupCodeError):
    """The code given to `issue` is already the live code of another order."""


class StoreKeyError(PickupCodeError):
    """The store's HMAC key is missing or unusable."""


class VerifyStatus(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True)
class VerifyOutcome:
    """What a terminal may show. WRONG carries nothing about the code; only about the terminal's tries."""

    status: VerifyStatus
    order_id: str | None = None
    seconds_left: int = 0
    attempts_left: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is VerifyStatus.OK


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int = 10
    window_ms: int = 10 * 60 * 1000
    first_lockout_ms: int = 30 * 1000
    max_lockout_ms: int = 60 * 60 * 1000
    level_decay_ms: int = 60 * 60 * 1000
    store_max_failures: int = 30
    store_window_ms: int = 10 * 60 * 1000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"ThrottlePolicy.{name} must be at least 1")

    @property
    def max_level(self) -> int:
        """The first level whose lockout is the longest one; levels stop growing there."""
        level = 1
        while self.lockout_ms(level) < self.max_lockout_ms:
            level += 1
        return level

    def lockout_ms(self, level: int) -> int:
        """Level 1 is the first lockout (30 s); each level doubles it, capped at max_lockout_ms."""
        if level >= 40:  # 2**40 * 30 s is far beyond any cap; avoids building huge integers
            return self.max_lockout_ms
        return min(self.first_lockout_ms << (level - 1), self.max_lockout_ms)


@dataclass(frozen=True)
class GuessingAlarm:
    """Failures across all terminals reached the store-wide limit: raise `alarm.code_guessing`."""

    failures: int
    window_s: int
    terminals: tuple[str, ...]
    ts_ms: int


AlarmHook = Callable[[GuessingAlarm], Awaitable[None] | None]


def store_key(env: Mapping[str, str] | None = None) -> bytes:
    """The store's HMAC key from `EDGE_AGENT_STORE_HMAC_KEY` or the credential `store-hmac-key`.

    A value of 64 or more hex digits (an even number) is decoded as hex (`openssl rand -hex 32` or
    `python3 -c "import secrets; print(secrets.token_hex(32))"`); anything else is used as its UTF-8
    bytes and must be at least 32 bytes long. Raises StoreKeyError when missing or too short.
    """
    try:
        value = read_secret(STORE_HMAC_KEY, env)
    except SecretError as exc:
        raise StoreKeyError(f"cannot read {STORE_HMAC_KEY.what}: {exc}") from exc
    if not value:
        raise StoreKeyError(
            f"no {STORE_HMAC_KEY.what}: set {where(STORE_HMAC_KEY)} (64 hex digits, e.g. from `openssl rand -hex 32`)"
        )
    value = value.strip()
    if HEX_KEY_RE.fullmatch(value):
        return bytes.fromhex(value)
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise StoreKeyError(
            f"{STORE_HMAC_KEY.what} in {where(STORE_HMAC_KEY)} is too short: at least {MIN_KEY_BYTES} bytes "
            "or 64 hex digits"
        )
    return key


def code_mac(key: bytes, code: str, label: bytes = b"") -> str:
    """Hex HMAC-SHA256 of a digit code under the store key: what the database holds instead of the code.
    `label` separates uses (courier codes carry one, pickup codes none), so equal digits never share a MAC."""
    return hmac.new(key, label + code.encode("ascii"), hashlib.sha256).hexdigest()


def _check_id(name: str, value: str, max_len: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise PickupCodeError(f"{name}: must be 1-{max_len} printable characters")


class PickupCodes:
    """Issues and checks pickup codes on the `pickup_codes`, `code_attempts` and `code_lockouts` tables."""

    def __init__(
        self,
        db: DurableStore,
        key: bytes,
        *,
        code_digits: int = MIN_DIGITS,
        policy: ThrottlePolicy | None = None,
        on_alarm: AlarmHook | None = None,
        clock: Callable[[], int] = now_ms,
        steady: Callable[[], int] | None = None,
        is_past: Callable[[int], bool] | None = None,
    ) -> None:
        if not MIN_DIGITS <= code_digits <= MAX_DIGITS:
            raise ValueError(f"code_digits must be {MIN_DIGITS}-{MAX_DIGITS}, got {code_digits}")
        if len(key) < 16:
            raise StoreKeyError("the store key must be at least 16 bytes (32 recommended)")
        self._db = db
        self._key = bytes(key)
        self.code_digits = code_digits
        self.policy = policy or ThrottlePolicy()
        self._throttle = Throttle(self.policy, "code")
        self.on_alarm = on_alarm
        self._clock = clock
        # Lockouts and the store-wide failure rate are durations: on the steady clock (agent_clock), so a
        # wall clock set back cannot stretch them. Hold times are wall times, judged by `is_past`, which
        # says no while the wall clock cannot be trusted.
        self._steady = steady or clock
        self._is_past = is_past or (lambda ms: ms <= self._clock())
        self._last_alarm_ms: int | None = None
        self.guessing_suspected = False

    # -- codes ----------------------------------------------------------------------------------

    def new_code(self) -> str:
        """A fresh code: `code_digits` digits, uniform over all 10^n values, leading zeros kept."""
        return f"{secrets.randbelow(10**self.code_digits):0{self.code_digits}d}"

    def mac(self, code: str) -> str:
        return code_mac(self._key, code)

    def _tombstone(self, order_id: str) -> str:
        return hmac.new(self._key, _TOMBSTONE_LABEL + order_id.encode("utf-8"), hashlib.sha256).hexdigest()

    async def issue(self, order_id: str, expires_ms: int, code: str | None = None) -> str:
        """Give `order_id` a live code valid until `expires_ms`; returns the code (the only time it is seen).

        `code` is a cloud-issued code (8-12 digits); without it one is drawn. An order that already has a
        live, cancelled or expired code gets the new one in its place; one whose code was used is refused.
        A given code that is the live code of another order raises CodeCollisionError.
        """
        _check_id("order_id", order_id, ORDER_ID_MAX)
        now = self._clock()
        if self._is_past(expires_ms):
            raise PickupCodeError(f"order {order_id}: expires_ms is not in the future")
        if code is not None:
            if not isinstance(code, str) or not CODE_RE.fullmatch(code):
                raise InvalidCodeError(f"order {order_id}: a pickup code must be {MIN_DIGITS}-{MAX_DIGITS} digits")
            await self._db.write(functools.partial(self._store, order_id=order_id, mac=self.mac(code), now=now,
                                                   expires_ms=expires_ms))
            return code
        for _ in range(ISSUE_ATTEMPTS):
            drawn = self.new_code()
            try:
                await self._db.write(functools.partial(self._store, order_id=order_id, mac=self.mac(drawn), now=now,
                                                       expires_ms=expires_ms))
            except CodeCollisionError:
                continue
            return drawn
        raise PickupCodeError(f"order {order_id}: no free code after {ISSUE_ATTEMPTS} draws")

    def _store(self, conn: sqlite3.Connection, order_id: str, mac: str, now: int, expires_ms: int) -> None:
        own = conn.execute("SELECT state FROM pickup_codes WHERE order_id = ?", (order_id,)).fetchone()
        if own is not None and own[0] == USED:
            raise PickupCodeError(f"order {order_id}: its code was already used; it cannot get another")
        other = conn.execute("SELECT order_id, state FROM pickup_codes WHERE code_mac = ?", (mac,)).fetchone()
        if other is not None and other[0] != order_id:
            if other[1] == LIVE:
                raise CodeCollisionError(
                    f"order {order_id}: the code is already the live code of another order; issue a different code"
                )
            conn.execute(
                "UPDATE pickup_codes SET code_mac = ? WHERE order_id = ?", (self._tombstone(other[0]), other[0])
            )
        conn.execute(
            "INSERT INTO pickup_codes(order_id, code_mac, state, created_ms, expires_ms, used_ms) "
            "VALUES (?, ?, 'live', ?, ?, NULL) "
            "ON CONFLICT(order_id) DO UPDATE SET code_mac = excluded.code_mac, state = 'live', "
            "created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, used_ms = NULL",
            (order_id, mac, now, expires_ms),
        )

    async def consume(self, order_id: str) -> bool:
        """Mark the order's live code used (dead for good); False when it was not live."""
        now = self._clock()
        return await self._db.write(lambda c: c.execute(
            "UPDATE pickup_codes SET state = 'used', used_ms = ? WHERE order_id = ? AND state = 'live'", (now, order_id)
        ).rowcount == 1)

    async def cancel(self, order_id: str) -> bool:
        """Kill the order's live code; False when it was not live."""
        return await self._db.write(lambda c: c.execute(
            "UPDATE pickup_codes SET state = 'cancelled' WHERE order_id = ? AND state = 'live'", (order_id,)
        ).rowcount == 1)

    async def expire_due(self, now_ms: int | None = None) -> list[str]:
        """Mark every live code whose time is up as expired; returns their order ids."""
        now = self._clock() if now_ms is None else now_ms
        rows = await self._db.write(lambda c: c.execute(
            "UPDATE pickup_codes SET state = 'expired' WHERE state = 'live' AND expires_ms <= ? RETURNING order_id",
            (now,),
        ).fetchall())
        return sorted(r[0] for r in rows)

    def state(self, order_id: str) -> CodeState | None:
        row = self._db.read(lambda c: c.execute(
            "SELECT state FROM pickup_codes WHERE order_id = ?", (order_id,)
        ).fetchone())
        return None if row is None else str(row[0])

    async def purge_dead(self, older_than_ms: int) -> int:
        """Delete used, cancelled and expired codes whose order ended before `older_than_ms` (by used_ms,
        else expires_ms), keeping the table bounded; returns how many rows went. Live codes are never touched."""
        return await self._db.write(lambda c: c.execute(
            "DELETE FROM pickup_codes WHERE state != 'live' AND COALESCE(used_ms, expires_ms) < ?", (older_than_ms,)
        ).rowcount)

    def lockout_seconds_left(self, terminal: str) -> int:
        """Seconds until `terminal` may try a code again (0 when it is not locked out), for the locker screen."""
        tick = self._steady()
        return self._db.read(lambda c: self._throttle.seconds_left(c, terminal, tick))

    # -- checking -------------------------------------------------------------------------------

    async def verify(self, terminal: str, code: str, *, consume: bool = False) -> VerifyOutcome:
        """Check a code typed at `terminal`. With `consume`, a good code is also marked used, atomically
        (two terminals typing the same code at once: exactly one gets OK)."""
        _check_id("terminal", terminal, TERMINAL_MAX)
        # Only well-formed input gets a MAC; anything else is simply a failure (and still counted).
        mac = self.mac(code) if isinstance(code, str) and CODE_RE.fullmatch(code) else None
        now, tick = self._clock(), self._steady()
        outcome, store_failures = await self._db.write(lambda c: self._verify(c, terminal, mac, now=now, tick=tick,
                                                                                  consume=consume))
        if outcome.status is VerifyStatus.WRONG:
            await self._check_store_rate(store_failures, tick, now)
        return outcome

    def _verify(
        self, conn: sqlite3.Connection, terminal: str, mac: str | None, *, now: int, tick: int, consume: bool
    ) -> tuple[VerifyOutcome, int]:
        """`now` is the wall clock (hold times, used_ms); `tick` the steady clock (the throttle's tables)."""
        p = self.policy
        seconds_left = self._throttle.seconds_left(conn, terminal, tick)
        if seconds_left > 0:
            return VerifyOutcome(VerifyStatus.LOCKED_OUT, seconds_left=seconds_left), 0
        if mac is not None:
            row = conn.execute(
                "SELECT order_id, code_mac, state, expires_ms FROM pickup_codes WHERE code_mac = ?", (mac,)
            ).fetchone()
            live = row is not None and row[2] == LIVE and not self._is_past(row[3])
            if live and row is not None and hmac.compare_digest(str(row[1]), mac):
                self._throttle.success(conn, terminal, tick)
                if consume:
                    conn.execute(
                        "UPDATE pickup_codes SET state = 'used', used_ms = ? WHERE order_id = ?", (now, row[0])
                    )
                return VerifyOutcome(VerifyStatus.OK, order_id=str(row[0])), 0
        failure = self._throttle.failure(conn, terminal, tick)
        store_failures = conn.execute(
            "SELECT COUNT(*) FROM code_attempts WHERE ts_ms > ? AND ok = 0", (tick - p.store_window_ms,)
        ).fetchone()[0]
        outcome = VerifyOutcome(VerifyStatus.WRONG, attempts_left=max(0, p.max_failures - failure.failures))
        return outcome, int(store_failures)

    async def _check_store_rate(self, failures: int, tick: int, now: int) -> None:
        """`tick` on the steady clock (the attempts table), `now` the wall time the alarm carries."""
        p = self.policy
        self.guessing_suspected = failures >= p.store_max_failures
        if not self.guessing_suspected:
            return
        if self._last_alarm_ms is not None and tick - self._last_alarm_ms < p.store_window_ms:
            return
        self._last_alarm_ms = tick
        rows = self._db.read(lambda c: c.execute(
            "SELECT DISTINCT terminal FROM code_attempts WHERE ts_ms > ? AND ok = 0 ORDER BY terminal LIMIT 100",
            (tick - p.store_window_ms,),
        ).fetchall())
        alarm = GuessingAlarm(failures, p.store_window_ms // 1000, tuple(r[0] for r in rows), now)
        log.warning("possible code guessing: %d failed codes store-wide in %d s", failures, alarm.window_s)
        if self.on_alarm is None:
            return
        try:
            result = self.on_alarm(alarm)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("the code-guessing alarm hook failed")
