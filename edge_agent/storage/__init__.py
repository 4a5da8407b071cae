"""SQLite storage: WAL mode, numbered migrations, one writer with group commit."""

from edge_agent.storage.database import Database, migrate
from edge_agent.storage.errors import MigrationError, StorageClosedError, StorageError

__all__ = ["Database", "MigrationError", "StorageClosedError", "StorageError", "migrate"]
