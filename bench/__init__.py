"""Side-by-side benchmarks: each `bench_*.py` module compares the platform with a baseline in one run."""
