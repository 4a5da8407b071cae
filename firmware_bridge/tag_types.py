"""Tag models the base-station protocol knows: geometry and colour planes (docs/base-station-protocol.md).

The type code travels in TAG_CHECKIN, TAG_DISCOVERED and TAG_LIST; it tells the agent the panel's
native resolution and which colour planes a picture for it carries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Colours(enum.StrEnum):
    BW = "bw"  # one plane: black
    BWR = "bwr"  # two planes: black, red
    BWY = "bwy"  # two planes: black, yellow

    @property
    def planes(self) -> int:
        return 1 if self is Colours.BW else 2

    @property
    def accent(self) -> str | None:
        return {Colours.BW: None, Colours.BWR: "red", Colours.BWY: "yellow"}[self]


@dataclass(frozen=True)
class TagType:
    code: int
    name: str
    diagonal_in: float
    width: int
    height: int
    colours: Colours

    @property
    def plane_bytes(self) -> int:
        """Bytes of one packed plane: rows padded to whole bytes."""
        return (self.width + 7) // 8 * self.height

    @property
    def raw_bytes(self) -> int:
        return self.plane_bytes * self.colours.planes


TAG_TYPES: dict[int, TagType] = {
    t.code: t
    for t in (
        TagType(0x01, "1.54-bw", 1.54, 200, 200, Colours.BW),
        TagType(0x02, "2.13-bwr", 2.13, 250, 122, Colours.BWR),
        TagType(0x03, "2.9-bwr", 2.9, 296, 128, Colours.BWR),
        TagType(0x04, "4.2-bwr", 4.2, 400, 300, Colours.BWR),
        TagType(0x05, "7.5-bwr", 7.5, 800, 480, Colours.BWR),
        TagType(0x06, "2.9-bwy", 2.9, 296, 128, Colours.BWY),
    )
}

TAG_TYPES_BY_NAME: dict[str, TagType] = {t.name: t for t in TAG_TYPES.values()}


class UnknownTagTypeError(ValueError):
    pass


def tag_type(code: int) -> TagType:
    try:
        return TAG_TYPES[code]
    except KeyError:
        raise UnknownTagTypeError(f"unknown tag type code 0x{code:02x}") from None
