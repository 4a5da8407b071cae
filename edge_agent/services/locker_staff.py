"""Staff and courier sign-in on the locker screens: PIN accounts, one-time courier codes, throttles, sessions.

Issue (pickup lockers): staff or a courier signs in on the locker screen (staff PIN or one-time courier code)
before loading; staff actions are authenticated (DESIGN.md section 7).

- **Staff accounts** (`locker_staff`): a staff number of 3-8 digits and a PIN of 6-12 digits, stored only as
  an argon2id hash (argon2-cffi). Trivial PINs are refused (one digit repeated, ascending or descending runs
  such as 123456 or 987654, short patterns repeated such as 121212, a few common ones, the staff number).
  Hashing and verifying take ~100 ms of CPU and 64 MiB: they run in a worker thread (`asyncio.to_thread`),
  never on the event loop, which also drives the doors.
- **Courier codes** (`courier_codes`): 8-12 digits, drawn with `secrets` or issued by the cloud, stored only as
  HMAC-SHA256 under the store key (`pickup_codes.code_mac` with a label of their own); bound to a courier id,
  valid until a time, dead after one sign-in, revocable (which also ends the courier's sessions).
- **Throttles** (`throttle.Throttle` on `signin_attempts` / `signin_lockouts`): per terminal
  `locker-staff:{bank}` the pickup codes' policy (10 failures in 10 minutes, then lockouts from 30 s doubling
  to 1 h); per staff number 5 failures in a minute lock that number (60 s, doubling). Numbers that do not
  exist are throttled the same way, so a lockout tells nothing. When a staff terminal locks out, `on_alarm`
  gets a `GuessingAlarm` naming it (wiring/lockers.py raises `alarm.code_guessing`).
- **One answer** for every failure, whether the staff number exists or not, the PIN is wrong, or the courier
  code never existed, was used, revoked or expired. An unknown staff number is checked against a dummy argon2
  hash so that the time taken does not tell either; MACs are compared with `hmac.compare_digest`.
- A staff sign-in goes through `sign_in_gate.SignInGate`, as the web UI's does: the attempt is counted against
  the terminal and the number before argon2 runs, so parallel requests get no more checks than sequential ones;
  at most one argon2 computation (64 MiB) runs at a time (one lock). A courier code is checked and used up in
  one transaction, under the same lock.
- **Sessions** (`locker_sessions.SessionStore`): in memory, bound to the bank, 60 s idle / 15 min absolute.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hmac
import itertools
import logging
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.services.locker_sessions import Role, Session, SessionStore
from edge_agent.services.pickup_codes import AlarmHook, GuessingAlarm, ThrottlePolicy, code_mac
from edge_agent.services.sign_in_gate import Argon2Check, Guard, SignInGate
from edge_agent.services.throttle import Throttle

log = logging.getLogger(__name__)

STAFF_NUMBER_RE = re.compile(r"[0-9]{3,8}")
PIN_RE = re.compile(r"[0-9]{6,12}")
COURIER_CODE_RE = re.compile(r"[0-9]{8,12}")
COURIER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
NAME_MAX = 100
COURIER_CODE_DIGITS = 8
DEFAULT_COURIER_VALID_MS = 12 * 3600 * 1000
MAX_COURIER_VALID_MS = 7 * 24 * 3600 * 1000
# Dead courier codes are kept this long for the record, then removed as new ones are issued.
DEAD_CODES_KEPT_MS = 30 * 24 * 3600 * 1000
ISSUE_ATTEMPTS = 5

TERMINAL_POLICY = ThrottlePolicy()  # the pickup codes' own: 10 failures in 10 minutes, 30 s doubling to 1 h
STAFF_NUMBER_POLICY = ThrottlePolicy(max_failures=5, window_ms=60 * 1000, first_lockout_ms=60 * 1000)
_COURIER_LABEL = b"edge-agent courier-code\x00"

# PINs people choose when told to choose one; runs and repeats are caught by rule, these by list.
_COMMON_PINS = frozenset({"112233", "111222", "147258", "159753", "147852", "520131", "5201314", "102030", "123321",
                          "654456", "258369", "123654", "111000", "000111"})


class StaffError(Exception):
    """An account or courier code could not be created or changed; the message says why (never a secret)."""


class WeakPinError(StaffError, ValueError):
    """The PIN is malformed or too easy to guess."""


class SignInStatus(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True)
class SignInResult:
    status: SignInStatus
    token: str | None = None
    session: Session | None = None
    seconds_left: int = 0


@dataclass(frozen=True)
class IssuedCode:
    code: str  # shown once: the database holds only its MAC
    valid_until_ms: int


@dataclass(frozen=True)
class StaffAccount:
    staff_number: str
    name: str | None
    created_ms: int
    last_sign_in_ms: int | None


def terminal_key(bank: str) -> str:
    return f"locker-staff:{bank}"


def check_pin(pin: str, staff_number: str | None = None) -> None:
    """Raise WeakPinError unless `pin` is 6-12 digits and not trivially guessable."""
    if not isinstance(pin, str) or not PIN_RE.fullmatch(pin):
        raise WeakPinError("a PIN must be 6-12 digits")
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    if steps == {0}:
        raise WeakPinError("a PIN must not be one digit repeated")
    if steps in ({1}, {9}):  # 123456, 987654, also wrapping: 890123
        raise WeakPinError("a PIN must not be a run of digits (123456, 654321)")
    if any(pin == pin[:n] * (len(pin) // n) for n in range(2, len(pin) // 2 + 1) if len(pin) % n == 0):
        raise WeakPinError("a PIN must not be a short pattern repeated (121212, 456456)")
    if pin in _COMMON_PINS:
        raise WeakPinError("this PIN is among the most common ones; choose another")
    if staff_number is not None and staff_number in pin:
        raise WeakPinError("a PIN must not contain the staff number")


class LockerStaff:
    """Accounts, courier codes and sign-in for the locker screens, on the agent's database."""

    def __init__(
        self,
        db: DurableStore,
        key: bytes | None,
        *,
        hasher: PasswordHasher | None = None,
        sessions: SessionStore | None = None,
        terminal_policy: ThrottlePolicy = TERMINAL_POLICY,
        staff_number_policy: ThrottlePolicy = STAFF_NUMBER_POLICY,
        on_alarm: AlarmHook | None = None,
        clock: Callable[[], int] = now_ms,
        steady: Callable[[], int] | None = None,
    ) -> None:
        if key is not None and len(key) < 16:
            raise StaffError("the store key must be at least 16 bytes (32 recommended)")
        self._db = db
        # None: staff accounts only (the CLI's add, list, remove); courier codes need the key.
        self._key = None if key is None else bytes(key)
        # argon2id with argon2-cffi's defaults (RFC 9106 low-memory profile: t=3, m=64 MiB, p=4).
        self._hasher = hasher or PasswordHasher(type=Type.ID)
        if self._hasher.type is not Type.ID:
            raise StaffError("PIN hashes must be argon2id")
        self.sessions = SessionStore() if sessions is None else sessions  # (an empty store is falsy)
        self._terminals = Throttle(terminal_policy, "signin", what="staff terminal")
        self._numbers = Throttle(staff_number_policy, "signin", what="staff number")
        self.on_alarm = on_alarm
        self._clock = clock
        self._steady = steady or clock  # the throttles' clock: lockouts are durations (agent_clock)
        # One argon2 computation at a time; courier sign-ins are serialised under the same lock.
        self._argon2 = Argon2Check(self._hasher)
        self._lock = self._argon2.lock
        self._gate = SignInGate(db, steady=self._steady)

    # -- staff accounts ---------------------------------------------------------------------------

    async def add_staff(self, staff_number: str, pin: str, name: str | None = None, *, replace: bool = False) -> None:
        """Create an account (or, with `replace`, set a new PIN and name for an existing one)."""
        if not isinstance(staff_number, str) or not STAFF_NUMBER_RE.fullmatch(staff_number):
            raise StaffError("a staff number must be 3-8 digits")
        if name is not None and (len(name) > NAME_MAX or not name.isprintable()):
            raise StaffError(f"a name must be at most {NAME_MAX} printable characters")
        check_pin(pin, staff_number)
        pin_hash = await asyncio.to_thread(self._hasher.hash, pin)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            exists = conn.execute("SELECT 1 FROM locker_staff WHERE staff_number = ?", (staff_number,)).fetchone()
            if exists and not replace:
                raise StaffError(f"staff number {staff_number} exists already")
            conn.execute(
                "INSERT INTO locker_staff(staff_number, name, pin_hash, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(staff_number) DO UPDATE SET name = excluded.name, pin_hash = excluded.pin_hash, "
                "updated_ms = excluded.updated_ms",
                (staff_number, name, pin_hash, now, now),
            )

        await self._db.write(job)
        log.info("locker staff %s %s", staff_number, "updated" if replace else "added")

    def list_staff(self) -> list[StaffAccount]:
        rows = self._db.read(lambda c: c.execute(
            "SELECT staff_number, name, created_ms, last_sign_in_ms FROM locker_staff ORDER BY staff_number"
        ).fetchall())
        return [StaffAccount(str(r[0]), r[1], int(r[2]), None if r[3] is None else int(r[3])) for r in rows]

    async def remove_staff(self, staff_number: str) -> bool:
        removed = await self._db.write(lambda c: c.execute(
            "DELETE FROM locker_staff WHERE staff_number = ?", (staff_number,)
        ).rowcount == 1)
        self.sessions.end_actor(f"staff:{staff_number}")
        return bool(removed)

    # -- courier codes ----------------------------------------------------------------------------

    def _courier_mac(self, code: str) -> str:
        if self._key is None:
            raise StaffError("courier codes need the store key (EDGE_AGENT_STORE_HMAC_KEY)")
        return code_mac(self._key, code, _COURIER_LABEL)

    async def issue_courier_code(self, courier_id: str, valid_until_ms: int | None = None,
                                 code: str | None = None) -> IssuedCode:
        """A one-time code for `courier_id`, valid until `valid_until_ms` (12 h from now when None); returns
        the code, the only time it is seen. `code` is a cloud-issued one (8-12 digits)."""
        if not isinstance(courier_id, str) or not COURIER_ID_RE.fullmatch(courier_id):
            raise StaffError("a courier id must be 1-64 characters of A-Z a-z 0-9 _ . : - (starting alphanumeric)")
        now = self._clock()
        until = now + DEFAULT_COURIER_VALID_MS if valid_until_ms is None else valid_until_ms
        if until <= now:
            raise StaffError("valid_until is not in the future")
        if until - now > MAX_COURIER_VALID_MS:
            raise StaffError("a courier code may be valid for at most 7 days")
        if code is not None:
            if not isinstance(code, str) or not COURIER_CODE_RE.fullmatch(code):
                raise StaffError("a courier code must be 8-12 digits")
            await self._db.write(lambda c: self._store_code(c, courier_id, self._courier_mac(code), now, until))
            return IssuedCode(code, until)
        for _ in range(ISSUE_ATTEMPTS):
            drawn = f"{secrets.randbelow(10**COURIER_CODE_DIGITS):0{COURIER_CODE_DIGITS}d}"
            mac = self._courier_mac(drawn)
            store = functools.partial(self._store_code, courier_id=courier_id, mac=mac, now=now, until=until, draw=True)
            if await self._db.write(store):
                return IssuedCode(drawn, until)
        raise StaffError(f"no free courier code after {ISSUE_ATTEMPTS} draws")

    def _store_code(self, conn: sqlite3.Connection, courier_id: str, mac: str, now: int, until: int,
                    *, draw: bool = False) -> bool:
        conn.execute(
            "DELETE FROM courier_codes WHERE state != 'live' AND COALESCE(used_ms, valid_until_ms) < ?",
            (now - DEAD_CODES_KEPT_MS,),
        )
        row = conn.execute("SELECT state, valid_until_ms FROM courier_codes WHERE code_mac = ?", (mac,)).fetchone()
        if row is not None and row[0] == "live" and int(row[1]) > now:
            if draw:
                return False
            raise StaffError("this code is already a live courier code; issue a different one")
        # A dead row with the same MAC (the same digits, long used) gives way to the new code.
        conn.execute("DELETE FROM courier_codes WHERE code_mac = ?", (mac,))
        conn.execute(
            "INSERT INTO courier_codes(code_mac, courier_id, state, created_ms, valid_until_ms, used_ms) "
            "VALUES (?, ?, 'live', ?, ?, NULL)",
            (mac, courier_id, now, until),
        )
        return True

    async def revoke_courier(self, courier_id: str) -> int:
        """Kill every live code of `courier_id` and end its sessions; returns how many live codes died."""
        now = self._clock()
        recent = now - int(self.sessions.absolute_s * 1000) - 1000

        def job(c: sqlite3.Connection) -> int:
            count = c.execute(
                "UPDATE courier_codes SET state = 'revoked' WHERE courier_id = ? AND state = 'live' "
                "AND valid_until_ms > ?",
                (courier_id, now),
            ).rowcount
            # Codes used to sign in recently: revoked too, so that a session they opened in another process's
            # view (the CLI revokes while the agent runs) ends at its next use.
            c.execute(
                "UPDATE courier_codes SET state = 'revoked' WHERE courier_id = ? AND state = 'used' AND used_ms > ?",
                (courier_id, recent),
            )
            return int(count)

        count = await self._db.write(job)
        self.sessions.end_actor(f"courier:{courier_id}")
        return count

    def courier_codes(self, courier_id: str) -> list[tuple[str, int]]:
        """(state, valid_until_ms) of the courier's codes, newest first: for tests and support."""
        rows = self._db.read(lambda c: c.execute(
            "SELECT state, valid_until_ms FROM courier_codes WHERE courier_id = ? ORDER BY created_ms DESC",
            (courier_id,),
        ).fetchall())
        return [(str(r[0]), int(r[1])) for r in rows]

    # -- signing in -------------------------------------------------------------------------------

    async def sign_in_staff(self, bank: str, staff_number: str, pin: str) -> SignInResult:
        """A staff member's PIN at a bank's screen, throttled per terminal and per staff number (sign_in_gate: the
        attempt is counted before argon2 runs)."""
        terminal = terminal_key(bank)
        number_ok = isinstance(staff_number, str) and STAFF_NUMBER_RE.fullmatch(staff_number) is not None
        pin_ok = isinstance(pin, str) and PIN_RE.fullmatch(pin) is not None
        guards = [Guard(self._terminals, terminal)]
        if number_ok:
            guards.append(Guard(self._numbers, f"staff-number:{staff_number}"))
        now = self._clock()
        new_hash: str | None = None

        async def check() -> bool:
            nonlocal new_hash
            row = None
            if number_ok:
                row = self._db.read(lambda c: c.execute(
                    "SELECT pin_hash FROM locker_staff WHERE staff_number = ?", (staff_number,)
                ).fetchone())
            ok, new_hash = await self._argon2.check(
                None if row is None else str(row[0]), pin if pin_ok else "", well_formed=pin_ok
            )
            return ok

        def success(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE locker_staff SET last_sign_in_ms = ?, pin_hash = COALESCE(?, pin_hash) WHERE staff_number = ?",
                (now, new_hash, staff_number),
            )

        result = await self._gate.attempt(guards, check, on_success=success)
        if not result.checked:
            return SignInResult(SignInStatus.LOCKED_OUT, seconds_left=result.seconds_left)
        if not result.ok:
            terminal_failure = result.failures[0]
            if terminal_failure.locked_ms:
                await self._raise_alarm(terminal, terminal_failure.failures, now)
            return SignInResult(SignInStatus.WRONG)
        return self._start(bank, "staff", f"staff:{staff_number}", staff_number)

    async def sign_in_courier(self, bank: str, code: str) -> SignInResult:
        terminal = terminal_key(bank)
        mac = self._courier_mac(code) if isinstance(code, str) and COURIER_CODE_RE.fullmatch(code) else None
        async with self._lock:
            now, tick = self._clock(), self._steady()
            left = self._db.read(lambda c: self._terminals.seconds_left(c, terminal, tick))
            if left > 0:
                return SignInResult(SignInStatus.LOCKED_OUT, seconds_left=left)

            def use(c: sqlite3.Connection) -> str | None:
                if mac is None:
                    return None
                row = c.execute(
                    "SELECT code_mac, courier_id, state, valid_until_ms FROM courier_codes WHERE code_mac = ?", (mac,)
                ).fetchone()
                if row is None or not hmac.compare_digest(str(row[0]), mac) or row[2] != "live" or row[3] <= now:
                    return None
                # Used up in the same transaction that accepts it: two screens typing it at once, one wins.
                c.execute("UPDATE courier_codes SET state = 'used', used_ms = ? WHERE code_mac = ?", (now, mac))
                self._terminals.success(c, terminal, tick)
                return str(row[1])

            courier_id = await self._db.write(use)
            if courier_id is None:
                await self._failed(terminal, tick, now)
                return SignInResult(SignInStatus.WRONG)
        assert mac is not None
        return self._start(bank, "courier", f"courier:{courier_id}", mac)

    def _start(self, bank: str, role: Role, actor: str, credential: str) -> SignInResult:
        token = self.sessions.start(bank, role, actor, credential)
        log.info("%s signed in at locker bank %s", actor, bank)
        session = self.sessions.use(token, bank)
        return SignInResult(SignInStatus.OK, token=token, session=session)

    async def _failed(self, terminal: str, tick: int, now: int) -> None:
        """A wrong courier code: `tick` on the steady clock (the throttles' tables), `now` the wall time the alarm
        carries. (The code is checked inside one transaction, so it needs no reservation.)"""
        def record(c: sqlite3.Connection) -> int:
            failure = self._terminals.failure(c, terminal, tick)
            return failure.failures if failure.locked_ms else 0

        locked_after = await self._db.write(record)
        if locked_after:
            await self._raise_alarm(terminal, locked_after, now)

    async def _raise_alarm(self, terminal: str, failures: int, now: int) -> None:
        """A staff terminal locked out for guessing: alarm.code_guessing through `on_alarm` (wiring/lockers.py)."""
        if self.on_alarm is not None:
            policy = self._terminals.policy
            alarm = GuessingAlarm(failures, policy.window_ms // 1000, (terminal,), now)
            try:
                result = self.on_alarm(alarm)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("the sign-in guessing alarm hook failed")

    def session(self, token: str, bank: str) -> Session | None:
        """The live session for `token` at `bank` (refreshing its idle timer), or None. A staff member removed
        since, or a courier revoked since, is signed out here."""
        session = self.sessions.use(token, bank)
        if session is None:
            return None
        if session.role == "staff":
            still = self._db.read(lambda c: c.execute(
                "SELECT 1 FROM locker_staff WHERE staff_number = ?", (session.credential,)
            ).fetchone())
        else:
            still = self._db.read(lambda c: c.execute(
                "SELECT 1 FROM courier_codes WHERE code_mac = ? AND state = 'used'", (session.credential,)
            ).fetchone())
        if still is None:
            self.sessions.end(token)
            return None
        return session

    def sign_out(self, token: str) -> bool:
        return self.sessions.end(token)
