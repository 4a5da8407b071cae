"""Locker reconciliation at start-up, before anything opens (issue 4 part 6).

Invariants:
- An opening interrupted by the restart is never repeated (DoorOpener.recover): the sensors decide.
- Every door and item sensor is read once and compared with the pickups; each difference is one
  `alarm.state_mismatch` (a board that does not answer is one per compartment).
- A flow the restart cut short ends as it would have without the restart: a door found open for a load or a
  collect is watched to its end without being opened again; a load found closed, or a collect found closed and
  empty after a customer's code opened it, is decided now by the same `OpeningEnds` as a watched door.
- A free compartment with an item inside is put out of service ("unexpected item").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from cloud_link.ports import EventSink
from devices.lockers.board import LockBoard, LockBoardError, LockState
from edge_agent.services.doors import DoorOpener
from edge_agent.services.locker_compartments import CompartmentSpec, CompartmentStore
from edge_agent.services.locker_doors import DoorWatch, Opening, OpeningEnds
from edge_agent.services.pickups import PickupState, PickupStore

log = logging.getLogger(__name__)


class LockerRecovery:
    def __init__(
        self,
        compartments: CompartmentStore,
        boards: Mapping[str, LockBoard],
        doors: DoorOpener,
        watch: DoorWatch,
        pickups: PickupStore,
        *,
        events: EventSink,
    ) -> None:
        self._compartments = compartments
        self._boards = boards
        self._doors = doors
        self._watch = watch
        self._pickups = pickups
        self._events = events

    async def recover(self, ends: OpeningEnds) -> list[dict[str, Any]]:
        """Returns the mismatches raised as `alarm.state_mismatch`."""
        interrupted = await self._doors.recover(self._door_now)
        mismatches: list[dict[str, Any]] = []
        for board_id, infos in self._compartments.by_board().items():
            board = self._boards.get(board_id)
            states: list[LockState] | None = None
            if board is not None:
                try:
                    states = await board.read_all()
                except LockBoardError as exc:
                    log.error("recover: cannot read %s: %s", board_id, exc)
            for info in infos:
                spec = info.spec
                if states is None or not 1 <= spec.lock <= len(states):
                    mismatches.append({"compartment": spec.id, "expected": "readable", "found": "no answer"})
                    continue
                mismatches += await self._reconcile(spec, states[spec.lock - 1], ends)
        for m in mismatches:
            await self._events.publish_event("alarm.state_mismatch", m)
        if interrupted:
            log.warning("recover: %d door openings interrupted by the restart, not repeated", len(interrupted))
        return mismatches

    async def _door_now(self, compartment: str) -> str:
        """The door's sensor as it reads now: "open", "closed" or "unreadable" (for a recovered audit row)."""
        info = self._compartments.get(compartment)
        board = self._boards.get(info.spec.board_id) if info is not None else None
        if info is None or board is None:
            return "unreadable"
        try:
            state = await board.read(info.spec.lock)
        except LockBoardError:
            return "unreadable"
        return "closed" if state.locked else "open"

    async def _reconcile(self, spec: CompartmentSpec, state: LockState, ends: OpeningEnds) -> list[dict[str, Any]]:
        pickup = self._pickups.in_compartment(spec.id)
        found = {"door": "closed" if state.locked else "open", "item": state.item}
        out: list[dict[str, Any]] = []

        def mismatch(expected: str, order_id: str | None) -> None:
            out.append({"compartment": spec.id, "order_id": order_id, "expected": expected, "found": found})

        if pickup is None:
            if not state.locked:
                mismatch("free, door closed", None)
            if state.item:
                mismatch("free, empty", None)
                await self._compartments.set_in_service(spec.id, False, "unexpected item")
            return out
        if pickup.state is PickupState.LOADING:
            opening = Opening("load", pickup.order_id, spec, f"load-resumed-{uuid.uuid4()}", resumed=True)
            if not state.locked:
                self._watch.follow(opening, True, ends)  # watched to its end, never opened again
            else:
                await ends.opening_closed(opening, state)  # empty: the load failed; else it is ready
            return out
        if pickup.state is PickupState.READY:
            if not state.locked:
                mismatch("ready, door closed", pickup.order_id)
                self._watch.follow(Opening("collect", pickup.order_id, spec, "resumed", resumed=True), True, ends)
            elif state.item is False and self._doors.code_opened(pickup.order_id):
                # The agent stopped between the customer closing the door and recording the collect.
                await ends.opening_closed(Opening("collect", pickup.order_id, spec, "resumed", resumed=True), state)
            elif state.item is False:
                mismatch("ready, item inside", pickup.order_id)
            return out
        # retrieval: staff will open it; an open door is still worth a look
        if not state.locked:
            mismatch(f"{pickup.state}, door closed", pickup.order_id)
        return out
