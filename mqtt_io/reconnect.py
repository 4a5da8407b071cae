"""Keeping one MQTT connection up: connect, serve it until it is lost, reconnect with full-jitter backoff.

The one reconnect loop of the agent's MQTT connections (the cloud session, the in-store device gateway, the
Wi-Fi labels station). What differs between them stays with each caller: `open_conn` makes a new connection,
connects and subscribes (and cleans up that connection itself when it fails), `serve` runs while it is up
and returns once it is lost (cleaned up too). What they share lives here once: the loop, the attempt
counter (reset by every connection that came up), the backoff and its log line, and how to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mqtt_io.driver import MqttError

C = TypeVar("C")


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)], at least base/2."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return max(base / 2, random.uniform(0, ceiling))


async def keep_connected(
    open_conn: Callable[[], Awaitable[C]],
    serve: Callable[[C], Awaitable[None]],
    *,
    backoff_min: float,
    backoff_max: float,
    what: str,
    logger: logging.Logger,
    failures: tuple[type[Exception], ...] = (MqttError,),
    stopping: asyncio.Event | None = None,
    backoff_after_loss: bool = False,
) -> None:
    """Open and serve connections until cancelled or, when given, until `stopping` is set.

    - A failure of `open_conn` that is one of `failures` is logged (`"{what} unavailable (...)"`, on the
      caller's `logger`) and retried after `backoff_delay(attempt, backoff_min, backoff_max)`; the attempt
      count grows with each failure and starts again at 0 once a connection came up. Anything else raises.
    - After `serve` returns (the connection was lost), the next connection is opened at once, or with
      `backoff_after_loss` after one backoff of the fresh count (for a remote broker that just dropped us).
    - `stopping` set: no further connection is opened and a backoff wait ends at once; returns normally.
      Cancellation propagates from wherever it lands (`open_conn`, `serve` or a wait); the caller's own
      cleanup is in those two.
    """
    stop = stopping if stopping is not None else asyncio.Event()
    attempt = 0
    while not stop.is_set():
        failure: Exception | None = None
        try:
            conn = await open_conn()
        except failures as exc:
            failure = exc
        else:
            attempt = 0
            await serve(conn)
            if not backoff_after_loss:
                continue
        if stop.is_set():
            break
        delay = backoff_delay(attempt, backoff_min, backoff_max)
        attempt += 1
        if failure is None:
            logger.info("reconnecting to the %s in %.1f s", what, delay)
        else:
            logger.warning("%s unavailable (%s); retrying in %.1f s", what, failure, delay)
        with contextlib.suppress(TimeoutError):
            # asyncio.timeout, not wait_for (gh-86296: wait_for may swallow a cancellation).
            async with asyncio.timeout(delay):
                await stop.wait()
