"""Rendering off the event loop: a process pool, so bulk re-renders use every core and never block.

A request is plain data (picklable); the worker renders the label and returns the packed planes and
their hash. Requests are sent in batches to amortise the inter-process hop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from devices.labels.pages import TaskPage, render_page
from devices.labels.render import LabelContent, render_label
from firmware_bridge.tag_types import tag_type

BATCH = 16


@dataclass(frozen=True)
class RenderRequest:
    """A price label (`content`), or a task page (`page`, devices.labels.pages) which takes precedence."""

    content: LabelContent | None
    type_code: int
    rotation: int
    scan_url: str | None
    template: str = "price"
    page: TaskPage | None = None


@dataclass(frozen=True)
class RenderResult:
    raw: bytes
    hash: bytes


def render_one(request: RenderRequest) -> RenderResult:
    if request.page is not None:
        page = render_page(request.page, tag_type(request.type_code), rotation=request.rotation)
        return RenderResult(page.raw, page.hash)
    if request.content is None:
        raise ValueError("a render request needs content or a page")
    label = render_label(
        request.content,
        tag_type(request.type_code),
        rotation=request.rotation,
        scan_url=request.scan_url,
        template=request.template,
    )
    return RenderResult(label.raw, label.hash)


def render_batch(requests: list[RenderRequest]) -> list[RenderResult]:
    return [render_one(r) for r in requests]


class RenderPool:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, os.cpu_count() or 1)
        # forkserver: workers start from a clean interpreter, not a copy of the agent's threads.
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))

    async def warm_up(self) -> None:
        """Start the forkserver and every worker now, from a thread. The executor starts them on demand, in
        the submitting thread: left to the first bulk update, that is the event loop, stalled for as long as
        the processes take to start."""
        await asyncio.to_thread(self._start_workers)

    def _start_workers(self) -> None:
        for future in [self._pool.submit(os.getpid) for _ in range(self.workers)]:
            future.result()

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        loop = asyncio.get_running_loop()
        batches = [requests[i : i + BATCH] for i in range(0, len(requests), BATCH)]
        parts = await asyncio.gather(*(loop.run_in_executor(self._pool, render_batch, b) for b in batches))
        return [r for part in parts for r in part]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
