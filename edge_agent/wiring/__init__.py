"""One module per feature: builds its parts, connects its hooks to the other features (each a `# Hook:` line),
registers its commands, and registers its tasks and stop/close calls in `ctx.running` (docs/architecture.md)."""
