"""Messages the in-store broker dropped before the agent saw them: counted by the broker, reported upstream.

The agent's session on the in-store broker holds what devices publish while the agent is away, up to the
broker's limits (config/mosquitto/edge-agent.conf). Past them Mosquitto drops messages and counts them in
`$SYS/broker/publish/messages/dropped` (all clients together, since the broker started). The agent reads
that counter and reports every increase as `alarm.broker_dropped`, so a loss at the broker is never silent.

The last count reported is kept in the database (the `counters` table), so drops while the agent was down are
reported once it is back. A count lower than the last one means the broker restarted (its counters start at
0 again): all of it is new. What the broker dropped after the agent's last reading and before such a restart
is gone with the broker's counter; the broker saves queued messages across a restart, not its counters.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from cloud_link.ports import DurableStore

log = logging.getLogger(__name__)

SYS_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"
ALARM = "alarm.broker_dropped"
COUNTER = "broker_dropped"

Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


def parse_count(payload: bytes) -> int | None:
    """The broker's counter, or None for anything that is not a plain non-negative integer."""
    text = payload[:32].decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class BrokerDrops:
    def __init__(self, publish: Publish, store: DurableStore | None = None) -> None:
        self._publish = publish
        self._store = store
        self._last: int | None = None
        self._loaded = False
        self.reported = 0

    def _load(self) -> int | None:
        if not self._loaded and self._store is not None:
            row = self._store.read(
                lambda c: c.execute("SELECT value FROM counters WHERE name = ?", (COUNTER,)).fetchone()
            )
            self._last = None if row is None else int(row[0])
        self._loaded = True
        return self._last

    async def observed(self, total: int) -> int:
        """The broker says it dropped `total` messages since it started; returns how many are new (reported)."""
        last = self._load()
        if last is None:
            # The first reading ever: what the broker dropped before this agent knew it is not ours to date.
            new = 0
        elif total < last:
            new = total  # the broker restarted since the last reading
        else:
            new = total - last
        if new:
            await self._publish(ALARM, {"count": new, "broker_total": total})
            self.reported += new
            log.error("the in-store broker dropped %d message(s) before the agent received them (%d since it "
                      "started): its queue limits were reached", new, total)
        if total != last:
            await self._save(total)
        return new

    async def _save(self, total: int) -> None:
        self._last = total
        if self._store is None:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (COUNTER, total),
            )

        await self._store.write(job)
