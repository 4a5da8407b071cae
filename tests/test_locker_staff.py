"""LockerStaff and SessionStore on a real migrated SQLite file with real argon2id hashing (light parameters
where a test hashes many times; the defaults where the parameters are the point)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher, Type

from edge_agent.services.locker_sessions import SessionStore
from edge_agent.services.locker_staff import (
    COURIER_CODE_RE,
    LockerStaff,
    SignInStatus,
    StaffError,
    WeakPinError,
    check_pin,
)
from edge_agent.services.pickup_codes import GuessingAlarm, PickupCodes
from edge_agent.storage import Database

KEY = bytes(range(32))
T0 = 1_800_000_000_000
HOUR_MS = 3600 * 1000
LIGHT = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
OK, WRONG, LOCKED = SignInStatus.OK, SignInStatus.WRONG, SignInStatus.LOCKED_OUT


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MsClock(Clock):
    def __call__(self) -> int:
        return int(self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds * 1000


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, counting verifications (to show an unknown number is verified too)."""

    verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        type(self).verifies += 1
        return super().verify(hash, password)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def clock() -> MsClock:
    return MsClock(T0)


@pytest.fixture
def mono() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def staff(db: Database, clock: MsClock, mono: Clock) -> LockerStaff:
    return LockerStaff(db, KEY, hasher=LIGHT, sessions=SessionStore(clock=mono), clock=clock)


# -- PINs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["000000", "999999999", "123456", "234567", "654321", "987654", "890123",
                                 "0123456789", "121212", "123123", "456456", "12341234", "007007", "112233", "12345", "48291a", "",
                                 "4829151234567", "771234", "４８２９１５"])
def test_weak_or_malformed_pins_are_refused(pin: str) -> None:
    with pytest.raises(WeakPinError):
        check_pin(pin, staff_number="1234")


@pytest.mark.parametrize("pin", ["482915", "730194", "05918273", "100200300"])
def test_reasonable_pins_pass(pin: str) -> None:
    check_pin(pin, staff_number="1234")


async def test_the_pin_is_stored_only_as_an_argon2id_hash(tmp_path: Path) -> None:
    database = Database(tmp_path / "data")
    try:
        svc = LockerStaff(database, KEY)  # argon2-cffi's defaults
        await svc.add_staff("1234", "482915", "Li Lei")
        pin_hash = database.read(lambda c: c.execute("SELECT pin_hash FROM locker_staff").fetchone()[0])
        assert pin_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert (await svc.sign_in_staff("A", "1234", "482915")).status is OK
    finally:
        database.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    assert b"482915" not in raw and "482915".encode("utf-16-le") not in raw


async def test_staff_accounts_add_list_replace_remove(staff: LockerStaff) -> None:
    await staff.add_staff("1234", "482915", "Wang Fang")
    with pytest.raises(StaffError, match="exists already"):
        await staff.add_staff("1234", "730194")
    for number in ("12", "123456789", "12a4", ""):
        with pytest.raises(StaffError, match="3-8 digits"):
            await staff.add_staff(number, "482915")
    with pytest.raises(WeakPinError):
        await staff.add_staff("5678", "123456")
    assert [(a.staff_number, a.name) for a in staff.list_staff()] == [("1234", "Wang Fang")]
    await staff.add_staff("1234", "730194", "Wang Fang", replace=True)
    assert (await staff.sign_in_staff("A", "1234", "482915")).status is WRONG
    assert (await staff.sign_in_staff("A", "1234", "730194")).status is OK
    assert staff.list_staff()[0].last_sign_in_ms == T0
    assert await staff.remove_staff("1234") and not await staff.remove_staff("1234")
    assert (await staff.sign_in_staff("A", "1234", "730194")).status is WRONG


async def test_removing_staff_ends_their_sessions(staff: LockerStaff) -> None:
    await staff.add_staff("1234", "482915")
    result = await staff.sign_in_staff("A", "1234", "482915")
    assert result.token is not None and staff.session(result.token, "A") is not None
    # Removed behind the service's back (the CLI is another process): the next use finds no account.
    await staff._db.write(lambda c: c.execute("DELETE FROM locker_staff"))
    assert staff.session(result.token, "A") is None


async def test_an_unknown_staff_number_costs_an_argon2_verification_too(db: Database, clock: MsClock) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=1024, parallelism=1)
    svc = LockerStaff(db, KEY, hasher=hasher, clock=clock)
    await svc.add_staff("1234", "482915")
    before = CountingHasher.verifies
    assert (await svc.sign_in_staff("A", "9999", "482915")).status is WRONG
    assert (await svc.sign_in_staff("A", "1234", "730194")).status is WRONG
    assert (await svc.sign_in_staff("A", "12", "x")).status is WRONG
    assert CountingHasher.verifies - before == 3


async def test_an_old_hash_is_upgraded_at_sign_in(db: Database, clock: MsClock) -> None:
    light = LockerStaff(db, KEY, hasher=LIGHT, clock=clock)
    await light.add_staff("1234", "482915")
    full = LockerStaff(db, KEY, clock=clock)
    assert (await full.sign_in_staff("A", "1234", "482915")).status is OK
    pin_hash = db.read(lambda c: c.execute("SELECT pin_hash FROM locker_staff").fetchone()[0])
    assert pin_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


async def test_hashing_and_verifying_run_off_the_event_loop(db: Database, clock: MsClock) -> None:
    # argon2id with the defaults takes ~100 ms of CPU; on the loop it would stall every door (the unlock latency
    # target is 50 ms). Timing the loop in a test would be flaky, so the test checks where argon2 runs.
    threads: list[int] = []

    class Recording(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            threads.append(threading.get_ident())
            return super().hash(password, salt=salt)

        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            threads.append(threading.get_ident())
            return super().verify(hash, password)

    svc = LockerStaff(db, KEY, hasher=Recording(), clock=clock)
    await svc.add_staff("1234", "482915")
    assert (await svc.sign_in_staff("A", "1234", "482915")).status is OK
    assert (await svc.sign_in_staff("A", "4321", "482915")).status is WRONG
    assert len(threads) >= 4 and threading.get_ident() not in threads


# -- courier codes --------------------------------------------------------------------------------


async def test_a_courier_code_signs_in_once(staff: LockerStaff, db: Database) -> None:
    issued = await staff.issue_courier_code("sf-7")
    assert COURIER_CODE_RE.fullmatch(issued.code) and issued.valid_until_ms == T0 + 12 * HOUR_MS
    stored = db.read(lambda c: c.execute("SELECT code_mac, courier_id, state FROM courier_codes").fetchall())
    assert stored[0][1:] == ("sf-7", "live") and issued.code not in stored[0][0]
    # Not the pickup codes' MAC of the same digits: the label separates them.
    assert stored[0][0] != PickupCodes(db, KEY).mac(issued.code)
    first = await staff.sign_in_courier("A", issued.code)
    assert first.status is OK and first.session is not None
    assert first.session.role == "courier" and first.session.actor == "courier:sf-7"
    assert (await staff.sign_in_courier("A", issued.code)).status is WRONG
    assert (await staff.sign_in_courier("B", issued.code)).status is WRONG
    assert staff.courier_codes("sf-7") == [("used", T0 + 12 * HOUR_MS)]


async def test_a_courier_code_expires(staff: LockerStaff, clock: MsClock) -> None:
    issued = await staff.issue_courier_code("sf-7", T0 + HOUR_MS, code="5501928374")
    assert issued.code == "5501928374"
    clock.advance(3600)
    assert (await staff.sign_in_courier("A", "5501928374")).status is WRONG


async def test_courier_codes_are_revoked_and_checked(staff: LockerStaff) -> None:
    a = await staff.issue_courier_code("sf-7")
    b = await staff.issue_courier_code("sf-7")
    other = await staff.issue_courier_code("jd-1")
    assert await staff.revoke_courier("sf-7") == 2
    assert (await staff.sign_in_courier("A", a.code)).status is WRONG
    assert (await staff.sign_in_courier("A", b.code)).status is WRONG
    assert (await staff.sign_in_courier("A", other.code)).status is OK
    with pytest.raises(StaffError, match="already a live courier code"):
        await staff.issue_courier_code("jd-2", code=(c := (await staff.issue_courier_code("jd-3")).code))
    assert (await staff.sign_in_courier("A", c)).status is OK  # still jd-3's
    for bad in ({"courier_id": "bad id"}, {"courier_id": "x", "valid_until_ms": T0}, {"courier_id": "x", "code": "123"},
                {"courier_id": "x", "valid_until_ms": T0 + 8 * 24 * HOUR_MS}):
        with pytest.raises(StaffError):
            await staff.issue_courier_code(**bad)


async def test_revoking_a_courier_ends_its_sessions(staff: LockerStaff) -> None:
    issued = await staff.issue_courier_code("sf-7")
    result = await staff.sign_in_courier("A", issued.code)
    assert result.token is not None and staff.session(result.token, "A") is not None
    await staff.revoke_courier("sf-7")
    assert staff.session(result.token, "A") is None


# -- throttles ------------------------------------------------------------------------------------


async def test_ten_failures_lock_the_terminal_for_every_kind_of_sign_in(staff: LockerStaff, clock: MsClock) -> None:
    await staff.add_staff("1234", "482915")
    issued = await staff.issue_courier_code("sf-7")
    alarms: list[GuessingAlarm] = []
    staff.on_alarm = alarms.append
    for i in range(10):
        if i % 2:
            assert (await staff.sign_in_courier("A", f"{i:08d}")).status is WRONG
        else:
            assert (await staff.sign_in_staff("A", f"90{i}", "730194")).status is WRONG
    for attempt in (staff.sign_in_staff("A", "1234", "482915"), staff.sign_in_courier("A", issued.code)):
        result = await attempt
        assert result.status is LOCKED and result.seconds_left == 30
    assert [a.terminals for a in alarms] == [("locker-staff:A",)]
    assert (await staff.sign_in_staff("B", "1234", "482915")).status is OK  # another screen, another terminal
    clock.advance(30)
    assert (await staff.sign_in_courier("A", issued.code)).status is OK  # the lockout ended; the code still live
    # Still over the limit in the window: one more failure locks it again, for twice as long.
    assert (await staff.sign_in_courier("A", "00000000")).status is WRONG
    assert (await staff.sign_in_staff("A", "1234", "482915")).seconds_left == 60


async def test_five_failures_in_a_minute_lock_a_staff_number_everywhere(staff: LockerStaff, clock: MsClock) -> None:
    await staff.add_staff("1234", "482915")
    for bank in ("A", "B", "C", "D", "E"):
        assert (await staff.sign_in_staff(bank, "1234", "730194")).status is WRONG
    for bank in ("A", "F"):
        result = await staff.sign_in_staff(bank, "1234", "482915")
        assert result.status is LOCKED and result.seconds_left == 60
    assert (await staff.sign_in_courier("F", "12345678")).status is WRONG  # the terminal itself is not locked
    # A number that does not exist is locked the same way: a lockout tells nothing about which numbers exist.
    for bank in ("A", "B", "C", "D", "E"):
        assert (await staff.sign_in_staff(bank, "5555", "730194")).status is WRONG
    assert (await staff.sign_in_staff("G", "5555", "730194")).status is LOCKED
    clock.advance(60)
    assert (await staff.sign_in_staff("G", "1234", "482915")).status is OK


# -- sessions -------------------------------------------------------------------------------------


async def test_sessions_expire_when_idle_and_after_15_minutes(staff: LockerStaff, mono: Clock) -> None:
    await staff.add_staff("1234", "482915")
    token = (await staff.sign_in_staff("A", "1234", "482915")).token
    assert token is not None
    mono.now += 59
    assert staff.session(token, "A") is not None  # used: the idle timer starts again
    mono.now += 59
    assert staff.session(token, "A") is not None
    mono.now += 60
    assert staff.session(token, "A") is None
    token = (await staff.sign_in_staff("A", "1234", "482915")).token
    assert token is not None
    for _ in range(14):
        mono.now += 59
        assert staff.session(token, "A") is not None
    mono.now += 900 - 14 * 59
    assert staff.session(token, "A") is None, "15 minutes after sign-in, however busy"


async def test_sessions_are_bound_to_their_bank_and_end_at_sign_out(staff: LockerStaff) -> None:
    await staff.add_staff("1234", "482915")
    result = await staff.sign_in_staff("A", "1234", "482915")
    assert result.token is not None and result.session is not None
    assert result.session.actor == "staff:1234" and result.session.role == "staff" and result.session.bank == "A"
    assert staff.session(result.token, "B") is None
    assert staff.session(result.token, "A") is not None, "trying another bank does not end it"
    assert staff.session(result.token + "x", "A") is None
    assert staff.sign_out(result.token) and not staff.sign_out(result.token)
    assert staff.session(result.token, "A") is None


def test_the_session_store_is_bounded(mono: Clock) -> None:
    store = SessionStore(max_sessions=3, clock=mono)
    tokens = []
    for i in range(4):
        mono.now += 1
        tokens.append(store.start("A", "staff", f"staff:{i}"))
    assert len(store) == 3 and store.use(tokens[0], "A") is None and store.use(tokens[3], "A") is not None
    assert len({len(t) for t in tokens}) == 1 and len(tokens[0]) == 43  # token_urlsafe(32): 256 bits


async def test_forty_concurrent_wrong_pins_get_no_more_checks_than_sequential_ones(
    staff: LockerStaff, db: Database
) -> None:
    # The staff number's throttle (5 a minute) holds under a burst, as the web sign-in's does (one sign-in gate).
    await staff.add_staff("1234", "482915", "Li Lei")
    for burst in range(2):
        results = await asyncio.gather(*(staff.sign_in_staff("A", "1234", f"{700000 + burst * 100 + i}")
                                         for i in range(40)))
        assert all(r.status is not SignInStatus.OK for r in results)
    checked = db.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM signin_attempts WHERE key = 'staff-number:1234' AND ok IN (0, 1)"
    ).fetchone()[0])
    assert checked == 5
    assert (await staff.sign_in_staff("A", "1234", "482915")).status is SignInStatus.LOCKED_OUT
