"""Opening the agent's SQLite database: WAL, migrations with a backup first, one writer.

The database lives at `{data_dir}/agent.db`. Before any migration runs on an existing database a
consistent copy is taken with SQLite's online backup API (`agent.db.bak-v{old}-{timestamp}`), and the
newest few copies are kept.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from edge_agent.storage.errors import MigrationError
from edge_agent.storage.migrations import LATEST_VERSION, MIGRATIONS, Migration
from edge_agent.storage.writer import SqliteWriter, open_connection

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKUPS_KEPT = 3
DB_FILENAME = "agent.db"


def schema_version(conn: sqlite3.Connection) -> int:
    db = sqlite_utils.Database(conn)
    if not db["schema_migrations"].exists():
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def backup_database(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    """Copy the live database next to itself before it is changed; keep the newest few copies."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.bak-v{version}-{stamp}")
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    backups = sorted(path.parent.glob(f"{path.name}.bak-v*"), key=lambda p: p.stat().st_mtime)
    for old in backups[:-BACKUPS_KEPT]:
        old.unlink(missing_ok=True)
    log.info("database backed up to %s before migrating from version %d", target, version)
    return target


def migrate(path: Path, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database at `path` to the newest schema; returns the version it is at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = open_connection(path)
    try:
        db = sqlite_utils.Database(conn)
        db.table("schema_migrations").create(
            {"version": int, "name": str, "applied_at": str}, pk="version", if_not_exists=True
        )
        current = schema_version(conn)
        latest = migrations[-1].version if migrations else 0
        if current > latest:
            raise MigrationError(
                f"{path}: schema version {current} is newer than this agent knows ({latest}); "
                "refusing to run an older agent on a newer database"
            )
        pending = [m for m in migrations if m.version > current]
        if not pending:
            return current
        if current > 0:
            backup_database(conn, path, current)
        for migration in pending:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise MigrationError(f"migration {migration.version} ({migration.name}) failed: {exc}") from exc
            log.info("database migrated to version %d (%s)", migration.version, migration.name)
        return pending[-1].version
    finally:
        conn.close()


class Database:
    """The agent's database: one writer thread with group commit, and a reader for the event loop.

    Reads run on the event loop's thread against their own WAL snapshot; keep them short (indexed,
    bounded by LIMIT). Writes go through `write()`, which returns once the change is on disk.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DB_FILENAME
        self.version = migrate(self.path)
        if self.version != LATEST_VERSION:
            raise MigrationError(f"schema at version {self.version}, expected {LATEST_VERSION}")
        self.writer = SqliteWriter(self.path)
        self._reader = open_connection(self.path)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.run(fn)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._reader)

    def close(self) -> None:
        self.writer.close()
        self._reader.close()
