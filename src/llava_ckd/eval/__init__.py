"""Benchmarks, one module each (`pope.py` scores POPE, ...), collected by name in `registry.py`."""
