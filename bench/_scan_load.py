"""HTTP load generator for the scan links, in a process of its own (not the agent's, not the bench's loop).

python -m bench._scan_load PORT CODES_FILE MODE SECONDS CONNECTIONS [RATE]

A small raw asyncio HTTP/1.1 client: keep-alive connections on loopback, each request `GET /s/{code}` with a
phone's User-Agent (WeChat, iOS, Android in turn, so every request is a recorded scan), the answer read to
its end (status line, headers, Content-Length body). MODE `closed`: every connection sends its next request
as soon as the answer came (the most the agent serves). MODE `open`: requests are due at RATE per second
whatever the answers do, and latency counts from when a request was due (no coordinated omission). Prints
one JSON line: counts by status and latency percentiles in ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Version/17.4 Mobile/15E148 "
    "Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile "
    "Safari/537.36",
)


def percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status


async def run(
    port: int, codes: list[str], mode: str, seconds: float, connections: int, rate: float
) -> dict[str, object]:
    requests = [
        (f"GET /s/{code} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {USER_AGENTS[i % len(USER_AGENTS)]}\r\n"
         "Accept-Language: zh-CN,zh;q=0.9\r\n\r\n").encode()
        for i, code in enumerate(codes)
    ]
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    errors = 0
    started = time.monotonic()
    deadline = started + seconds
    sent = 0

    async def closed_worker(n: int) -> None:
        nonlocal errors, sent
        conn = Connection(port)
        i = n
        while time.monotonic() < deadline:
            raw = requests[i % len(requests)]
            i += connections
            t0 = time.monotonic()
            try:
                status = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn = Connection(port)
                continue
            latencies.append((time.monotonic() - t0) * 1000)
            statuses[status] += 1

    async def open_worker(n: int) -> None:
        nonlocal errors, sent
        conn = Connection(port)
        while True:
            index = sent
            due = started + index / rate
            if due >= deadline:
                return
            sent += 1
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                status = await conn.request(requests[index % len(requests)])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn = Connection(port)
                continue
            latencies.append((time.monotonic() - due) * 1000)
            statuses[status] += 1

    worker = closed_worker if mode == "closed" else open_worker
    await asyncio.gather(*(worker(n) for n in range(connections)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": round(ordered[-1], 2) if ordered else None,
    }


def main() -> None:
    port, codes_file, mode, seconds, connections = sys.argv[1:6]
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    codes = Path(codes_file).read_text().split()
    result = asyncio.run(run(int(port), codes, mode, float(seconds), int(connections), rate))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
