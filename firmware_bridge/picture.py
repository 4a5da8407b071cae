"""Tag pictures on the wire: packed colour planes, their hash, and the three encodings (docs/base-station-protocol.md).

A raw picture is its planes concatenated: plane 0 is black, plane 1 (two-colour types only) is the accent
colour (red or yellow). Each plane is row-major, every row padded to a whole byte, the most significant bit
is the leftmost pixel and a 1 bit is ink. A pixel whose accent bit is set shows the accent colour whatever
its black bit says (renderers never set both). A raw picture for a tag type is `TagType.raw_bytes` long.

Encodings, named by a one-byte kind:

- 0 RAW: the raw picture itself;
- 1 ZLIB: `zlib.compress(raw)`;
- 2 DELTA_ZLIB: zlib of `raw XOR base`, where base is the picture the tag shows now (same length), named
  by its hash so that the receiver can refuse a delta against a picture it does not hold.

Bytes only: no Pillow here, the base-station emulator decodes with this module alone.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from dataclasses import dataclass
from typing import Literal

from firmware_bridge.tag_types import TagType

HASH_LEN = 8
DEFAULT_LEVEL = 6  # level 9 costs ~3x the time on tag pictures and gains nothing measurable on them

PixelColour = Literal["white", "black", "red", "yellow"]


class PictureError(ValueError):
    """A picture that cannot be decoded: unknown kind, wrong base, corrupt data or wrong length."""


class Encoding(enum.IntEnum):
    RAW = 0
    ZLIB = 1
    DELTA_ZLIB = 2


def picture_hash(raw: bytes) -> bytes:
    """The picture's identity on the wire and in the registry: the first 8 bytes of SHA-256(raw)."""
    return hashlib.sha256(raw).digest()[:HASH_LEN]


@dataclass(frozen=True)
class EncodedPicture:
    kind: Encoding
    data: bytes
    hash: bytes  # of the raw picture, what the tag must report once it shows it
    base_hash: bytes | None  # DELTA_ZLIB only: the picture the delta applies to
    raw_len: int


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """XOR of two equally long buffers, in C speed: one big-integer XOR rather than a Python loop."""
    if len(a) != len(b):
        raise PictureError(f"cannot XOR buffers of {len(a)} and {len(b)} bytes")
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def encode_picture(raw: bytes, base: bytes | None = None, *, level: int = DEFAULT_LEVEL) -> EncodedPicture:
    """The smallest encoding of `raw`: ZLIB, DELTA_ZLIB against `base` (when given and as long), or RAW.

    Speed: with a delta at hand, the whole picture is only compressed at `level` when a level-1 pass shows
    it within 15 % of the delta's size (`level` gains under 10 % over level 1 on tag pictures).

    An unchanged picture (raw == base) needs nothing sent at all; that is the caller's decision, this
    still encodes it (as a tiny delta).
    """
    raw = bytes(raw)
    digest = picture_hash(raw)
    best = EncodedPicture(Encoding.RAW, raw, digest, None, len(raw))
    delta = b""
    if base is not None and len(base) == len(raw):
        delta = zlib.compress(xor_bytes(raw, bytes(base)), level)
        if len(delta) < len(best.data):
            best = EncodedPicture(Encoding.DELTA_ZLIB, delta, digest, picture_hash(bytes(base)), len(raw))
    # The whole picture at `level` costs ~3x the mostly-zero delta. When a delta exists, a fast level-1 pass
    # tells first whether the whole picture can compete (a higher level saves under 10 % on tag pictures).
    if delta and level > 1:
        quick = zlib.compress(raw, 1)
        if len(quick) * 0.85 >= len(best.data):
            return best
        packed = min(zlib.compress(raw, level), quick, key=len)
    else:
        packed = zlib.compress(raw, level)
    if len(packed) < len(best.data):
        best = EncodedPicture(Encoding.ZLIB, packed, digest, None, len(raw))
    return best


def _inflate(data: bytes, expected_len: int) -> bytes:
    # Bounded: never more than expected_len + 1 bytes come out, whatever the input claims (zip bombs).
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, expected_len + 1)
    except zlib.error as exc:
        raise PictureError(f"corrupt zlib data: {exc}") from None
    if len(out) > expected_len:
        raise PictureError(f"zlib data inflates beyond the expected {expected_len} bytes")
    if not inflater.eof:
        raise PictureError(f"truncated zlib data: stream ends after {len(out)} of {expected_len} bytes")
    if inflater.unused_data:
        raise PictureError(f"{len(inflater.unused_data)} stray bytes after the zlib stream")
    if len(out) != expected_len:
        raise PictureError(f"zlib data inflates to {len(out)} bytes, expected {expected_len}")
    return out


def decode_picture(
    kind: int, data: bytes, expected_len: int, base: bytes | None, *, base_hash: bytes | None = None
) -> bytes:
    """The raw picture `data` encodes; `base` is the picture the receiver holds (for DELTA_ZLIB).

    When `base_hash` (the hash the sender named) is given, a delta is refused unless `base` has that hash.
    Raises PictureError, and nothing else, on any bad input.
    """
    if expected_len < 0:
        raise PictureError(f"negative expected length {expected_len}")
    try:
        encoding = Encoding(kind)
    except ValueError:
        raise PictureError(f"unknown picture encoding {kind}") from None
    if encoding is Encoding.RAW:
        if len(data) != expected_len:
            raise PictureError(f"raw picture of {len(data)} bytes, expected {expected_len}")
        return bytes(data)
    if encoding is Encoding.ZLIB:
        return _inflate(data, expected_len)
    if base is None:
        raise PictureError("delta picture without a base picture")
    if len(base) != expected_len:
        raise PictureError(f"delta base of {len(base)} bytes, expected {expected_len}")
    if base_hash is not None and picture_hash(bytes(base)) != bytes(base_hash):
        raise PictureError(
            f"delta against picture {bytes(base_hash).hex()}, but the base held is {picture_hash(bytes(base)).hex()}"
        )
    return xor_bytes(_inflate(data, expected_len), bytes(base))


# -- helpers for tests and previews ------------------------------------------------------------------------

_BITS = tuple(bytes((byte >> (7 - i)) & 1 for i in range(8)) for byte in range(256))


def _check_raw(raw: bytes, tag_type: TagType) -> None:
    if len(raw) != tag_type.raw_bytes:
        raise PictureError(f"picture of {len(raw)} bytes, a {tag_type.name} picture has {tag_type.raw_bytes}")


def unpack_plane(raw: bytes, tag_type: TagType, plane: int = 0) -> list[bytes]:
    """One plane as rows of 0/1 bytes (one per pixel, width long): for tests and previews, not hot paths."""
    _check_raw(raw, tag_type)
    if not 0 <= plane < tag_type.colours.planes:
        raise PictureError(f"a {tag_type.name} picture has no plane {plane}")
    stride = (tag_type.width + 7) // 8
    start = plane * tag_type.plane_bytes
    rows = []
    for y in range(tag_type.height):
        row = raw[start + y * stride : start + (y + 1) * stride]
        rows.append(b"".join(_BITS[b] for b in row)[: tag_type.width])
    return rows


def pixel(raw: bytes, tag_type: TagType, x: int, y: int) -> PixelColour:
    """The colour the tag shows at (x, y), in native panel coordinates."""
    _check_raw(raw, tag_type)
    if not (0 <= x < tag_type.width and 0 <= y < tag_type.height):
        raise PictureError(f"({x}, {y}) is outside the {tag_type.width}x{tag_type.height} panel")
    stride = (tag_type.width + 7) // 8
    offset = y * stride + x // 8
    mask = 0x80 >> (x % 8)
    accent = tag_type.colours.accent
    if accent is not None and raw[tag_type.plane_bytes + offset] & mask:
        return "red" if accent == "red" else "yellow"
    return "black" if raw[offset] & mask else "white"
