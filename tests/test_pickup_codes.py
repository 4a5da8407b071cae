"""Pickup codes on a real migrated SQLite file: drawing, HMAC-only storage, single use, uniform WRONG,
per-terminal throttle with growing lockouts that survive a restart, store-wide guessing alarm, store key."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.services.pickup_codes import (
    CodeCollisionError,
    GuessingAlarm,
    InvalidCodeError,
    PickupCodeError,
    PickupCodes,
    StoreKeyError,
    ThrottlePolicy,
    VerifyOutcome,
    VerifyStatus,
    store_key,
)
from edge_agent.storage import Database

KEY = bytes(range(32))
T0 = 1_800_000_000_000
DAY = 24 * 3600 * 1000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def codes(db: Database, clock: Clock) -> PickupCodes:
    return PickupCodes(db, KEY, clock=clock)


WRONG = VerifyStatus.WRONG
LOCKED = VerifyStatus.LOCKED_OUT


def wrong_code(avoid: set[str] | None = None, i: int = 0) -> str:
    code = f"{99_000_000 + i:08d}"
    assert not avoid or code not in avoid
    return code


# -- drawing codes --------------------------------------------------------------------------------


def test_new_codes_are_8_digits_uniform_and_distinct(codes: PickupCodes, db: Database) -> None:
    drawn = [codes.new_code() for _ in range(10_000)]
    assert all(len(c) == 8 and c.isascii() and c.isdigit() for c in drawn)
    # 10,000 draws from 10^8 codes repeat one about 0.5 times on average (birthday bound n^2 / 2N):
    # more than 5 repeats would happen about once in 70,000 runs of a fair generator.
    assert len(drawn) - len(set(drawn)) <= 5
    # Every digit in every position; overall digit frequencies near 10 % each (80,000 digits: sd ~ 85).
    for position in range(8):
        assert {c[position] for c in drawn} == set("0123456789")
    counts = Counter("".join(drawn))
    assert all(abs(n - 8000) < 600 for n in counts.values()), counts
    # Leading zeros are kept, not dropped: about a tenth of the codes start with 0.
    assert 600 < sum(c.startswith("0") for c in drawn) < 1400  # mean 1000, sd 95
    # 12 digits: a repeat in 10,000 draws is a 1-in-20,000 event.
    long_codes = [PickupCodes(db, KEY, code_digits=12).new_code() for _ in range(10_000)]
    assert len(set(long_codes)) == len(long_codes)


def test_longer_codes_and_limits(db: Database) -> None:
    assert len(PickupCodes(db, KEY, code_digits=12).new_code()) == 12
    with pytest.raises(ValueError, match="code_digits"):
        PickupCodes(db, KEY, code_digits=6)
    with pytest.raises(StoreKeyError):
        PickupCodes(db, b"short")


# -- issuing and storage --------------------------------------------------------------------------


async def test_codes_are_stored_only_as_their_hmac(codes: PickupCodes, db: Database, clock: Clock) -> None:
    issued = [await codes.issue(f"order-{i}", T0 + DAY) for i in range(20)]
    issued.append(await codes.issue("cloud-order", T0 + DAY, code="012345678901"))
    rows = db.read(lambda c: c.execute("SELECT order_id, code_mac FROM pickup_codes ORDER BY order_id").fetchall())
    macs = dict(rows)
    assert macs["order-3"] == hmac.new(KEY, issued[3].encode(), hashlib.sha256).hexdigest()
    assert macs["cloud-order"] == hmac.new(KEY, b"012345678901", hashlib.sha256).hexdigest()
    await codes.verify("locker-1", issued[0])
    await codes.verify("locker-1", "00000000")
    await codes.consume("order-1")
    db.close()  # checkpoint: everything is in the main file now, and whatever is left in the WAL is read too
    data_dir = db.path.parent
    files = [p for p in data_dir.iterdir() if p.name.startswith("agent.db")]
    blob = b"".join(p.read_bytes() for p in files)
    assert b"cloud-order" in blob  # the grep works: the order ids are there
    for code in issued:
        assert code.encode() not in blob, f"code {code} found in the database files"
        assert code.encode("utf-16-le") not in blob


async def test_cloud_issued_codes_must_be_8_to_12_digits(codes: PickupCodes) -> None:
    for bad in ("1234567", "1234567890123", "12345a78", "١٢٣٤٥٦٧٨", " 12345678", ""):
        with pytest.raises(InvalidCodeError):
            await codes.issue("o1", T0 + DAY, code=bad)
    assert await codes.issue("o1", T0 + DAY, code="00000001") == "00000001"
    assert (await codes.verify("t", "00000001")).order_id == "o1"


async def test_a_collision_with_a_live_code_is_refused(codes: PickupCodes) -> None:
    await codes.issue("o1", T0 + DAY, code="55555555")
    with pytest.raises(CodeCollisionError, match="live code of another order"):
        await codes.issue("o2", T0 + DAY, code="55555555")
    assert codes.state("o2") is None
    # Once o1's code is dead, the same digits may go to another order; o1 stays dead.
    await codes.cancel("o1")
    assert await codes.issue("o2", T0 + DAY, code="55555555") == "55555555"
    assert codes.state("o1") == "cancelled"
    assert (await codes.verify("t", "55555555")).order_id == "o2"


async def test_issue_refuses_past_expiry_bad_ids_and_used_orders(codes: PickupCodes) -> None:
    with pytest.raises(PickupCodeError, match="future"):
        await codes.issue("o1", T0)
    with pytest.raises(PickupCodeError, match="order_id"):
        await codes.issue("", T0 + DAY)
    code = await codes.issue("o1", T0 + DAY)
    assert await codes.consume("o1")
    with pytest.raises(PickupCodeError, match="already used"):
        await codes.issue("o1", T0 + DAY)
    assert (await codes.verify("t", code)).status is WRONG


async def test_reissuing_replaces_the_orders_code(codes: PickupCodes) -> None:
    old = await codes.issue("o1", T0 + DAY)
    new = await codes.issue("o1", T0 + 2 * DAY, code="31415926")
    assert old != new
    assert (await codes.verify("t", old)).status is WRONG
    assert (await codes.verify("t", new)).order_id == "o1"


# -- verifying ------------------------------------------------------------------------------------


async def test_a_good_code_is_ok_until_used_then_dead(codes: PickupCodes) -> None:
    code = await codes.issue("o1", T0 + DAY)
    outcome = await codes.verify("locker-1", code)
    assert outcome == VerifyOutcome(VerifyStatus.OK, order_id="o1") and outcome.ok
    assert (await codes.verify("locker-1", code)).ok  # verify alone does not use it
    assert await codes.consume("o1")
    assert not await codes.consume("o1")
    assert codes.state("o1") == "used"
    assert (await codes.verify("locker-1", code)).status is WRONG


async def test_verify_with_consume_opens_exactly_once(codes: PickupCodes) -> None:
    code = await codes.issue("o1", T0 + DAY)
    results = await asyncio.gather(*(codes.verify(f"locker-{i}", code, consume=True) for i in range(5)))
    assert [r.status for r in results].count(VerifyStatus.OK) == 1
    assert codes.state("o1") == "used"


async def test_cancel_and_expiry_kill_codes(codes: PickupCodes, clock: Clock) -> None:
    c1 = await codes.issue("o1", T0 + DAY)
    c2 = await codes.issue("o2", T0 + 1000)
    c3 = await codes.issue("o3", T0 + 2000)
    assert await codes.cancel("o1") and not await codes.cancel("o1")
    assert (await codes.verify("t", c1)).status is WRONG
    clock.advance(1.5)
    # Past its time a code is dead even before the sweep marks it.
    assert (await codes.verify("t", c2)).status is WRONG
    assert await codes.expire_due() == ["o2"]
    assert codes.state("o2") == "expired" and codes.state("o3") == "live"
    assert await codes.expire_due(T0 + 10_000) == ["o3"]
    assert (await codes.verify("t", c3)).status is WRONG
    assert not await codes.consume("o3")


async def test_dead_codes_are_purged_after_a_while_live_ones_never(codes: PickupCodes, clock: Clock) -> None:
    await codes.issue("used", T0 + DAY)
    await codes.consume("used")
    await codes.issue("cancelled", T0 + DAY)
    await codes.cancel("cancelled")
    await codes.issue("live", T0 + 1000)  # past its time but not yet swept: still live, kept
    clock.advance(2)
    assert await codes.purge_dead(T0 + 1000) == 1  # used at T0
    assert codes.state("used") is None and codes.state("cancelled") == "cancelled"
    assert await codes.purge_dead(T0 + 2 * DAY) == 1
    assert codes.state("live") == "live"


async def test_wrong_is_the_same_for_unknown_used_cancelled_expired_and_garbage(
    codes: PickupCodes, clock: Clock
) -> None:
    used = await codes.issue("used", T0 + DAY)
    await codes.consume("used")
    cancelled = await codes.issue("cancelled", T0 + DAY)
    await codes.cancel("cancelled")
    expired = await codes.issue("expired", T0 + 500)
    clock.advance(1)
    swept = await codes.issue("swept", T0 + 2000)
    clock.advance(2)
    await codes.expire_due()
    outcomes = []
    for terminal, code in [("a", "10000000"), ("b", used), ("c", cancelled), ("d", expired), ("e", swept),
                           ("f", "12ab"), ("g", "")]:
        outcomes.append(await codes.verify(terminal, code))
    assert len(set(outcomes)) == 1, outcomes
    assert outcomes[0] == VerifyOutcome(WRONG, attempts_left=9)
    assert str(outcomes[0]) == str(outcomes[1])


# -- throttle -------------------------------------------------------------------------------------


async def test_thirty_wrong_codes_lock_the_terminal_after_ten(codes: PickupCodes, clock: Clock) -> None:
    good = await codes.issue("o1", T0 + DAY)
    results = []
    for i in range(30):
        results.append(await codes.verify("locker-1", wrong_code({good}, i)))
        clock.advance(0.5)
    assert [r.status for r in results[:10]] == [WRONG] * 10
    assert [r.attempts_left for r in results[:10]] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert [r.status for r in results[10:]] == [LOCKED] * 20
    assert 0 < codes.lockout_seconds_left("locker-1") <= results[-1].seconds_left
    assert codes.lockout_seconds_left("locker-2") == 0
    assert results[10].seconds_left == 30 and 0 < results[-1].seconds_left <= 30
    # The right code during the lockout is not even checked.
    during = await codes.verify("locker-1", good)
    assert during.status is LOCKED and during.order_id is None
    # Another terminal is unaffected.
    assert (await codes.verify("locker-2", good)).ok
    assert (await codes.verify("locker-2", wrong_code(i=99))).status is WRONG


async def test_lockout_grows_doubling_up_to_an_hour(codes: PickupCodes, clock: Clock) -> None:
    # A guesser who types a wrong code as soon as the terminal lets them, for twelve hours.
    durations: list[int] = []
    guesses = 0
    end = clock.now + 12 * 3600 * 1000
    while clock.now < end:
        outcome = await codes.verify("t1", wrong_code(i=guesses))
        if outcome.status is LOCKED:
            durations.append(outcome.seconds_left)
            clock.advance(outcome.seconds_left)
        else:
            guesses += 1
            clock.advance(0.001)
    assert durations[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert set(durations[8:]) == {3600}
    # After the first ten, one guess per short lockout, then ten per lockout once the window has slid.
    assert guesses <= 10 + 4 + 10 * (len(durations) - 5)
    # Ten guesses per hour and a bit: with 200 live codes out of 10^8, under 1 in 1,000 per day of guessing.
    assert guesses <= 12 * 12


async def test_level_decays_after_a_quiet_period(codes: PickupCodes, clock: Clock) -> None:
    for i in range(10):
        await codes.verify("t1", wrong_code(i=i))
    clock.advance(30)
    await codes.verify("t1", wrong_code())  # level 2: 60 s
    assert (await codes.verify("t1", wrong_code())).seconds_left == 60
    clock.advance(60 + 3 * 3600)  # three quiet hours: level 2 decays to 0
    for i in range(9):
        assert (await codes.verify("t1", wrong_code(i=i))).status is WRONG
    assert (await codes.verify("t1", wrong_code())).status is WRONG
    assert (await codes.verify("t1", wrong_code())).seconds_left == 30


async def test_failures_leave_the_window_after_ten_minutes(codes: PickupCodes, clock: Clock) -> None:
    for i in range(9):
        await codes.verify("t1", wrong_code(i=i))
    clock.advance(601)
    results = [await codes.verify("t1", wrong_code(i=i)) for i in range(10)]
    assert [r.status for r in results] == [WRONG] * 10
    assert (await codes.verify("t1", wrong_code())).status is LOCKED


async def test_a_success_does_not_reset_the_failure_count(codes: PickupCodes) -> None:
    good = await codes.issue("o1", T0 + DAY)
    for i in range(9):
        await codes.verify("t1", wrong_code(i=i))
    assert (await codes.verify("t1", good)).ok
    assert (await codes.verify("t1", wrong_code())).attempts_left == 0
    assert (await codes.verify("t1", good)).status is LOCKED


async def test_a_lockout_survives_reopening_the_database(tmp_path: Path, clock: Clock) -> None:
    first = Database(tmp_path / "data")
    codes = PickupCodes(first, KEY, clock=clock)
    good = await codes.issue("o1", T0 + DAY)
    for i in range(10):
        await codes.verify("locker-1", wrong_code(i=i))
    first.close()
    clock.advance(5)
    again = Database(tmp_path / "data")
    try:
        codes = PickupCodes(again, KEY, clock=clock)
        outcome = await codes.verify("locker-1", good)
        assert outcome.status is LOCKED and outcome.seconds_left == 25
        clock.advance(25)
        assert (await codes.verify("locker-1", good)).ok
    finally:
        again.close()


async def test_a_clock_set_back_cannot_stretch_a_lockout_beyond_an_hour(codes: PickupCodes, clock: Clock) -> None:
    for i in range(10):
        await codes.verify("t1", wrong_code(i=i))
    clock.advance(-30 * DAY / 1000)
    assert (await codes.verify("t1", wrong_code())).seconds_left == 3600


# -- store-wide guessing --------------------------------------------------------------------------


async def test_store_wide_guessing_raises_the_alarm_once_per_window(db: Database, clock: Clock) -> None:
    alarms: list[GuessingAlarm] = []

    async def on_alarm(alarm: GuessingAlarm) -> None:
        alarms.append(alarm)

    codes = PickupCodes(db, KEY, clock=clock, on_alarm=on_alarm, policy=ThrottlePolicy(store_max_failures=30))
    # Nine failures at each of four terminals: none is locked out, but the store sees 36.
    for i in range(36):
        outcome = await codes.verify(f"locker-{i % 4}", wrong_code(i=i))
        assert outcome.status is WRONG
        if i < 29:
            assert not alarms and not codes.guessing_suspected
        clock.advance(1)
    assert len(alarms) == 1 and codes.guessing_suspected
    assert alarms[0].failures == 30 and alarms[0].window_s == 600
    assert alarms[0].terminals == ("locker-0", "locker-1", "locker-2", "locker-3")
    clock.advance(601)
    await codes.verify("locker-9", wrong_code())
    assert not codes.guessing_suspected and len(alarms) == 1


async def test_a_failing_alarm_hook_does_not_break_verification(db: Database, clock: Clock) -> None:
    calls = []

    def on_alarm(alarm: GuessingAlarm) -> None:
        calls.append(alarm)
        raise RuntimeError("hook broke")

    codes = PickupCodes(db, KEY, clock=clock, on_alarm=on_alarm, policy=ThrottlePolicy(store_max_failures=3))
    for i in range(4):
        assert (await codes.verify(f"t{i}", wrong_code(i=i))).status is WRONG
    assert len(calls) == 1


# -- store key ------------------------------------------------------------------------------------


def test_store_key_from_env_or_credentials(tmp_path: Path) -> None:
    hex_key = "ab" * 32
    assert store_key({"EDGE_AGENT_STORE_HMAC_KEY": hex_key}) == bytes.fromhex(hex_key)
    passphrase = "a long store secret of more than 32 bytes"
    assert store_key({"EDGE_AGENT_STORE_HMAC_KEY": passphrase}) == passphrase.encode()
    (tmp_path / "store-hmac-key").write_text(hex_key + "\n")
    assert store_key({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == bytes.fromhex(hex_key)
    with pytest.raises(StoreKeyError, match="EDGE_AGENT_STORE_HMAC_KEY"):
        store_key({})
    with pytest.raises(StoreKeyError, match="too short"):
        store_key({"EDGE_AGENT_STORE_HMAC_KEY": "short"})


async def test_a_different_key_knows_no_codes(db: Database, clock: Clock) -> None:
    code = await PickupCodes(db, KEY, clock=clock).issue("o1", T0 + DAY)
    other = PickupCodes(db, bytes(32), clock=clock)
    assert (await other.verify("t", code)).status is WRONG
