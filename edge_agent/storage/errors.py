"""Storage errors, each carrying enough context to act on."""


class StorageError(Exception):
    """A database operation failed."""


class StorageClosedError(StorageError):
    """A write was attempted after the database was closed."""


class MigrationError(StorageError):
    """The schema could not be brought to the version this agent needs."""
