"""The benchmark's base station: the real emulator in its own process on a paced pty, its tags of one
type already showing the pictures the benchmark preloaded (so the measured update is a price change)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import TAG_TYPES_BY_NAME


async def main(pty: str, preload: Path, count: int, seed: int, type_name: str, state_dir: str) -> None:
    specs = mixed(count, seed, type=TAG_TYPES_BY_NAME[type_name], fast=True)
    emulator = BaseStationEmulator(specs, air_rate=10_000_000, checkin_interval=3600, state_dir=state_dir, seed=seed)
    for tag, sim in emulator.tags.items():
        raw = (preload / f"{tag.hex()}.bin").read_bytes()
        sim.picture, sim.hash = raw, picture_hash(raw)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with emulator.running(PtyPort(pty)):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]))
