"""Issue 14.6: the agent's clocks (edge_agent/services/agent_clock.py) on a real migrated SQLite file.

The wall clock and the monotonic clock are injected, so a run of the agent is one AgentClock, a restart a new
one on the same database, and a clock set back or ahead a number. The same faults on the agent as a process,
under libfaketime: tests/test_clock_faults.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest
from argon2 import PasswordHasher, Type

from edge_agent.services.agent_clock import (
    EARLIEST_PLAUSIBLE_MS,
    RESTART_GAP_MS,
    AgentClock,
    ClockReport,
    ClockState,
)
from edge_agent.services.audit import AuditLog, row_hash, verify_chain
from edge_agent.services.pickup_codes import PickupCodes, ThrottlePolicy, VerifyStatus
from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import Role, WebUsers
from edge_agent.storage import Database

SCHEMAS = Path(__file__).resolve().parent.parent / "cloud_link" / "schemas"
DAY_S = 86_400.0
T0 = 1_796_000_000.0  # 2026-11-30, seconds
KEY = b"k" * 32


class Clocks:
    """The machine's clocks: the wall clock (settable, as NTP or a technician would) and the monotonic one,
    which restarts at each boot."""

    def __init__(self) -> None:
        self.real = T0  # what the time really is
        self.offset = 0.0  # wall clock minus real time
        self.mono = 1000.0

    def wall(self) -> float:
        return self.real + self.offset

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.real += seconds
        self.mono += seconds

    def reboot(self, down_s: float) -> None:
        self.real += down_s
        self.mono = 5.0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


def state(clock: AgentClock) -> ClockState:
    """(A call, so that the type checker does not take the state for fixed between two asserts.)"""
    return clock.state


async def run(db: Database, clocks: Clocks) -> tuple[AgentClock, list[ClockReport]]:
    """One run of the agent: its clock started, its reports collected."""
    clock = AgentClock(db, wall=clocks.wall, monotonic=clocks.monotonic)
    reports: list[ClockReport] = []

    async def collect(report: ClockReport) -> None:
        reports.append(report)

    clock.on_change = collect
    await clock.start()
    await clock.flush_reports()
    return clock, reports


async def test_the_first_run_trusts_a_plausible_clock_and_the_steady_clock_starts_at_it(db: Database) -> None:
    clocks = Clocks()
    clock, reports = await run(db, clocks)
    assert state(clock) is ClockState.OK and reports == []
    assert clock.steady_ms() == int(T0 * 1000)  # rows stored before this clock existed keep their meaning
    clocks.advance(2.5)
    assert clock.steady_ms() == int(T0 * 1000) + 2500


async def test_a_clock_before_the_agent_existed_is_behind_even_on_the_first_run(db: Database) -> None:
    clocks = Clocks()
    clocks.offset = EARLIEST_PLAUSIBLE_MS / 1000 - T0 - 10 * DAY_S  # a box booting at its image's build date
    clock, reports = await run(db, clocks)
    assert state(clock) is ClockState.BEHIND and [r.state for r in reports] == [ClockState.BEHIND]
    assert not clock.trusted


async def test_a_quick_restart_continues_both_clocks(db: Database) -> None:
    clocks = Clocks()
    first, _ = await run(db, clocks)
    clocks.advance(60)
    await first.persist()
    clocks.reboot(90)
    second, reports = await run(db, clocks)
    assert state(second) is ClockState.OK and reports == []
    assert second.steady_ms() == int((T0 + 150) * 1000)  # 60 s running, 90 s down


async def test_a_clock_a_year_behind_after_a_restart(db: Database) -> None:
    clocks = Clocks()
    first, _ = await run(db, clocks)
    clocks.advance(30)
    await first.persist()
    clocks.reboot(20)
    clocks.offset = -365 * DAY_S
    clock, reports = await run(db, clocks)
    assert state(clock) is ClockState.BEHIND and [r.state for r in reports] == [ClockState.BEHIND]
    # The steady clock goes on (not back a year, and the down time is not known: counted as 0).
    assert clock.steady_ms() == int((T0 + 30) * 1000)
    # The best estimate is the last time trusted plus the steady time since: 20 s short (the down time).
    assert abs(clock.estimate_ms() - (clocks.real - 20) * 1000) < 1
    assert not clock.is_past(int((clocks.real + 60) * 1000)) and clock.is_past(int((clocks.real - 60) * 1000))
    payload = reports[0].payload()
    jsonschema.validate(payload, json.loads((SCHEMAS / "payload.alarm.clock.json").read_text()))
    assert payload["offset_s"] < -364 * DAY_S
    # NTP steps the clock right: back in line with the estimate (within the tolerance), trusted again.
    clocks.advance(40)
    clocks.offset = 0
    assert clock.check() is ClockState.OK
    await clock.flush_reports()
    assert [r.state for r in reports] == [ClockState.BEHIND, ClockState.OK]


async def test_a_clock_a_month_ahead_is_unconfirmed_until_the_cloud_says_ahead(db: Database) -> None:
    clocks = Clocks()
    first, _ = await run(db, clocks)
    await first.persist()
    clocks.reboot(5)
    clocks.offset = 30 * DAY_S
    clock, reports = await run(db, clocks)
    assert state(clock) is ClockState.UNCONFIRMED
    assert not clock.is_past(int(clocks.real * 1000))  # nothing is past while nobody can tell
    # A command's ts: the cloud's time now. Far before the wall clock, and nothing vouches for the clock.
    clock.observe_cloud_time(int(clocks.real * 1000))
    assert state(clock) is ClockState.AHEAD
    assert abs(clock.estimate_ms() - clocks.real * 1000) < 1
    clocks.advance(10)
    assert clock.is_past(int((clocks.real - 60) * 1000)) and not clock.is_past(int((clocks.real + 60) * 1000))
    # NTP fixes it: trusted again.
    clocks.offset = 0
    assert clock.check() is ClockState.OK
    await clock.flush_reports()
    assert [r.state for r in reports] == [ClockState.UNCONFIRMED, ClockState.AHEAD, ClockState.OK]


async def test_after_a_long_power_cut_the_cloud_confirms_the_clock(db: Database) -> None:
    clocks = Clocks()
    first, _ = await run(db, clocks)
    await first.persist()
    clocks.reboot(RESTART_GAP_MS / 1000 + 3600)  # a real outage: the wall clock is right
    clock, _ = await run(db, clocks)
    assert state(clock) is ClockState.UNCONFIRMED
    # The steady clock counted the outage (durations that ran out meanwhile did run out).
    assert clock.steady_ms() == int(clocks.real * 1000)
    clock.observe_cloud_time(int(clocks.real * 1000) - 1500)  # sent 1.5 s ago
    assert state(clock) is ClockState.OK


async def test_an_old_command_does_not_unsettle_a_trusted_clock(db: Database) -> None:
    clocks = Clocks()
    clock, _ = await run(db, clocks)
    clock.observe_cloud_time(int((clocks.real - 2 * DAY_S) * 1000))  # it waited two days at the broker
    assert state(clock) is ClockState.OK
    clock.observe_cloud_time(int((clocks.real + 3600) * 1000))  # the cloud is an hour later: we are behind
    assert state(clock) is ClockState.BEHIND


async def test_jumps_while_running_and_an_untrusted_state_carries_over_a_restart(db: Database) -> None:
    clocks = Clocks()
    clock, _ = await run(db, clocks)
    clocks.advance(5)
    clocks.offset = -2 * DAY_S
    assert clock.check() is ClockState.BEHIND
    clocks.advance(5)
    await clock.persist()
    clocks.reboot(3)
    again, again_reports = await run(db, clocks)
    assert state(again) is ClockState.BEHIND  # still behind: the restart did not launder it
    assert again_reports == []  # reported once, when it was first seen
    clocks.offset = 0
    assert again.check() is ClockState.OK
    clocks.advance(1)
    clocks.offset = 3 * DAY_S
    assert again.check() is ClockState.UNCONFIRMED


async def test_the_throttle_holds_its_length_when_the_clock_goes_back_a_year(db: Database) -> None:
    """Before: a lockout read 3,600 s (the clamp) and stayed there until the clock caught up."""
    clocks = Clocks()
    clock, _ = await run(db, clocks)
    policy = ThrottlePolicy(max_failures=3, window_ms=60_000, first_lockout_ms=60_000)
    codes = PickupCodes(db, KEY, policy=policy, clock=lambda: int(clocks.wall() * 1000), steady=clock.steady_ms,
                        is_past=clock.is_past)
    for _ in range(3):
        await codes.verify("locker-screen:A", "00000000")
    assert 59 <= codes.lockout_seconds_left("locker-screen:A") <= 60
    clocks.advance(20)
    await clock.persist()
    clocks.reboot(5)
    clocks.offset = -365 * DAY_S
    clock, _ = await run(db, clocks)
    codes = PickupCodes(db, KEY, policy=policy, clock=lambda: int(clocks.wall() * 1000), steady=clock.steady_ms,
                        is_past=clock.is_past)
    left = codes.lockout_seconds_left("locker-screen:A")
    assert 39 <= left <= 40, left  # 20 s ran, the 5 s down are not known
    clocks.advance(41)
    assert codes.lockout_seconds_left("locker-screen:A") == 0
    outcome = await codes.verify("locker-screen:A", "00000000")
    assert outcome.status is VerifyStatus.WRONG  # it may try again


async def test_a_code_stays_good_on_a_clock_run_ahead(db: Database) -> None:
    """Before: every code of a held order read as expired once the clock ran past its hold."""
    clocks = Clocks()
    clock, _ = await run(db, clocks)
    codes = PickupCodes(db, KEY, clock=lambda: int(clocks.wall() * 1000), steady=clock.steady_ms,
                        is_past=clock.is_past)
    code = await codes.issue("order-1", int((clocks.real + 2 * DAY_S) * 1000))
    await clock.persist()
    clocks.reboot(5)
    clocks.offset = 30 * DAY_S
    clock, _ = await run(db, clocks)
    codes = PickupCodes(db, KEY, clock=lambda: int(clocks.wall() * 1000), steady=clock.steady_ms,
                        is_past=clock.is_past)
    assert (await codes.verify("screen-A", code)).status is VerifyStatus.OK
    # And a hold that ended (really) is refused once the cloud says what time it is.
    late = await codes.issue("order-2", int((clocks.real + 60) * 1000))
    clock.observe_cloud_time(int(clocks.real * 1000))
    clocks.advance(120)
    assert (await codes.verify("screen-A", late)).status is VerifyStatus.WRONG


async def test_web_sessions_time_out_whatever_the_wall_clock_does(db: Database) -> None:
    """Before: a session used while the clock was a year behind never reached its idle timeout."""
    clocks = Clocks()
    clock, _ = await run(db, clocks)
    await WebUsers(db, hasher=PasswordHasher(type=Type.ID, time_cost=1, memory_cost=8, parallelism=1)).add(
        "tech", "correct horse battery", Role.TECHNICIAN)
    sessions = WebSessions(db, idle_s=120, absolute_s=3600, clock=clock.steady_ms)
    token, _ = await sessions.start("tech")
    clocks.advance(30)
    assert await sessions.use(token) is not None
    clocks.offset = -365 * DAY_S  # set back while running
    clock.check()
    clocks.advance(59)
    assert await sessions.use(token) is not None  # used at 89 s: its idle timer starts again
    clocks.advance(121)
    assert await sessions.use(token) is None  # idle 121 s on the steady clock: gone


async def test_audit_times_never_go_back_and_verify_catches_a_row_that_does(db: Database) -> None:
    """Before: a row could carry a time earlier than the one before it, and verify still passed."""
    clocks = Clocks()
    log = AuditLog(db, clock=lambda: int(clocks.wall() * 1000))
    first = await log.append("code", compartment="A-01", actor="screen-A", order_id="o-1", detail={})
    clocks.offset = -365 * DAY_S
    second = await log.append("code", compartment="A-02", actor="screen-A", order_id="o-2", detail={"x": 1})
    assert second.ts_ms == first.ts_ms
    assert second.detail == {"x": 1, "wall_clock_ms": int(clocks.wall() * 1000)}
    assert log.verify().ok
    # Someone appends a row whose time goes back, with the hash chain made right: verify says where.
    raw = sqlite3.connect(db.path)
    last = raw.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    ts = first.ts_ms - 1000
    hash_ = row_hash(str(last[1]), seq=3, ts_ms=ts, kind="code", compartment="A-03", actor=None, order_id=None,
                     detail_json="{}")
    raw.execute("INSERT INTO audit_log(seq, ts_ms, kind, compartment, actor, order_id, detail, prev_hash, hash) "
                "VALUES (3, ?, 'code', 'A-03', NULL, NULL, '{}', ?, ?)", (ts, last[1], hash_))
    raw.commit()
    raw.close()
    result = db.read(verify_chain)
    assert not result.ok and result.first_bad_seq == 3
    assert "earlier than the previous row" in (result.reason or "")
