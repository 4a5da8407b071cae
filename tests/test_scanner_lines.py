"""Line framing of serial barcode scanners (firmware_bridge.scanner_lines): byte vectors, garbage, round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.scanner_lines import LineDecoder

CODES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
ENDINGS = st.sampled_from([b"\r", b"\n", b"\r\n"])


def decode(*chunks: bytes, max_len: int = 256) -> tuple[list[str], int]:
    decoder = LineDecoder(max_len)
    out = [code for chunk in chunks for code in decoder.feed(chunk)]
    return out, decoder.dropped


def test_vectors() -> None:
    assert decode(b"6901234567892\r\n") == (["6901234567892"], 0)
    assert decode(b"6901234567892\r") == (["6901234567892"], 0)
    assert decode(b"6901234567892\n036000291452\n") == (["6901234567892", "036000291452"], 0)
    assert decode(b"69012", b"34567892", b"\r", b"\n") == (["6901234567892"], 0)
    assert decode(b"\r\n\r\n\n") == ([], 0)
    assert decode(b"  A-1 \r\n") == (["A-1"], 0)
    assert decode(b"no terminator yet") == ([], 0)


def test_garbage_and_long_lines_are_dropped_whole() -> None:
    assert decode(b"\x00\xff12\r\nOK\r\n") == (["OK"], 1)
    assert decode(b"9" * 300 + b"\r\nOK\n") == (["OK"], 1)
    assert decode(b"9" * 10, max_len=10) == ([], 0)
    assert decode(b"9" * 10 + b"\n", max_len=10) == (["9" * 10], 0)
    assert decode(b"9" * 11 + b"\n", max_len=10) == ([], 1)
    assert decode("条码\n".encode()) == ([], 1)


@given(st.lists(st.tuples(CODES, ENDINGS), max_size=20), st.integers(1, 7))
def test_codes_survive_any_chunking(lines: list[tuple[str, bytes]], step: int) -> None:
    stream = b"".join(code.encode() + end for code, end in lines)
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    assert decode(*chunks) == ([code for code, _ in lines], 0)


@given(st.binary(max_size=2000), CODES)
def test_garbage_never_breaks_the_next_line(garbage: bytes, code: str) -> None:
    decoder = LineDecoder(64)
    list(decoder.feed(garbage))
    assert len(decoder._buffer) <= 64
    # Whatever the garbage left half-read ends at the first terminator; the code after it comes through.
    assert list(decoder.feed(b"\n" + code.encode() + b"\r\n"))[-1:] == [code]
