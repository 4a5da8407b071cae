"""Locker alarms: every board's sensors every `poll_s`, and what staff must look at now (issue 4 part 5).

Invariants:
- Each alarm is raised once per incident: an incident starts when a door is first seen open and ends when it is
  seen latched again. A door open with no opening of ours (DoorWatch.commanded) is `alarm.door_forced` plus an
  `uncommanded` audit row; a door open longer than `door_open_alarm_s` is `alarm.door_left_open`.
- The LED and buzzer (`alarm_signal`) are told after every poll whether an alarm is open: a door forced or left
  open, or a lock jammed and not yet put back in service by staff.
- `alarm.code_guessing` is raised when the pickup codes see unusual failure rates store-wide (wiring/lockers.py
  makes that hook).
A jammed lock is noticed by the door watcher, not here (LockerService.opening_jammed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cloud_link.ports import EventSink
from devices.lockers.board import LockBoardError, LockState
from devices.lockers.shared_reads import SharedReads
from edge_agent.services.audit import AuditSink
from edge_agent.services.locker_compartments import CompartmentInfo, CompartmentSpec, CompartmentStore
from edge_agent.services.locker_doors import DoorWatch, LockerTimings
from edge_agent.services.pickup_codes import GuessingAlarm, PickupCodes
from edge_agent.services.pickups import PickupStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAlarm:
    kind: str  # out_of_service | door_forced | door_left_open | code_guessing
    compartment: str | None
    since_ms: int | None  # when the door was first seen open, where known
    message: str


@dataclass
class _Incident:
    since: float  # monotonic time the door was first seen open
    commanded: bool
    left_open_raised: bool = False


class LockerAlarms:
    def __init__(
        self,
        compartments: CompartmentStore,
        reads: Mapping[str, SharedReads],
        watch: DoorWatch,
        pickups: PickupStore,
        codes: PickupCodes,
        *,
        audit: AuditSink,
        events: EventSink,
        timings: LockerTimings,
        clock: Callable[[], int],
        alarm_signal: Callable[[bool], None] | None = None,
    ) -> None:
        self._compartments = compartments
        self._reads = reads
        self._watch = watch
        self._pickups = pickups
        self._codes = codes
        self._audit = audit
        self._events = events
        self._timings = timings
        self._clock = clock
        self._alarm_signal = alarm_signal
        self._incidents: dict[str, _Incident] = {}  # doors seen open, by compartment id

    async def code_guessing(self, alarm: GuessingAlarm) -> None:
        """The pickup codes' alarm hook: unusually many wrong codes store-wide."""
        await self._events.publish_event(
            "alarm.code_guessing",
            {"failures": alarm.failures, "window_s": alarm.window_s, "terminals": list(alarm.terminals)},
        )

    async def run(self) -> None:
        """Every board's sensors every `poll_s`, until cancelled."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("locker alarm poll failed")
            await asyncio.sleep(self._timings.poll_s)

    async def poll_once(self) -> None:
        by_board = self._compartments.by_board()
        # Boards on different buses are read at the same time; each bus serialises its own.
        await asyncio.gather(*(self._poll_board(board_id, infos) for board_id, infos in by_board.items()))
        if self._alarm_signal is not None:
            infos = [i for group in by_board.values() for i in group]
            self._alarm_signal(self._alarming(infos))

    def _alarming(self, infos: list[CompartmentInfo]) -> bool:
        """A door forced or left open, or a jammed lock not yet put back in service by staff."""
        doors = any(not i.commanded or i.left_open_raised for i in self._incidents.values())
        return doors or any(not c.enabled and c.oos_reason == "jammed" for c in infos)

    async def _poll_board(self, board_id: str, infos: list[CompartmentInfo]) -> None:
        reads = self._reads.get(board_id)
        if reads is None:
            return
        try:
            # A watcher's reading from the last half period is as good as a new one.
            states = await reads.read_all(max_age_s=self._timings.poll_s / 2)
        except LockBoardError as exc:
            log.warning("alarm poll of %s: %s", board_id, exc)
            return
        for info in infos:
            if 1 <= info.spec.lock <= len(states):
                await self._check_door(info.spec, states[info.spec.lock - 1])

    async def _check_door(self, spec: CompartmentSpec, state: LockState) -> None:
        now = time.monotonic()
        if state.locked:
            self._incidents.pop(spec.id, None)
            self._watch.latched(spec.id)
            return
        incident = self._incidents.get(spec.id)
        if incident is None:
            commanded = self._watch.commanded(spec.id)
            incident = self._incidents[spec.id] = _Incident(now, commanded)
            if not commanded:
                pickup = self._pickups.in_compartment(spec.id)
                order_id = None if pickup is None else pickup.order_id
                log.error("compartment %s: door open without a command", spec.id)
                await self._audit.append(
                    "uncommanded", compartment=spec.id, actor=None, order_id=order_id,
                    detail={"item": state.item},
                )
                await self._events.publish_event(
                    "alarm.door_forced", {"compartment": spec.id, "order_id": order_id, "item": state.item}
                )
        if not incident.left_open_raised and now - incident.since >= self._timings.door_open_alarm_s:
            incident.left_open_raised = True
            await self._events.publish_event(
                "alarm.door_left_open",
                {"compartment": spec.id, "open_s": round(now - incident.since, 1), "commanded": incident.commanded},
            )

    def open_alarms(self, bank: str | None = None) -> list[OpenAlarm]:
        """What staff must look at now: compartments out of service, doors open without a command or
        open too long, and suspected code guessing (store-wide)."""
        infos = [i for i in self._compartments.all() if bank is None or i.spec.bank == bank]
        now_mono, now_ms = time.monotonic(), self._clock()
        alarms: list[OpenAlarm] = []
        for info in infos:
            cid = info.spec.id
            if not info.enabled:
                message = f"Door {cid} is out of service ({info.oos_reason})."
                alarms.append(OpenAlarm("out_of_service", cid, None, message))
            incident = self._incidents.get(cid)
            if incident is None:
                continue
            since = now_ms - int((now_mono - incident.since) * 1000)
            if not incident.commanded:
                alarms.append(OpenAlarm("door_forced", cid, since, f"Door {cid} was opened without a command."))
            elif incident.left_open_raised:
                alarms.append(OpenAlarm("door_left_open", cid, since, f"Door {cid} has been left open."))
        if self._codes.guessing_suspected:
            alarms.append(OpenAlarm("code_guessing", None, None, "Unusually many wrong pickup codes were typed."))
        return alarms
