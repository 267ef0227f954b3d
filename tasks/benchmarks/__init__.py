"""Benchmark sources behind `tasks.problems`: reading rows, checking their Rust, fetching pins."""
