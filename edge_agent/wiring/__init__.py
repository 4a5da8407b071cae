"""One module per feature: builds its parts, connects its hooks to the other features, registers its commands and
returns its tasks (docs/architecture.md)."""
