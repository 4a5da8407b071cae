"""Every cloud command the agent answers, one module per feature: payload models (the contract's
`command.{type}.json` schemas are generated from them), handlers and `register_*_commands(registry, ...)`.
The wiring modules register them; cloud_link/commands.py runs them (at most once per command_id)."""
