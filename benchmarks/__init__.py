"""Speed and memory benchmarks: figures measured side by side in one run, printed, never asserted in tests;
and the board's intervals' coverage on simulated boards (`coverage.py`, whose simulation tests/test_bootstrap.py
runs on fewer boards to assert a floor)."""
