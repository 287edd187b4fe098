"""Benchmarks of celery-fleet (fleet bench)."""
