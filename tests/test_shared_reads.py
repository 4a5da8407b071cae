"""SharedReads: one board read for every watcher that asks at about the same time (Kerong emulator, pty)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devices.lockers.board import LockBoardError
from devices.lockers.kerong import KerongBoard
from devices.lockers.shared_reads import SharedReads
from firmware_bridge.emulators.kerong import DEFAULT_LINE_RATE, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.kerong.bus import KerongBus


@contextlib.asynccontextmanager
async def board_on_pty(tmp_path: Path, emulator: LockBoardEmulator) -> AsyncIterator[tuple[KerongBus, SharedReads]]:
    path = tmp_path / "lockers0"
    async with emulator.running(PtyPort(path, line_rate=DEFAULT_LINE_RATE)):
        bus = KerongBus(str(path), reopen_interval_s=0.1, timeout_s=0.1, read_retries=1)
        async with bus.running(connect_timeout=5):
            yield bus, SharedReads(KerongBoard(bus, 0))


async def test_concurrent_askers_share_one_read_and_fresh_readings_are_reused(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.force_open(0, 7)
    async with board_on_pty(tmp_path, emulator) as (bus, reads):
        results = await asyncio.gather(*(reads.read_all(max_age_s=0.5) for _ in range(10)))
        assert reads.reads == 1 and bus.stats.requests == 1
        assert all(r == results[0] for r in results) and results[0][6].locked is False
        assert (await reads.read(7, max_age_s=0.5)).locked is False  # still fresh: no new request
        assert bus.stats.requests == 1
        await asyncio.sleep(0.1)
        await reads.read_all(max_age_s=0.05)  # too old for this asker
        assert bus.stats.requests == 2


async def test_a_reading_from_before_not_before_is_never_returned(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    emulator.set_person(0, 3, Person(open_after_s=None))
    async with board_on_pty(tmp_path, emulator) as (bus, reads):
        early = asyncio.create_task(reads.read_all(max_age_s=10))
        await asyncio.sleep(0.002)  # that read is on the line
        assert (await bus.unlock(0, 3)).status is not None
        after_unlock = time.monotonic()
        state = await reads.read(3, max_age_s=10, not_before=after_unlock)
        assert state.locked is False  # a reading taken after the unlock, not the early one
        assert (await early)[2].locked is True
        assert reads.reads == 2


async def test_an_asker_giving_up_does_not_cancel_the_read_for_the_others(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    async with board_on_pty(tmp_path, emulator) as (_bus, reads):
        quitter = asyncio.create_task(reads.read_all(max_age_s=0))
        stayer = asyncio.create_task(reads.read_all(max_age_s=0))
        await asyncio.sleep(0)
        quitter.cancel()
        assert len(await stayer) == 16 and reads.reads == 1
        with pytest.raises(asyncio.CancelledError):
            await quitter


async def test_a_failed_read_reaches_every_asker_and_the_next_ask_tries_again(tmp_path: Path) -> None:
    emulator = LockBoardEmulator(1)
    async with board_on_pty(tmp_path, emulator) as (_bus, reads):
        emulator.set_reply_loss(1.0)
        results = await asyncio.gather(*(reads.read_all(max_age_s=1) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, LockBoardError) for r in results) and reads.reads == 1
        emulator.set_reply_loss(0.0)
        assert len(await reads.read_all(max_age_s=1)) == 16 and reads.reads == 2
