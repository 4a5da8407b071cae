"""The event loop the agent runs on: uvloop unless `agent.event_loop = "asyncio"` asks for the standard one.

The agent is one process whose event loop carries the web server, both MQTT links, the serial links and the
relay, so that loop's own cost is paid on every request and every message. uvloop (libuv under the asyncio
API) takes about a sixth of the CPU off each scan link served (bench.kiosk's scan_link_rps), and as much
off everything else the loop does. The standard loop stays one setting away, for a platform without uvloop
or to rule the loop out while chasing a fault.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
EventLoopName = Literal["uvloop", "asyncio"]


def loop_factory(name: EventLoopName) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop `name` asks for; the standard loop (with a warning) when uvloop is not installed."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        log.warning("agent.event_loop is uvloop but uvloop is not installed here: running on asyncio's own loop")
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop 0.23.0` or `asyncio (_UnixSelectorEventLoop)`: what the start-up log line names."""
    module = type(loop).__module__.split(".")[0]
    if module == "uvloop":
        return f"uvloop {importlib.import_module('uvloop').__version__}"
    return f"asyncio ({type(loop).__name__})"


def run(main: Coroutine[Any, Any, T], name: EventLoopName) -> T:
    """`asyncio.run(main)` on the loop `name` asks for."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
