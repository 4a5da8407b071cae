"""What the device emulators share: a line-based control socket, the port choice and the run loop.

Both the base-station and the lock-board emulator are product code (DESIGN.md section 5) that runs as its
own process: on a pty or TCP, until SIGTERM, printing where it listens and `ready`, optionally driven
through a unix-socket control protocol (one command per line, answered `ok ...` or `error ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

from firmware_bridge.emulators.pty_line import LineError, LinePort, PtyPort, TcpPort


class LineControlServer:
    """A line protocol on a unix socket for out-of-process tests and the demo."""

    # Exceptions that turn into an `error ...` answer (besides ValueError) rather than a dropped client.
    ANSWERED_ERRORS: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._client, str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = self.execute(line.decode("utf-8", "replace").strip())
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError):
            pass  # the client went away, or sent a line longer than the stream limit
        finally:
            writer.close()

    def execute(self, line: str) -> str:
        words = line.split()
        if not words:
            return "error empty command"
        answered: tuple[type[Exception], ...] = (ValueError, *self.ANSWERED_ERRORS)
        try:
            return self._execute(words[0].lower(), words[1:])
        except answered as exc:
            return f"error {exc}"

    def _execute(self, command: str, args: list[str]) -> str:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a slow command (an unplug) after answering; cancelled when the server closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def on_off(text: str) -> bool:
    """A control command's on/off word."""
    if text.lower() in ("on", "1", "true", "yes"):
        return True
    if text.lower() in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def seconds(text: str) -> float:
    """A control command's duration, 0 to 3600 s."""
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError(f"seconds must be within 0..3600, got {text!r}")
    return value


def host_port(text: str) -> tuple[str, int]:
    """argparse type of `--tcp HOST:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def rate(text: str) -> float:
    """argparse type of a per-byte or per-event rate, 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is within 0..1, got {text!r}")
    return value


def positive(text: str) -> float:
    """argparse type of a positive number."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def open_port(args: argparse.Namespace, default_pty: str) -> LinePort:
    """`--tcp HOST:PORT` or `--pty PATH` (the default path when neither is given)."""
    if args.tcp is not None:
        return TcpPort(*args.tcp, line_rate=args.line_rate)
    return PtyPort(args.pty or default_pty, line_rate=args.line_rate)


def run_emulator(
    running: Callable[[LinePort], AbstractAsyncContextManager[Any]],
    port: LinePort,
    banner: Callable[[], list[str]],
    control: LineControlServer | None,
) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code."""
    try:
        asyncio.run(_serve(running, port, banner, control))
    except LineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(
    running: Callable[[LinePort], AbstractAsyncContextManager[Any]],
    port: LinePort,
    banner: Callable[[], list[str]],
    control: LineControlServer | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running(port):
        print(port.describe(), flush=True)
        for line in banner():
            print(line, flush=True)
        if control is not None:
            await control.start()
            print(f"control {control.path}", flush=True)
        print("ready", flush=True)
        try:
            await stop.wait()
        finally:
            if control is not None:
                await control.close()
