"""Wiring of the pickup lockers: RS485 buses and Kerong boards, GPIO boards and the alarm signal, the door audit
(local hash chain, then the cloud), pickup codes, the pickups' store, the locker service and its parts (compartments,
door watching, alarm poll, start-up reconciliation), staff and courier sign-in, their cloud commands, and the task
that runs them (buses, start-up reconciliation, alarm poll, expiry clock).

Hooks made here: the pickup codes' store-wide guessing alarm raises alarm.code_guessing (`assemble_locker_service`);
a staff terminal locked out for guessing raises the same alarm; every door opening goes to the cloud as
audit.door_opened (`AuditToCloud`). The pickups' store built here is the one the pickup shelves share
(`Lockers.pickups`, wiring/shelves.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from cloud_link.bus import EventBus
from cloud_link.events import now_ms
from cloud_link.outbox import OutboxFullError
from cloud_link.ports import DurableStore, EventSink
from devices.lockers.board import LockBoard
from devices.lockers.gpio import GpioLockBoard, GpioLockPins
from devices.lockers.kerong import KerongBoard
from devices.lockers.shared_reads import SharedReads
from devices.lockers.signal import AlarmSignal
from edge_agent.commands.courier import register_courier_commands
from edge_agent.commands.lockers import register_locker_commands
from edge_agent.config import AgentConfig
from edge_agent.services.agent_clock import AgentClock, ClockState
from edge_agent.services.audit import AuditKind, AuditLog, AuditRecord, AuditSink
from edge_agent.services.doors import DoorOpener
from edge_agent.services.locker_alarms import LockerAlarms
from edge_agent.services.locker_compartments import CompartmentStore
from edge_agent.services.locker_doors import DoorWatch
from edge_agent.services.locker_recovery import LockerRecovery
from edge_agent.services.locker_staff import LockerStaff
from edge_agent.services.lockers import CompartmentSpec, LockerService, LockerTimings
from edge_agent.services.pickup_codes import PickupCodes
from edge_agent.services.pickups import PickupStore
from edge_agent.wiring.context import StartupError, WiringContext
from firmware_bridge.kerong.bus import KerongBus

log = logging.getLogger(__name__)

# How often the expiry clock looks for holds that ended and reminders that are due.
EXPIRY_EVERY_S = 30.0


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %s", task.get_name(), task.exception())


@dataclass
class AuditToCloud:
    """Every door opening: into the local hash-chained audit log, then to the cloud as audit.door_opened."""

    audit: AuditLog
    bus: EventBus

    async def append(
        self, kind: str, *, compartment: str | None, actor: str | None, order_id: str | None, detail: dict[str, Any],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> AuditRecord:
        record = await self.audit.append(
            cast(AuditKind, kind), compartment=compartment, actor=actor, order_id=order_id, detail=detail, also=also
        )
        await self._publish(record)
        return record

    async def _publish(self, record: AuditRecord) -> None:
        try:
            await self.bus.publish("audit.door_opened", record.as_payload())
        except OutboxFullError:
            # The row is in the local chain; the full outbox already raised its alarm; the next start tries again.
            log.error("audit record %d kept locally only: the outbox is full", record.seq)
            return
        # Not awaited: bookkeeping only. Lost in a crash, the record is published once more at the next
        # start (the cloud deduplicates audit.door_opened on the record's seq and hash).
        task = asyncio.get_running_loop().create_task(self.audit.mark_published(record.seq), name="audit-published")
        task.add_done_callback(_log_task_failure)

    async def publish_unsent(self) -> int:
        """At start-up: audit rows whose audit.door_opened never reached the outbox (a crash in between, or
        a full outbox) are published now, oldest first."""
        records = self.audit.unpublished()
        for record in records:
            log.warning("audit record %d had not gone to the cloud: publishing it now", record.seq)
            await self._publish(record)
        return len(records)


@dataclass
class Lockers:
    """The lockers feature, built: what other features and the web UI use, and what its task runs."""

    service: LockerService
    staff: LockerStaff
    audit: AuditLog
    audit_sink: AuditToCloud
    buses: dict[str, KerongBus]
    boards: dict[str, LockBoard]
    pickups: PickupStore  # the service's, shared with the pickup shelves
    gpio_devices: list[GpioLockBoard | AlarmSignal] = field(default_factory=list)


def _signal_all(signals: list[AlarmSignal]) -> Callable[[bool], None]:
    def set_all(on: bool) -> None:
        for alarm in signals:
            alarm.set(on)

    return set_all


def _build_gpio(config: AgentConfig, boards: dict[str, LockBoard],
                devices: list[GpioLockBoard | AlarmSignal]) -> list[AlarmSignal]:
    """GPIO lock boards into `boards`; returns every alarm LED/buzzer (the boards' and the standalone one)."""
    cfg = config.lockers
    signals: list[AlarmSignal] = []
    try:
        for g in cfg.gpio_boards:
            pins = [GpioLockPins(lock.lock_pin, lock.door_pin, lock.item_pin) for lock in g.locks]
            board = GpioLockBoard(g.id, pins, pulse_s=g.pulse_s, confirm_s=g.confirm_s)
            devices.append(board)
            boards[g.id] = board
        if cfg.alarm_led_pin is not None or cfg.alarm_buzzer_pin is not None:
            alarm = AlarmSignal(cfg.alarm_led_pin, cfg.alarm_buzzer_pin)
            devices.append(alarm)
            signals.append(alarm)
    except Exception as exc:  # gpiozero: no pin library, pin busy, not a Pi
        raise StartupError(
            [f"lockers: GPIO not usable here ({type(exc).__name__}: {exc}); GPIOZERO_PIN_FACTORY=mock simulates it"]
        ) from None
    return signals


def assemble_locker_service(
    db: DurableStore,
    boards: Mapping[str, LockBoard],
    doors: DoorOpener,
    codes: PickupCodes,
    *,
    audit: AuditSink,
    events: EventSink,
    timings: LockerTimings | None = None,
    clock: Callable[[], int] = now_ms,
    alarm_signal: Callable[[bool], None] | None = None,
) -> LockerService:
    """The locker service and its parts, connected (`build_lockers`, and the tests that build a locker service)."""
    timings = timings or LockerTimings()
    # Door watchers and the alarm poll share one read per board per poll period (devices/lockers/shared_reads).
    reads = {board_id: SharedReads(board) for board_id, board in boards.items()}
    compartments = CompartmentStore(db)
    pickups = PickupStore(db)
    watch = DoorWatch(doors, reads, timings)
    alarms = LockerAlarms(
        compartments, reads, watch, pickups, codes, audit=audit, events=events, timings=timings, clock=clock,
        alarm_signal=alarm_signal,
    )
    recovery = LockerRecovery(compartments, boards, doors, watch, pickups, events=events)
    # Hook: unusually many wrong pickup codes store-wide raise alarm.code_guessing.
    codes.on_alarm = alarms.code_guessing
    return LockerService(
        compartments, pickups, watch, alarms, recovery, codes=codes, events=events, timings=timings, clock=clock
    )


async def build_lockers(ctx: WiringContext) -> Lockers:
    cfg = ctx.config.lockers
    audit = AuditLog(ctx.db)
    audit_sink = AuditToCloud(audit, ctx.bus)
    buses = {b.name: KerongBus(b.url, baudrate=b.baudrate) for b in cfg.buses}
    ctx.metrics.watch_lock_buses(buses)
    boards: dict[str, LockBoard] = {b.id: KerongBoard(buses[b.bus], b.number, b.locks) for b in cfg.boards}
    gpio_devices: list[GpioLockBoard | AlarmSignal] = []
    signals = _build_gpio(ctx.config, boards, gpio_devices)
    clock = ctx.clock
    codes = PickupCodes(ctx.db, ctx.store_key(), steady=clock.steady_ms, is_past=clock.is_past)
    service = assemble_locker_service(
        ctx.db,
        boards,
        DoorOpener(ctx.db, boards, audit_sink),  # Hook: every door opening is audited, then sent to the cloud
        codes,
        audit=audit_sink,
        events=ctx.sink,
        timings=LockerTimings(door_open_alarm_s=cfg.door_open_alarm_s, jam_s=cfg.jam_s),
        alarm_signal=_signal_all(signals) if signals else None,
    )
    await service.add_compartments(
        [CompartmentSpec(c.id, c.bank, c.board, c.lock, c.size, c.row, c.column) for c in cfg.compartments]
    )
    register_locker_commands(ctx.registry, service, hold_days=cfg.hold_days, clock=clock)
    # Staff and courier sign-in on the locker screens. Hook: a staff terminal locked out for guessing raises the
    # pickup codes' alarm.code_guessing (installed on `codes` by assemble_locker_service).
    staff = LockerStaff(ctx.db, ctx.store_key(), on_alarm=codes.on_alarm, steady=clock.steady_ms)
    register_courier_commands(ctx.registry, staff)
    lockers = Lockers(service, staff, audit, audit_sink, buses, boards, service.pickups, gpio_devices)
    ctx.running.task("lockers", functools.partial(run_lockers, lockers, clock))
    return lockers


async def run_lockers(lockers: Lockers, clock: AgentClock) -> None:
    """Buses, then the start-up reconciliation, then the alarm poll and the expiry clock."""
    service = lockers.service
    async with asyncio.TaskGroup() as tg:
        for name, bus in lockers.buses.items():
            tg.create_task(bus.run(), name=f"locker-bus-{name}")
            tg.create_task(bus.report_line_errors(), name=f"locker-bus-{name}-errors")
        for bus in lockers.buses.values():
            try:
                await bus.wait_connected(10.0)
            except TimeoutError:
                log.error("locker bus %s is not reachable; lockers run without it until it is", bus.url)
        await service.recover()
        await lockers.audit_sink.publish_unsent()
        tg.create_task(service.run(), name="locker-poll")
        try:
            while True:
                # Holds end only on a wall clock the agent can vouch for (services/agent_clock).
                if clock.check() is ClockState.OK:
                    await service.tick()
                await asyncio.sleep(EXPIRY_EVERY_S)
        finally:
            for device in lockers.gpio_devices:
                device.close()  # pins released, LED and buzzer off
