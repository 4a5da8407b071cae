"""Every request body is bounded before it is parsed (edge_agent/web/body_limit.py), against the running agent over
real sockets: a declared Content-Length over the limit is refused unread, a chunked body is cut off at the limit,
so neither takes memory with it (bench.hostile measures the agent's peak memory under such streams).

Found by review: a 200 MB chunked JSON body streamed to a public route took the agent from 51 MB to 852 MB, and
the scan links' order form checked only Content-Length, so a chunked 200 MiB form was read whole."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from edge_agent.web.body_limit import DEFAULT_LIMIT, limit_for
from tests.conftest import agent_config, running_agent
from tests.test_scan_links import TAG, seed

STREAMED = 64 * 1024 * 1024  # what the client tries to send: far more than any limit, far less than the agent's RAM
CHUNK = 64 * 1024


async def stream_chunked(port: int, path: str, content_type: str = "application/json") -> tuple[str, int]:
    """POST an endless chunked body until the server answers or closes; (status line, bytes sent by then)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    sent = 0
    chunk = f"{CHUNK:x}\r\n".encode() + b"[" * CHUNK + b"\r\n"
    answer = asyncio.ensure_future(reader.readline())
    try:
        while sent < STREAMED and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += CHUNK
        status = (await asyncio.wait_for(answer, 10)).decode().strip()
    except (ConnectionError, OSError):
        status = (await asyncio.wait_for(answer, 10)).decode().strip() if not answer.cancelled() else ""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return status, sent


async def post_declared(port: int, path: str, length: str) -> tuple[str, bytes]:
    """POST headers declaring `length` bytes and send none; (status line, what followed it) within 5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        rest = await asyncio.wait_for(reader.read(4096), 5)
        return status, rest
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_oversized_and_endless_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "data", None)
    async with running_agent(config) as agent:
        port = agent.web_port
        assert port is not None
        # A declared length over the limit: 413 at once, without waiting for the body.
        for path in ("/api/auth/login", "/locker/A/api/collect", "/s/abcdefgh/order", "/api/users"):
            status, body = await post_declared(port, path, str(200 * 1024 * 1024))
            assert status.startswith("HTTP/1.1 413"), (path, status)
            assert b'"too_large"' in body
        status, _ = await post_declared(port, "/api/auth/login", "12x")
        assert status.startswith(("HTTP/1.1 400", "HTTP/1.1 413")), status
        # Chunked, without a length: cut off at the route's limit, on sign-in and on a real tag's order form
        # (routes that read their body; an unknown path answers 404 without reading any).
        codes = await seed(agent)
        for path in ("/api/auth/login", f"/s/{codes[TAG]}/order"):
            status, sent = await stream_chunked(port, path)
            assert status.startswith("HTTP/1.1 413"), (path, status)
            assert sent < 8 * 1024 * 1024, f"{path}: the agent read {sent} bytes before refusing"
        # The agent still answers.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/healthz")).status_code in (200, 503)


async def test_forty_streams_at_once_are_each_cut_off(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "data", None)
    async with running_agent(config) as agent:
        assert agent.web_port is not None
        results = await asyncio.gather(*(stream_chunked(agent.web_port, "/api/auth/login") for _ in range(40)))
        assert all(status.startswith("HTTP/1.1 413") for status, _ in results), results[:3]


def test_limits_by_route() -> None:
    assert limit_for("/api/catalog/import") >= 8 * 1024 * 1024  # the CSV imports' own 8 MiB
    assert limit_for("/s/abc/order") == 4 * 1024
    assert limit_for("/locker/A/api/collect") == limit_for("/api/auth/login") == 16 * 1024
    assert limit_for("/api/users") == DEFAULT_LIMIT
