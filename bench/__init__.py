"""Benchmarks (not timed tests): each ``bench/*_bench.py`` module has a ``main()`` printing a table."""
