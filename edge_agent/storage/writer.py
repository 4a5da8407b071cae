"""The one SQLite writer, with group commit.

Every write in the agent runs here, on one thread with one connection in WAL mode and
`synchronous=FULL`. Jobs queued while a commit is in progress are run together in the next
transaction, so concurrent producers share a single fsync (group commit) instead of paying one each.
Each job runs inside its own SAVEPOINT: a job that raises is rolled back alone and its caller gets
the exception, the rest of the batch still commits.

A job's future is resolved only after COMMIT returned, i.e. after the data is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.storage.errors import StorageClosedError, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many jobs one transaction takes at most. Large enough to amortise the fsync, small enough
# that a burst does not hold the write lock (and the callers' latency) for long.
MAX_BATCH = 2000


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class WriterStats:
    """Counters read by the metrics endpoint and the benchmarks."""

    commits: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    failed_commits: int = 0
    last_commit_ms: float = 0.0
    largest_batch: int = 0


_STOP = object()


def open_connection(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every connection of ours uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsync'd at every commit, so a commit that returned survives power loss.
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class SqliteWriter:
    """Serialises all writes onto one thread and commits them in groups."""

    def __init__(self, path: Path, *, name: str = "sqlite-writer") -> None:
        self.path = path
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn = open_connection(path)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `fn(conn)` for the next group commit; the future resolves after COMMIT."""
        if self._closed:
            raise StorageClosedError("the database writer is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return future

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in the writer's next transaction and wait until it is durable."""
        return await self.submit(fn)

    def close(self, timeout: float = 10.0) -> None:
        """Finish every queued job, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("database writer did not stop within %.1f s", timeout)
            return
        self._conn.close()

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch: list[_Job] = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Job]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn)
                except Exception as exc:  # a failing job is rolled back alone and reported to its caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # The commit itself failed (disk full, I/O error): nothing of this batch is durable.
            log.error("database commit of %d jobs failed: %s", len(batch), exc)
            self.stats.failed_commits += 1
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback after a failed commit failed too")
            error = StorageError(f"database commit failed: {exc}")
            outcomes = [(job, None, error) for job in batch]
        self.stats.commits += 1
        self.stats.jobs += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.last_commit_ms = (time.perf_counter() - started) * 1000.0
        # One wake-up per loop and batch, not one per job: the self-pipe write is not free.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            if outcome[2] is not None:
                self.stats.failed_jobs += 1
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                log.warning("event loop closed before %d database results could be delivered", len(items))


def _resolve(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in items:
        if job.future.done():  # the caller gave up waiting (cancelled); the write happened anyway
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
