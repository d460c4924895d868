"""Benchmarks: how fast the kata's reference learns and runs, as ratios to torch's built-ins.

    python -m benchmarks            # every row, a few minutes on a laptop CPU
    python -m benchmarks --quick    # a tiny version of every row (seconds), for the project's tests

Each row lives in its own module and returns a ``Row`` (benchmarks/common.py); ``__main__``
prints them as a table and writes them as JSON (benchmarks/results.json by default). Ratios,
not absolute times, are what the project promises: absolute times depend on the machine, which
the JSON records.
"""
