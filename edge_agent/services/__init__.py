"""The store's use cases, each service owning its tables (pickups, compartments, orders, codes, accounts, ...).
Constructors only store their arguments; the hooks between services are made in edge_agent/wiring/
(docs/architecture.md)."""
