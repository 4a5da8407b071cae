"""Serial barcode scanners: line framing (byte vectors, garbage, round trips) and the emulator as a real peer."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from devices.scanners.serial_scanner import SerialScanner
from firmware_bridge.scanners.lines import LineDecoder

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


async def test_the_scanner_emulator_as_a_process_feeds_a_serial_scanner(tmp_path: Path) -> None:
    """`edge-agent simulate serial-scanner` on a real pty, read by the agent's SerialScanner (two real peers)."""
    link = tmp_path / "scanner0"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", "simulate", "serial-scanner", "--pty", str(link),
        "--codes", "6901234567892,036000291452", "--interval", "0.2", "--noise", "2", "--suffix", "crlf",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    got: list[str] = []
    scanner = SerialScanner("k1", str(link), _append(got), baudrate=9600)
    try:
        assert process.stdout is not None
        while (await asyncio.wait_for(process.stdout.readline(), 10)).strip() != b"ready":
            pass
        task = asyncio.create_task(scanner.run())
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < 4 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        process.terminate()
        await process.wait()
    assert got[:4] == ["6901234567892", "036000291452", "6901234567892", "036000291452"]
    assert scanner.dropped >= 1  # the noise lines


def _append(into: list[str]) -> Callable[[str], Awaitable[None]]:
    async def on_code(code: str) -> None:
        into.append(code)

    return on_code
