"""The database's figures for a diagnostics bundle: tables with row counts, pragmas, schema version, a quick
integrity check, and the sizes of the files in the data directory.

Figures only: no table is dumped, so nothing a table holds (password hashes, tokens, pickup codes) can leak
through them. Read on a read-only connection of its own, opened and closed here: the agent's shared reader
and its writer are not held, so this may run in a worker thread while the agent runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.storage.database import schema_version
from edge_agent.storage.writer import open_connection

PRAGMAS = ("page_size", "page_count", "freelist_count", "journal_mode", "user_version")


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def database_stats(db_path: Path) -> dict[str, Any]:
    """The figures of the database at `db_path`. Raises sqlite3.Error or OSError when it cannot be read."""
    conn = open_connection(db_path, readonly=True)
    try:
        tables = [
            str(r[0])
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        ]
        # Table names come from sqlite_master itself, quoted; nothing from outside is formatted in.
        counts = {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in tables}  # noqa: S608
        pragmas = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}
        version = schema_version(conn)
        integrity = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    finally:
        conn.close()
    data_dir = db_path.parent
    files = {
        p.name: _file_size(p) for p in sorted(data_dir.iterdir()) if p.is_file()
    } if data_dir.is_dir() else {}
    return {
        "path": str(db_path),
        "schema_version": version,
        "quick_check": integrity,
        "size_bytes": _file_size(db_path),
        "wal_bytes": _file_size(db_path.with_name(db_path.name + "-wal")),
        "pragmas": pragmas,
        "tables": counts,
        "data_dir_files": files,
    }
