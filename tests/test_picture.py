"""firmware_bridge.picture: the packed picture format, its hash and encodings (docs/base-station-protocol.md)."""

from __future__ import annotations

import random
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.picture import (
    EncodedPicture,
    Encoding,
    PictureError,
    decode_picture,
    encode_picture,
    picture_hash,
    pixel,
    unpack_plane,
    xor_bytes,
)
from firmware_bridge.tag_types import TAG_TYPES, TAG_TYPES_BY_NAME, Colours, TagType

# A 10x3 black/white/red picture: rows of 10 pixels take 2 bytes (6 padding bits), 6 bytes per plane.
TINY = TagType(0xF0, "test-10x3-bwr", 0.5, 10, 3, Colours.BWR)
#   x:   0123456789
#   y0:  K........K      K = black, R = red
#   y1:  .R........
#   y2:  ........K.
TINY_RAW = bytes.fromhex("804000000080 000040000000")
TINY_HASH = bytes.fromhex("26b10386c69db38d")
# A valid zlib stream of TINY_RAW (any deflate stream of the same bytes decodes the same, whatever zlib made it).
TINY_ZLIB = bytes.fromhex("78da6b706060606860600051000d4c0181")
# TINY_RAW with only black (0,0) and (9,0): the base of the delta vector below, and that delta.
TINY_BASE = bytes.fromhex("804000000000 000000000000")
TINY_BASE_HASH = bytes.fromhex("ad2fd01e6014f6c5")
TINY_DELTA = bytes.fromhex("78da6360008206060607200500048c00c1")  # zlib of 000000000080 000040000000

T29 = TAG_TYPES_BY_NAME["2.9-bwr"]


def sparse_picture(tag_type: TagType, rng: random.Random, ink: float = 0.03) -> bytes:
    """A label-like picture: mostly white, a few runs of ink (so that zlib has something to do)."""
    raw = bytearray(tag_type.raw_bytes)
    for _ in range(int(len(raw) * ink)):
        start = rng.randrange(len(raw))
        for i in range(start, min(len(raw), start + rng.randrange(1, 12))):
            raw[i] = rng.randrange(256)
    return bytes(raw)


# -- vectors ------------------------------------------------------------------------------------------------


def test_tiny_picture_pixels() -> None:
    assert len(TINY_RAW) == TINY.raw_bytes == 12
    assert pixel(TINY_RAW, TINY, 0, 0) == "black"
    assert pixel(TINY_RAW, TINY, 9, 0) == "black"
    assert pixel(TINY_RAW, TINY, 1, 1) == "red"
    assert pixel(TINY_RAW, TINY, 8, 2) == "black"
    assert pixel(TINY_RAW, TINY, 5, 1) == "white"
    assert unpack_plane(TINY_RAW, TINY, 0) == [
        bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        bytes(10),
        bytes([0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
    ]
    assert unpack_plane(TINY_RAW, TINY, 1)[1] == bytes([0, 1, 0, 0, 0, 0, 0, 0, 0, 0])


def test_accent_wins_over_black_and_yellow_types() -> None:
    bwy = TagType(0xF1, "test-8x1-bwy", 0.1, 8, 1, Colours.BWY)
    raw = bytes([0b1100_0000, 0b0100_0001])
    assert [pixel(raw, bwy, x, 0) for x in (0, 1, 7, 3)] == ["black", "yellow", "yellow", "white"]


def test_bw_picture_has_one_plane() -> None:
    bw = TAG_TYPES_BY_NAME["1.54-bw"]
    raw = bytearray(bw.raw_bytes)
    raw[0] = 0x01
    assert bw.raw_bytes == 25 * 200
    assert pixel(bytes(raw), bw, 7, 0) == "black"
    with pytest.raises(PictureError):
        unpack_plane(bytes(raw), bw, 1)


def test_hash_vector() -> None:
    assert picture_hash(TINY_RAW) == TINY_HASH
    assert picture_hash(TINY_BASE) == TINY_BASE_HASH
    assert len(picture_hash(b"")) == 8


def test_decode_vectors() -> None:
    assert decode_picture(0, TINY_RAW, 12, None) == TINY_RAW
    assert decode_picture(1, TINY_ZLIB, 12, None) == TINY_RAW
    assert decode_picture(2, TINY_DELTA, 12, TINY_BASE) == TINY_RAW
    assert decode_picture(2, TINY_DELTA, 12, TINY_BASE, base_hash=TINY_BASE_HASH) == TINY_RAW


def test_tiny_picture_stays_raw() -> None:
    # 12 bytes do not compress: RAW is the smallest.
    enc = encode_picture(TINY_RAW, TINY_BASE)
    assert enc == EncodedPicture(Encoding.RAW, TINY_RAW, TINY_HASH, None, 12)


def test_xor() -> None:
    assert xor_bytes(b"\x0f\xf0\x00", b"\xff\xff\x01") == b"\xf0\x0f\x01"
    assert xor_bytes(b"", b"") == b""
    with pytest.raises(PictureError):
        xor_bytes(b"\x00", b"")


# -- encodings ----------------------------------------------------------------------------------------------


def test_blank_picture_compresses() -> None:
    enc = encode_picture(bytes(T29.raw_bytes))
    assert enc.kind is Encoding.ZLIB
    assert len(enc.data) < 100
    assert enc.raw_len == T29.raw_bytes == 9472
    assert enc.hash == picture_hash(bytes(T29.raw_bytes))
    assert decode_picture(enc.kind, enc.data, enc.raw_len, None) == bytes(T29.raw_bytes)


def test_delta_of_one_pixel_change_is_tiny() -> None:
    rng = random.Random(7)
    base = sparse_picture(T29, rng)
    changed = bytearray(base)
    changed[T29.plane_bytes + 1234] ^= 0x10  # one red pixel more
    enc = encode_picture(bytes(changed), base)
    assert enc.kind is Encoding.DELTA_ZLIB
    assert enc.base_hash == picture_hash(base)
    assert len(enc.data) < 64
    assert len(enc.data) < len(zlib.compress(bytes(changed))) // 10
    assert decode_picture(enc.kind, enc.data, enc.raw_len, base, base_hash=enc.base_hash) == bytes(changed)


def test_unchanged_picture_still_encodes() -> None:
    base = sparse_picture(T29, random.Random(1))
    enc = encode_picture(base, base)
    assert enc.kind is Encoding.DELTA_ZLIB
    assert decode_picture(enc.kind, enc.data, enc.raw_len, base) == base


def test_base_of_other_length_is_ignored() -> None:
    raw = bytes(T29.raw_bytes)
    enc = encode_picture(raw, bytes(100))
    assert enc.kind is Encoding.ZLIB
    assert enc.base_hash is None


def test_noise_stays_raw() -> None:
    noise = random.Random(3).randbytes(T29.raw_bytes)
    enc = encode_picture(noise, random.Random(4).randbytes(T29.raw_bytes))
    assert enc.kind is Encoding.RAW
    assert enc.data == noise


@settings(max_examples=60, deadline=None)
@given(
    code=st.sampled_from(sorted(TAG_TYPES)),
    seed=st.integers(0, 2**32),
    ink=st.sampled_from([0.0, 0.01, 0.05, 0.3, 1.0]),
    with_base=st.booleans(),
)
def test_round_trip(code: int, seed: int, ink: float, with_base: bool) -> None:
    tag_type = TAG_TYPES[code]
    rng = random.Random(seed)
    raw = sparse_picture(tag_type, rng, ink) if ink < 1 else rng.randbytes(tag_type.raw_bytes)
    base = sparse_picture(tag_type, rng, ink) if with_base else None
    enc = encode_picture(raw, base)
    assert enc.raw_len == len(raw)
    assert enc.hash == picture_hash(raw)
    assert (enc.base_hash is not None) == (enc.kind is Encoding.DELTA_ZLIB)
    assert len(enc.data) <= len(raw)
    assert decode_picture(enc.kind, enc.data, enc.raw_len, base, base_hash=enc.base_hash) == raw


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), base=st.binary(max_size=64))
def test_round_trip_any_bytes(data: bytes, base: bytes) -> None:
    enc = encode_picture(data, base)
    assert decode_picture(enc.kind, enc.data, len(data), base) == data


# -- bad input ----------------------------------------------------------------------------------------------


def assert_decodes_or_refuses(kind: int, data: bytes, expected_len: int, base: bytes | None) -> None:
    try:
        out = decode_picture(kind, data, expected_len, base)
    except PictureError:
        return
    assert len(out) == expected_len


@settings(max_examples=300, deadline=None)
@given(
    kind=st.integers(-5, 300),
    data=st.binary(max_size=200),
    expected_len=st.integers(-2, 300),
    base=st.none() | st.binary(max_size=300),
)
def test_garbage_raises_picture_error_only(kind: int, data: bytes, expected_len: int, base: bytes | None) -> None:
    assert_decodes_or_refuses(kind, data, expected_len, base)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_mangled_zlib_raises_picture_error_only(seed: int, cut: int, flip: int, bit: int) -> None:
    rng = random.Random(seed)
    base = sparse_picture(T29, rng)
    raw = sparse_picture(T29, rng)
    for kind, data in ((1, zlib.compress(raw)), (2, zlib.compress(xor_bytes(raw, base)))):
        truncated = data[: cut % len(data)]
        with pytest.raises(PictureError):
            decode_picture(kind, truncated, len(raw), base)
        flipped = bytearray(data)
        flipped[flip % len(data)] ^= 1 << bit
        assert_decodes_or_refuses(kind, bytes(flipped), len(raw), base)
        assert_decodes_or_refuses(kind, data + b"\x00", len(raw), base)


@pytest.mark.parametrize(
    ("kind", "data", "expected_len", "base", "message"),
    [
        (3, TINY_RAW, 12, None, "unknown picture encoding 3"),
        (0, TINY_RAW, 13, None, "raw picture of 12 bytes, expected 13"),
        (1, b"not zlib", 12, None, "corrupt zlib"),
        (1, TINY_ZLIB[:-3], 12, None, "truncated"),
        (1, TINY_ZLIB + b"xx", 12, None, "stray bytes"),
        (1, TINY_ZLIB, 11, None, "inflates beyond"),
        (1, TINY_ZLIB, 13, None, "inflates to 12 bytes, expected 13"),
        (2, TINY_DELTA, 12, None, "without a base"),
        (2, TINY_DELTA, 12, TINY_BASE[:-1], "delta base of 11 bytes"),
    ],
)
def test_refusals_say_why(kind: int, data: bytes, expected_len: int, base: bytes | None, message: str) -> None:
    with pytest.raises(PictureError, match=message):
        decode_picture(kind, data, expected_len, base)


def test_delta_against_wrong_base_is_refused() -> None:
    with pytest.raises(PictureError, match="delta against picture ad2fd01e6014f6c5"):
        decode_picture(2, TINY_DELTA, 12, TINY_RAW, base_hash=TINY_BASE_HASH)


def test_zip_bomb_is_refused_without_inflating_it() -> None:
    bomb = zlib.compress(bytes(200_000_000), 9)  # 200 MB of zeros in ~200 kB
    started = time.perf_counter()
    with pytest.raises(PictureError, match="inflates beyond"):
        decode_picture(1, bomb, T29.raw_bytes, None)
    with pytest.raises(PictureError, match="inflates beyond"):
        decode_picture(2, bomb, T29.raw_bytes, bytes(T29.raw_bytes))
    assert time.perf_counter() - started < 0.5


def test_helpers_check_their_input() -> None:
    with pytest.raises(PictureError, match="12 bytes"):
        pixel(TINY_RAW, T29, 0, 0)
    with pytest.raises(PictureError, match="outside"):
        pixel(TINY_RAW, TINY, 10, 0)
    with pytest.raises(PictureError, match="outside"):
        pixel(TINY_RAW, TINY, 0, -1)
