"""Performance benchmarks (run as modules: ``python -m benchmarks.scoring``)."""
