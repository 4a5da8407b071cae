"""Device emulators: product code that powers the demo, the tests, the benchmarks and training."""
