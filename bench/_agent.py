"""The agent under benchmark, run in this process's event loop: started (or what stopped it raised) and
stopped again however the measurement ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from edge_agent.runtime import Agent


@contextlib.asynccontextmanager
async def running(agent: Agent, start_s: float = 60, stop_s: float = 30) -> AsyncIterator[Agent]:
    runner = asyncio.create_task(agent.run(), name="agent")
    started = asyncio.create_task(agent.started.wait())
    await asyncio.wait([runner, started], timeout=start_s, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        runner.result()  # raises what made it stop
    if not started.done():
        started.cancel()
        raise RuntimeError(f"the agent did not start within {start_s:.0f} s")
    try:
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(runner, stop_s)
