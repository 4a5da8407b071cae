"""SQLite storage: WAL, numbered migrations with a stored version, backup before migrating, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge_agent.storage import Database, MigrationError, migrate
from edge_agent.storage.migrations import MIGRATIONS, Migration


def test_fresh_database_is_migrated_in_wal_mode(tmp_path: Path) -> None:
    db = Database(tmp_path)
    assert db.version == MIGRATIONS[-1].version
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]
    db.close()
    # No backup of a database that had nothing in it.
    assert not list(tmp_path.glob("agent.db.bak-*"))


def test_backup_is_taken_before_migrating_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE counters SET value = 41 WHERE name = 'boot'")
    conn.commit()
    conn.close()
    extra = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "test column", ("ALTER TABLE outbox ADD COLUMN note TEXT",)))
    assert migrate(path, extra) == extra[-1].version
    backups = list(tmp_path.glob(f"agent.db.bak-v{MIGRATIONS[-1].version}-*"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert old.execute("SELECT value FROM counters WHERE name='boot'").fetchone()[0] == 41
    assert "note" not in [r[1] for r in old.execute("PRAGMA table_info(outbox)")]


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    migrate(path)
    broken = (*MIGRATIONS, Migration(99, "broken", ("CREATE TABLE fine(x)", "THIS IS NOT SQL")))
    with pytest.raises(MigrationError, match="migration 99"):
        migrate(path, broken)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == MIGRATIONS[-1].version
    assert conn.execute("SELECT name FROM sqlite_master WHERE name='fine'").fetchone() is None


def test_an_older_agent_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    newer = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "future", ("CREATE TABLE future(x)",)))
    migrate(path, newer)
    with pytest.raises(MigrationError, match="newer than this agent knows"):
        migrate(path)


async def test_group_commit_and_failure_isolation(tmp_path: Path) -> None:
    db = Database(tmp_path)
    await db.write(lambda c: c.execute("CREATE TABLE t(x INTEGER NOT NULL)"))
    commits_before = db.writer.stats.commits

    def insert(x: int | None):
        return lambda c: c.execute("INSERT INTO t(x) VALUES (?)", (x,)).lastrowid

    jobs = [db.write(insert(i if i != 50 else None)) for i in range(500)]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == 1 and isinstance(failures[0], sqlite3.IntegrityError)
    count = db.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    assert count == 499, "the failing job was rolled back alone"
    assert db.writer.stats.commits - commits_before < 100
    db.close()
