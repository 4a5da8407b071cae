"""Opening a compartment's door and watching it until it closes again (issue 4 part 3).

Invariants:
- A compartment has at most one opening in progress. It is registered before the unlock frame goes out (so the
  alarm poll never calls our own opening forced) and removed only after its end was handled: the `OpeningEnds`
  given with it stored the outcome and announced it while the compartment still counted as busy.
- A door we opened counts as commanded until the alarm poll sees it latched with no opening in progress
  (`latched`), or until a jam gives up on it (`forget_command`).
- Only readings taken after the unlock tell about an opening: the watcher shares one read per board per poll
  period with the alarm poll (devices/lockers/shared_reads), never an older one.

Doors: a lock board reports the hook ("locked": closed and latched). An unlatched lock reads as an open door: an
unlatched closed door cannot be told from an open one, and both count as open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from devices.lockers.board import LockBoardError, LockState
from devices.lockers.shared_reads import SharedReads
from edge_agent.services.doors import Compartment as DoorCompartment
from edge_agent.services.doors import DoorAlreadyOpenedError, DoorOpener, DoorOpening
from edge_agent.services.locker_compartments import CompartmentInfo, CompartmentSpec

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LockerTimings:
    poll_s: float = 0.25  # sensor polling: alarms within 2 s (issue 4 part 5)
    jam_s: float = 10.0  # an unlocked door still latched after this long: jammed
    load_timeout_s: float = 300.0  # how long a load may keep its door open
    collect_timeout_s: float = 300.0
    door_open_alarm_s: float = 60.0
    reminder_before_ms: int = DAY_MS  # pickup.reminder this long before a hold ends (LockerService.tick)

    def __post_init__(self) -> None:
        for name in ("poll_s", "jam_s", "load_timeout_s", "collect_timeout_s", "door_open_alarm_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LockerTimings.{name} must be positive")


@dataclass
class Opening:
    """A door the service opened (or found open for a flow in progress) and is watching."""

    kind: str  # load | collect | retrieval | test
    order_id: str
    spec: CompartmentSpec
    attempt: str
    resumed: bool = False
    task: asyncio.Task[None] | None = None


class OpeningEnds(Protocol):
    """What happens when a watched opening ends (LockerService): its outcome stored, then announced."""

    async def opening_closed(self, opening: Opening, closed: LockState | None) -> None:
        """The door latched again (`closed`: the reading that saw it), or None: not within the timeout."""

    async def opening_jammed(self, opening: Opening) -> None:
        """The lock never released within `jam_s`."""


class DoorWatch:
    def __init__(self, doors: DoorOpener, reads: Mapping[str, SharedReads], timings: LockerTimings) -> None:
        self._doors = doors
        self._reads = reads
        self._timings = timings
        self._openings: dict[str, Opening] = {}  # by compartment id
        self._commanded: set[str] = set()  # opened by us; cleared once the alarm poll sees the door latched
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what is open -------------------------------------------------------------------------------

    def opening(self, compartment_id: str) -> Opening | None:
        return self._openings.get(compartment_id)

    def busy(self) -> tuple[str, ...]:
        """The compartments with an opening in progress."""
        return tuple(self._openings)

    def commanded(self, compartment_id: str) -> bool:
        """Whether an open door there is ours: an opening in progress, or one not yet seen latched again."""
        return compartment_id in self._openings or compartment_id in self._commanded

    def latched(self, compartment_id: str) -> None:
        """The alarm poll saw the door latched: with no opening in progress, our last command is spent."""
        if compartment_id not in self._openings:
            self._commanded.discard(compartment_id)

    def forget_command(self, compartment_id: str) -> None:
        """A jammed lock: the door was never opened, so a later opening of it is not ours."""
        self._commanded.discard(compartment_id)

    # -- opening --------------------------------------------------------------------------------

    async def unlock(
        self, opening: Opening, *, purpose: str, actor: str, order_id: str | None, reason: str | None = None
    ) -> DoorOpening:
        """The one unlock of `opening.attempt` (DoorOpener: durable intent, audited). On failure the compartment
        is free again and the error (LockBoardError, DoorAlreadyOpenedError) propagates."""
        spec = opening.spec
        self._openings[spec.id] = opening  # before the frame goes out: the alarm poll must not call it forced
        self._commanded.add(spec.id)
        try:
            return await self._doors.open(
                DoorCompartment(spec.id, spec.board_id, spec.lock),
                purpose=purpose,
                attempt=opening.attempt,
                actor=actor,
                order_id=order_id,
                reason=reason,
            )
        except (LockBoardError, DoorAlreadyOpenedError):
            self._openings.pop(spec.id, None)
            raise

    def follow(self, opening: Opening, opened: bool, ends: OpeningEnds) -> None:
        """Watch `opening` (`opened`: the door was already seen unlatched) to its end, in a task of its own."""
        self._openings[opening.spec.id] = opening
        self._commanded.add(opening.spec.id)
        self._start(opening, self._watch(opening, opened, ends), f"locker-{opening.kind}-{opening.spec.id}")

    def follow_test(self, opening: Opening) -> None:
        """Hold a technician's test opening until its door is latched again (`_watch_test`)."""
        self._start(opening, self._watch_test(opening), f"locker-test-{opening.spec.id}")

    def _start(self, opening: Opening, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        opening.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reading --------------------------------------------------------------------------------

    async def read(self, spec: CompartmentSpec, not_before: float = float("-inf")) -> LockState | None:
        """The door and item of `spec`, read after `not_before` (monotonic); None when it cannot be read."""
        reads = self._reads.get(spec.board_id)
        if reads is None:
            return None
        try:
            return await reads.read(spec.lock, max_age_s=self._timings.poll_s, not_before=not_before)
        except (LockBoardError, ValueError) as exc:
            log.warning("reading %s: %s", spec.id, exc)
            return None

    def board_readings(self) -> dict[str, tuple[float, list[LockState]] | None]:
        """Each polled board's latest sensor reading (monotonic time its request left, lock states)."""
        return {board_id: reads.last_reading for board_id, reads in self._reads.items()}

    def door_states(self, compartments: Iterable[CompartmentInfo]) -> dict[str, tuple[LockState, float]]:
        """Each compartment's door and item as of the latest reading, with its age in seconds; compartments whose
        board was never read are absent. Reads nothing from the boards itself."""
        now = time.monotonic()
        out: dict[str, tuple[LockState, float]] = {}
        for info in compartments:
            reads = self._reads.get(info.spec.board_id)
            latest = None if reads is None else reads.last_reading
            if latest is not None and 1 <= info.spec.lock <= len(latest[1]):
                out[info.spec.id] = (latest[1][info.spec.lock - 1], max(0.0, now - latest[0]))
        return out

    async def _poll_until(
        self, spec: CompartmentSpec, want_locked: bool, timeout_s: float, not_before: float
    ) -> LockState | None:
        """Until the door is (un)latched as wanted, by readings taken after `not_before` (the unlock)."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = await self.read(spec, not_before)
            if state is not None and state.locked == want_locked:
                return state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self._timings.poll_s)

    async def _until_opened(self, opening: Opening, since: float) -> LockState | None:
        """After an unlock whose outcome was not seen (no status, or read latched): the door unlatched, or
        latched with the item sensor changed (a parcel in after a load, gone after a collect: the door was
        opened and shut between two readings, which a lost status read can hide); None after `jam_s`."""
        item_before = opening.kind != "load"
        deadline = time.monotonic() + self._timings.jam_s
        while True:
            state = await self.read(opening.spec, since)
            if state is not None and (not state.locked or (state.item is not None and state.item != item_before)):
                return state
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self._timings.poll_s)

    # -- watching -------------------------------------------------------------------------------

    async def _watch(self, opening: Opening, opened: bool, ends: OpeningEnds) -> None:
        spec = opening.spec
        t = self._timings
        since = time.monotonic()  # the unlock is done: only readings from now on tell about this opening
        try:
            closed: LockState | None = None
            if not opened:
                seen = await self._until_opened(opening, since)
                if seen is None:
                    await ends.opening_jammed(opening)
                    return
                if seen.locked:
                    closed = seen  # it opened and closed between two readings: the item sensor tells
            if closed is None:
                timeout = t.load_timeout_s if opening.kind == "load" else t.collect_timeout_s
                closed = await self._poll_until(spec, True, timeout, since)
            await ends.opening_closed(opening, closed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watching %s for order %s failed", spec.id, opening.order_id)
        finally:
            if self._openings.get(spec.id) is opening:
                del self._openings[spec.id]

    async def _watch_test(self, opening: Opening) -> None:
        """Hold the compartment (nothing loads into or collects from it) until its door is latched again, or
        `collect_timeout_s`; after that the alarm poll reports a door left open as for any other opening."""
        spec = opening.spec
        since = time.monotonic()
        try:
            # Unlatched within jam_s (else the lock did not release: nothing to hold), then latched again.
            if await self._poll_until(spec, False, self._timings.jam_s, since) is not None:
                await self._poll_until(spec, True, self._timings.collect_timeout_s, since)
        except Exception:
            log.exception("watching the test opening of %s failed", spec.id)
        finally:
            if self._openings.get(spec.id) is opening:
                del self._openings[spec.id]

    async def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until every watched door reached its end (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop watching (the doors' state stays in the database; the next start's recovery picks it up)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._openings.clear()
