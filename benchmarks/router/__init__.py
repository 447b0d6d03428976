"""The router benchmark's parts; ``benchmarks/bench_router.py`` is its command line."""
