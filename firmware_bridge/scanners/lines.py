"""Line framing for serial barcode scanners (sans-IO).

A serial scanner (Honeywell, Zebra, Newland, Datalogic in "serial/COM" mode) sends each code it reads as
ASCII text ended by CR, LF or CR LF (the usual factory suffix; some send a prefix/suffix we do not use).
`LineDecoder.feed(bytes)` yields the codes, and never lets the line make it misbehave:
- a line longer than `max_len` is dropped whole (up to its terminator): it is noise or a runaway sender;
- a line with bytes that are not printable ASCII (line noise, a wrong baud rate) is dropped whole;
- empty lines (the LF of a CR LF, a lone terminator) are ignored;
- the buffer never holds more than `max_len` bytes.
Drops are counted in `dropped` so the owner can report bad input.
"""

from __future__ import annotations

from collections.abc import Iterator

TERMINATORS = b"\r\n"
DEFAULT_MAX_LEN = 256


class LineDecoder:
    def __init__(self, max_len: int = DEFAULT_MAX_LEN) -> None:
        self.max_len = max_len
        self._buffer = bytearray()
        self._overflow = False  # inside a line that is already too long: skip to its end
        self.dropped = 0

    def feed(self, data: bytes) -> Iterator[str]:
        for byte in data:
            if byte in TERMINATORS:
                line = self._end_line()
                if line is not None:
                    yield line
            elif self._overflow:
                continue
            elif len(self._buffer) >= self.max_len:
                self._buffer.clear()
                self._overflow = True
            else:
                self._buffer.append(byte)

    def _end_line(self) -> str | None:
        if self._overflow:
            self._overflow = False
            self.dropped += 1
            return None
        if not self._buffer:
            return None
        raw = bytes(self._buffer)
        self._buffer.clear()
        if not all(0x20 <= b < 0x7F for b in raw):
            self.dropped += 1
            return None
        text = raw.decode("ascii").strip()
        return text or None
