"""Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999): frames contain no 0x00, so a 0x00
delimits them and a receiver resynchronises at the next 0x00 after any garbage.

Overhead: at most one byte per 254 bytes of data, plus one.
"""

from __future__ import annotations


class CobsError(ValueError):
    pass


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    idx = 0
    n = len(data)
    while True:
        # Find the next zero (or the 254-byte block boundary).
        end = data.find(b"\x00", idx, idx + 254)
        if end < 0:
            end = min(idx + 254, n)
            out.append(end - idx + 1)
            out += data[idx:end]
            if end == n:
                return bytes(out)
            idx = end
        else:
            out.append(end - idx + 1)
            out += data[idx:end]
            idx = end + 1
            if idx == n:
                out.append(1)
                return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    idx = 0
    n = len(data)
    while idx < n:
        code = data[idx]
        if code == 0:
            raise CobsError("zero byte inside a COBS frame")
        end = idx + code
        if end > n:
            raise CobsError("COBS block runs past the end of the frame")
        block = data[idx + 1 : end]
        if b"\x00" in block:
            raise CobsError("zero byte inside a COBS frame")
        out += block
        idx = end
        if code < 0xFF and idx < n:
            out.append(0)
    return bytes(out)
