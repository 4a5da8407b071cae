"""Store Edge Agent: the store's composition root, configuration, storage, services and web."""

__version__ = "0.1.0"
