"""Speed and memory benchmarks: figures measured side by side in one run, printed, never asserted in tests."""
