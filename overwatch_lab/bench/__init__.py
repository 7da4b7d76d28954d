"""Benchmarks: commands that print figures, compare them with a ceiling measured in the same run,
and write JSON (``overwatch-lab bench ...``)."""
