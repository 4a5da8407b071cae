"""What cloud_link needs from the rest of the agent, as small interfaces.

The agent's storage (edge_agent.storage.Database) implements `DurableStore`; cloud_link never imports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class DurableStore(Protocol):
    """A SQLite database with one group-committing writer."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a write transaction; return once it is committed and fsync'd."""
        ...

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read on the caller's thread against a consistent snapshot."""
        ...
