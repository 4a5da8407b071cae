"""Benchmarks: `python -m bench.<name> [--quick]`, each printing one JSON line of figures last."""
