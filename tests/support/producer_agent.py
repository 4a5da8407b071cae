"""Runs the real agent with producers that print every event whose publish() returned.

Usage: python -m tests.support.producer_agent CONFIG PRODUCERS
Each line on stdout is `seq event_id`, written only after `await agent.publish()` returned, so the
parent knows exactly which events the agent promised to keep.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from edge_agent.config import load_config
from edge_agent.logging_setup import setup_logging
from edge_agent.runtime import Agent


async def produce(agent: Agent, producers: int) -> None:
    out = sys.stdout

    async def one(k: int) -> None:
        i = 0
        while True:
            i += 1
            event = await agent.publish("order.test", {"producer": k, "i": i})  # critical class, no payload schema
            out.write(f"{event.seq} {event.event_id}\n")
            out.flush()

    await asyncio.gather(*(one(k) for k in range(producers)))


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    producers = int(sys.argv[2])
    setup_logging("WARNING")
    agent = Agent(config, extra_tasks=(lambda a: produce(a, producers),))
    asyncio.run(agent.run())


if __name__ == "__main__":
    main()
