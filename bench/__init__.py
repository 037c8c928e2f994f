"""Benchmarks of Ringfence; each module exposes ``run()`` and runs alone with ``python -m``."""
