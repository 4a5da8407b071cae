"""Numbered schema migrations.

Each migration is applied once, in order, inside one transaction together with the row recording it
in `schema_migrations`. Never edit a migration that has shipped: add the next number instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "counters, outbox, device state, commands",
        (
            # Monotonic counters: the boot counter and the device-state revision, updated in the
            # same transaction as the rows they count, so a crash can never leave one reused.
            """CREATE TABLE counters (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )""",
            "INSERT INTO counters(name, value) VALUES ('boot', 0), ('state_rev', 0)",
            # One row: the last event sequence number handed out, and what the outbox holds. A single
            # UPDATE ... RETURNING per event keeps the hot path to one statement besides the insert.
            """CREATE TABLE outbox_stats (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq INTEGER NOT NULL,
                events INTEGER NOT NULL,
                bytes INTEGER NOT NULL
            )""",
            "INSERT INTO outbox_stats(id, seq, events, bytes) VALUES (1, 0, 0, 0)",
            # Events waiting for the cloud's PUBACK, in sequence order.
            """CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY,
                event_id TEXT NOT NULL,
                type TEXT NOT NULL,
                cls TEXT NOT NULL,
                topic TEXT NOT NULL,
                body BLOB NOT NULL,
                size INTEGER NOT NULL,
                created_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX outbox_by_class ON outbox(cls, seq)",
            # Latest state per device; `sent_rev` tells whether the cloud has acknowledged it.
            """CREATE TABLE device_state (
                device_id TEXT PRIMARY KEY,
                rev INTEGER NOT NULL,
                topic TEXT NOT NULL,
                body BLOB NOT NULL,
                size INTEGER NOT NULL,
                sent_rev INTEGER NOT NULL DEFAULT 0,
                updated_ms INTEGER NOT NULL
            )""",
            # Cloud commands seen, for at-most-once execution and for answering repeats.
            """CREATE TABLE commands (
                command_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                received_ms INTEGER NOT NULL,
                status TEXT NOT NULL,
                result TEXT
            )""",
            "CREATE INDEX commands_by_age ON commands(received_ms)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
