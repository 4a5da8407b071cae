"""A TCP proxy in front of a real broker, to inject faults: a broker that only speaks MQTT 3.1.1,
and a network that goes silent (packets vanish, the TCP connection stays up)."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.broker import free_port


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, reject_mqtt5: bool = False) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.reject_mqtt5 = reject_mqtt5
        self.blackhole = False
        # Goes silent once the broker's first answer (CONNACK) is through: a broker that takes the connection
        # and then never answers (no SUBACK, no PINGRESP).
        self.silent_after_connack = False
        self.rejected_v5 = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = await reader.read(4096)
        if not first:
            writer.close()
            return
        # CONNECT: fixed header, remaining length, then "\x00\x04MQTT" and the protocol level byte.
        idx = first.find(b"MQTT")
        level = first[idx + 4] if idx >= 0 and len(first) > idx + 4 else None
        if self.reject_mqtt5 and level == 5:
            self.rejected_v5 += 1
            # What a 3.1.1-only broker answers: CONNACK, return code 1 (unacceptable protocol version).
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        up_writer.write(first)
        t1 = asyncio.create_task(self._pipe(reader, up_writer))
        t2 = asyncio.create_task(self._pipe(up_reader, writer, mute_after_first=self.silent_after_connack))
        self._tasks |= {t1, t2}
        await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        for t in (t1, t2):
            t.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, mute_after_first: bool = False
    ) -> None:
        while True:
            data = await src.read(65536)
            if not data:
                return
            if self.blackhole:
                continue  # swallowed: the peer's TCP stays up but nothing arrives
            dst.write(data)
            await dst.drain()
            if mute_after_first:
                self.blackhole = True
