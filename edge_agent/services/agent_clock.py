"""The agent's two clocks: a steady one for every duration, and the wall clock, trusted only when plausible.

A store's mini-PC may boot with its clock years behind (no real-time clock, NTP not answered yet) and have
NTP step it later, or run ahead (a wrong NTP server, a technician's mistake). The rules (docs/operations.md,
"Clock faults"):

- **Durations** (lockouts, sign-in throttles, web sessions, scan-link form tokens) run on `steady_ms()`: the
  monotonic clock, carried across restarts. On the first run it starts equal to the wall clock, so times
  stored before this clock existed keep their meaning; each later run continues from where the last one
  left it, plus the time the agent was down as the wall clock tells it, never less than 0. A wall clock set
  back can neither stretch a lockout nor keep a session alive; one set ahead can only end them early.
- **The wall clock** is checked against what the agent saw before: its last trusted reading (persisted every
  `PERSIST_EVERY_S`), the steady time since, and the cloud's time (a command's optional `ts`). States:

      ok           it continues from the last trusted reading within TOLERANCE_MS, or the cloud agrees with it
      behind       earlier than the last time the agent saw (or than a command's `ts`): it was set back
      ahead        later than a command's `ts` allows, with nothing else vouching for it
      unconfirmed  it moved on more than RESTART_GAP_MS while the agent was down, or jumped ahead while it ran:
                   a long power cut or a clock run ahead, and only the cloud's time can tell which

  Expiries (pickup holds and their reminders) act only while the state is ok: a hold must not end on a
  clock that may be wrong, because an expired pickup cannot be brought back. Every change of state is
  reported upstream as `alarm.clock` (the return to ok too, so the cloud can clear it).
- **The best estimate of the time** (`estimate_ms()`): the wall clock when ok or unconfirmed, otherwise the
  last trusted reading (or the cloud's time) plus the steady time since. A new pickup's default hold is
  counted from it, and whether a given hold is already past is decided on it (never while unconfirmed).

Why a command's `ts` only half-vouches: a command can wait at the broker (the agent offline), so a `ts` is a
lower bound of the cloud's time. A wall clock before it is certainly behind; one within TOLERANCE_MS of it is
confirmed; one far after it may be right (the command waited) or ahead. So `ts` never takes an ok clock out of
ok by saying it is ahead; it only settles an unconfirmed one.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cloud_link.events import format_ts
from cloud_link.ports import DurableStore

log = logging.getLogger(__name__)

# No real clock reads a time before this agent existed (its first release was in 2026): a box booting at the
# epoch, or at its image's build date, is behind even on its first run.
EARLIEST_PLAUSIBLE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
# Disagreement allowed between the wall clock and what the agent expects of it: NTP steps of a few seconds,
# an RTC a minute off, a command's time in transit.
TOLERANCE_MS = 5 * 60 * 1000
# A restart within this time (an upgrade, a reboot) continues the clock; a longer gap needs the cloud to
# confirm that the time really moved on that much.
RESTART_GAP_MS = 15 * 60 * 1000
PERSIST_EVERY_S = 10.0
CHECK_EVERY_S = 1.0


class ClockState(enum.StrEnum):
    OK = "ok"
    BEHIND = "behind"
    AHEAD = "ahead"
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True)
class ClockReport:
    """One change of state, as `alarm.clock` carries it."""

    state: ClockState
    reason: str
    wall_ms: int
    estimate_ms: int

    def payload(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "wall": format_ts(max(0, self.wall_ms)),
            "estimate": format_ts(max(0, self.estimate_ms)),
            "offset_s": round((self.wall_ms - self.estimate_ms) / 1000.0, 3),
        }


ClockHook = Callable[[ClockReport], Awaitable[None]]


class AgentClock:
    def __init__(
        self,
        db: DurableStore,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._wall = wall
        self._mono = monotonic
        self._mono0 = monotonic()
        self._steady0 = 0
        self.state = ClockState.OK
        self.reason = "first run"
        # The reference the wall clock is judged by: a time known to be right, and the steady time it was read.
        self._ref_wall = 0
        self._ref_steady = 0
        self._last_persist = float("-inf")
        self._reports: list[ClockReport] = []
        self.on_change: ClockHook | None = None

    # -- readings ---------------------------------------------------------------------------------

    def wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def steady_ms(self) -> int:
        """Milliseconds on the steady clock: never goes back, carried across restarts (for durations)."""
        return self._steady0 + int((self._mono() - self._mono0) * 1000)

    def steady_s(self) -> float:
        return self.steady_ms() / 1000.0

    @property
    def trusted(self) -> bool:
        return self.state is ClockState.OK

    def estimate_ms(self) -> int:
        """The best estimate of the real time (module docstring)."""
        if self.state in (ClockState.OK, ClockState.UNCONFIRMED):
            return self.wall_ms()
        return self._ref_wall + (self.steady_ms() - self._ref_steady)

    def describe(self) -> dict[str, Any]:
        """The state for /healthz: state, reason, and the wall clock minus the best estimate, in seconds."""
        return {"state": self.state.value, "reason": self.reason,
                "offset_s": round((self.wall_ms() - self.estimate_ms()) / 1000.0, 3)}

    def is_past(self, ms: int) -> bool:
        """Whether `ms` is certainly in the past: never while unconfirmed (nothing can tell)."""
        return self.state is not ClockState.UNCONFIRMED and ms <= self.estimate_ms()

    # -- start, checks, cloud time -------------------------------------------------------------------

    async def start(self) -> None:
        """Continue the steady clock from the last run and judge the wall clock against it."""
        row = self._db.read(lambda c: c.execute(
            "SELECT wall_ms, steady_ms, state, ref_wall_ms, ref_steady_ms FROM clock_state WHERE id = 1"
        ).fetchone())
        wall = self.wall_ms()
        if row is None:
            self._steady0 = wall  # times stored before this clock existed are wall times: keep their meaning
            self._ref_wall, self._ref_steady = wall, wall
            if wall < EARLIEST_PLAUSIBLE_MS:
                self._ref_wall = EARLIEST_PLAUSIBLE_MS
                self._set(ClockState.BEHIND, "the wall clock reads a time before this agent existed", wall)
            else:
                self._set(ClockState.OK, "first run", wall)
        else:
            last_wall, last_steady, last_state = int(row[0]), int(row[1]), ClockState(str(row[2]))
            gap = wall - last_wall  # the raw wall clock's own gap: the downtime, if it was and is right
            if last_state is not ClockState.OK:
                # Not trusted when it stopped: its gap says nothing, so the down time counts as 0 (lockouts go
                # on where they were). The same state and reference; the checks decide.
                self._steady0 = last_steady
                self._ref_wall, self._ref_steady = int(row[3]), int(row[4])
                self.state, self.reason = last_state, f"{last_state.value} when the agent last stopped"
                # Reported when it was first seen (the event is durable): a restart repeats nothing.
                log.warning("wall clock %s when the agent last stopped; expiries wait until it is trusted",
                            last_state.value)
                self.check()
            else:
                self._steady0 = last_steady + max(0, gap)
                self._ref_wall, self._ref_steady = last_wall, self._steady0
                if gap < -TOLERANCE_MS or wall < EARLIEST_PLAUSIBLE_MS:
                    self._set(ClockState.BEHIND, f"the wall clock is {-gap / 1000:.0f} s before the last time "
                              "seen", wall)
                elif gap > RESTART_GAP_MS:
                    self._set(ClockState.UNCONFIRMED, f"the wall clock moved on {gap / 1000:.0f} s while the "
                              "agent was down; waiting for the cloud's time", wall)
                else:
                    self._set(ClockState.OK, "continues from the last run", wall)
        if self.state is ClockState.OK:
            self._ref_wall, self._ref_steady = wall, self.steady_ms()
        await self.persist()

    def check(self) -> ClockState:
        """Judge the wall clock against the reference (every CHECK_EVERY_S, and before deciding expiries)."""
        wall = self.wall_ms()
        drift = wall - (self._ref_wall + (self.steady_ms() - self._ref_steady))
        if wall < EARLIEST_PLAUSIBLE_MS:
            self._set(ClockState.BEHIND, "the wall clock reads a time before this agent existed", wall)
        elif self.state is ClockState.OK:
            if drift < -TOLERANCE_MS:
                self._set(ClockState.BEHIND, f"the wall clock went back {-drift / 1000:.0f} s", wall)
            elif drift > TOLERANCE_MS:
                self._set(ClockState.UNCONFIRMED, f"the wall clock jumped ahead {drift / 1000:.0f} s", wall)
            else:
                self._ref_wall, self._ref_steady = wall, self.steady_ms()
        elif abs(drift) <= TOLERANCE_MS:
            self._set(ClockState.OK, "the wall clock is back in line with the time last trusted", wall)
            self._ref_wall, self._ref_steady = wall, self.steady_ms()
        elif drift < -TOLERANCE_MS and self.state is not ClockState.BEHIND:
            self._set(ClockState.BEHIND, f"the wall clock is {-drift / 1000:.0f} s behind the time last trusted", wall)
        elif drift > TOLERANCE_MS and self.state is ClockState.BEHIND:
            # Later than expected now: right after a down time nobody counted, or run ahead.
            self._set(ClockState.UNCONFIRMED, f"the wall clock is {drift / 1000:.0f} s after the time last "
                      "trusted; waiting for the cloud's time", wall)
        return self.state

    def observe_cloud_time(self, cloud_ms: int) -> None:
        """A command's `ts`: the cloud's clock when it sent it (a lower bound of the cloud's time now)."""
        wall = self.wall_ms()
        skew = wall - cloud_ms
        if skew < -TOLERANCE_MS:
            if self.state is not ClockState.BEHIND or cloud_ms > self.estimate_ms():
                self._ref_wall, self._ref_steady = cloud_ms, self.steady_ms()
            self._set(ClockState.BEHIND, f"the wall clock is {-skew / 1000:.0f} s behind the cloud's", wall)
        elif skew <= TOLERANCE_MS:
            if self.state is not ClockState.OK:
                self._set(ClockState.OK, "the cloud's time confirms the wall clock", wall)
            self._ref_wall, self._ref_steady = wall, self.steady_ms()
        elif self.state is not ClockState.OK:
            # Far after the command's time: it waited at the broker, or the clock is ahead. Not vouched for by
            # continuity, it is taken as ahead, and the cloud's time is the better estimate (a lower bound).
            if self.state is not ClockState.AHEAD or cloud_ms > self.estimate_ms():
                self._ref_wall, self._ref_steady = cloud_ms, self.steady_ms()
            self._set(ClockState.AHEAD, f"the wall clock is {skew / 1000:.0f} s ahead of the cloud's", wall)

    def _set(self, state: ClockState, reason: str, wall: int) -> None:
        if state is self.state and reason == self.reason:
            return
        changed = state is not self.state
        self.state, self.reason = state, reason
        if changed or state is not ClockState.OK:
            if state is ClockState.OK:
                log.warning("wall clock: ok again (%s)", reason)
            else:
                log.warning("wall clock %s: %s; expiries wait until it is trusted", state.value, reason)
            if changed:
                self._reports.append(ClockReport(state, reason, wall, self.estimate_ms()))

    # -- the task ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Check every second, report changes upstream, persist the reference every PERSIST_EVERY_S and when
        stopped (a crash loses at most PERSIST_EVERY_S: after it, the steady clock may resume that much early,
        which lengthens a running lockout by as much at worst)."""
        try:
            while True:
                self.check()
                await self.flush_reports()
                if self._mono() - self._last_persist >= PERSIST_EVERY_S:
                    await self.persist()
                await asyncio.sleep(CHECK_EVERY_S)
        finally:
            try:
                await self.persist()
            except Exception as exc:  # the database may be closing: the last periodic write stands
                log.warning("clock state not saved at stop: %s", exc)

    async def flush_reports(self) -> None:
        while self._reports:
            report = self._reports[0]
            if self.on_change is not None:
                await self.on_change(report)
            self._reports.pop(0)

    async def persist(self) -> None:
        """Where the next run continues from: the raw wall clock and the steady time now, the state, and
        the reference the wall clock is judged by."""
        self._last_persist = self._mono()
        values = (self.wall_ms(), self.steady_ms(), self.state.value, self._ref_wall, self._ref_steady)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO clock_state(id, wall_ms, steady_ms, state, ref_wall_ms, ref_steady_ms) "
                "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET wall_ms = excluded.wall_ms, "
                "steady_ms = excluded.steady_ms, state = excluded.state, ref_wall_ms = excluded.ref_wall_ms, "
                "ref_steady_ms = excluded.ref_steady_ms",
                values,
            )

        await self._db.write(job)
