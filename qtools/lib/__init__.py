"""The small shared library: one job per module, no program logic."""
