"""Simulated e-ink tags of the base-station emulator: what each one is, shows and reports."""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from dataclasses import dataclass
from typing import Any

from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import TAG_TYPES_BY_NAME, TagType

TAG_FIRMWARE = 0x0103
MAX_TAGS = 0xFFFF  # TAG_LIST counts tags in 16 bits

# How many tags of each type `mixed()` makes, relative: mostly 2.9" and 2.13", some of every other.
MIX_WEIGHTS: dict[str, float] = {
    "2.9-bwr": 0.45,
    "2.13-bwr": 0.33,
    "1.54-bw": 0.06,
    "4.2-bwr": 0.07,
    "7.5-bwr": 0.03,
    "2.9-bwy": 0.06,
}


class EmulatorError(Exception):
    """A misuse of the emulator's API (unknown tag, duplicate tag, emulator not running)."""


@functools.cache
def white_picture(tag_type: TagType) -> bytes:
    """The all-white picture of a type (a 0 bit is no ink on every plane), shared by every tag of that type."""
    return bytes(tag_type.raw_bytes)


@functools.cache
def _white_hash(tag_type: TagType) -> bytes:
    return picture_hash(white_picture(tag_type))


@dataclass(frozen=True)
class TagSpec:
    """A simulated tag to create: its identity, model and starting telemetry."""

    tag: bytes
    type: TagType
    battery_mv: int = 2950
    temperature_dc: int = 215
    rssi: int = -62
    lqi: int = 210
    firmware: int = TAG_FIRMWARE
    in_range: bool = True
    fast: bool = False

    def __post_init__(self) -> None:
        if len(self.tag) != 8:
            raise ValueError(f"a tag id is 8 bytes, got {len(self.tag)}")


@dataclass(frozen=True)
class LedFlashRecord:
    """An LED command as the tag received it."""

    colour: int
    count: int
    period_ms: int
    at: float  # loop time of delivery to the tag


@dataclass(eq=False)
class SimTag:
    tag: bytes
    type: TagType
    battery_mv: int
    temperature_dc: int
    rssi: int
    lqi: int
    firmware: int
    in_range: bool
    fast: bool
    picture: bytes
    hash: bytes
    page: int = 0
    led: LedFlashRecord | None = None  # what the LED does now (None: off)
    pending_led: LedFlashRecord | None = None
    pending_page: int | None = None
    pending_fast: int | None = None  # SET_FAST seconds, taken at the next check-in
    fast_until: float = 0.0  # monotonic time until which SET_FAST keeps the tag listening
    awake: bool = False  # listening to the radio: checked in and has something to receive
    checkins: int = 0
    pictures_shown: int = 0

    @classmethod
    def from_spec(cls, spec: TagSpec) -> SimTag:
        return cls(
            tag=spec.tag,
            type=spec.type,
            battery_mv=spec.battery_mv,
            temperature_dc=spec.temperature_dc,
            rssi=spec.rssi,
            lqi=spec.lqi,
            firmware=spec.firmware,
            in_range=spec.in_range,
            fast=spec.fast,
            picture=white_picture(spec.type),
            hash=_white_hash(spec.type),
        )

    @property
    def always_listening(self) -> bool:
        """Fast mode: by the emulator's knob, or for a while by SET_FAST."""
        return self.fast or time.monotonic() < self.fast_until

    @property
    def listening(self) -> bool:
        return self.always_listening or self.awake


def mixed(n: int, seed: int = 1, **overrides: Any) -> list[TagSpec]:
    """n tags over every tag type: mostly 2.9" and 2.13" black/white/red, some of each other size.

    With n at least the number of types, every type is present. Ids, battery and signal come from `seed`;
    `overrides` set TagSpec fields on every tag (e.g. fast=True).
    """
    if not 0 <= n <= MAX_TAGS:
        raise ValueError(f"tag count must be within 0..{MAX_TAGS}")
    rng = random.Random(seed)
    names = list(MIX_WEIGHTS)
    kinds = names[:n] if n >= len(names) else []
    kinds += rng.choices(names, weights=[MIX_WEIGHTS[k] for k in names], k=n - len(kinds))
    rng.shuffle(kinds)
    seen: set[bytes] = set()
    specs = []
    for name in kinds:
        while True:
            tag = bytes.fromhex("00124b") + rng.randbytes(5)
            if tag not in seen:
                seen.add(tag)
                break
        spec = TagSpec(
            tag,
            TAG_TYPES_BY_NAME[name],
            battery_mv=rng.randrange(2600, 3100),
            temperature_dc=rng.randrange(180, 260),
            rssi=rng.randrange(-85, -45),
            lqi=rng.randrange(120, 255),
        )
        specs.append(dataclasses.replace(spec, **overrides) if overrides else spec)
    return specs
