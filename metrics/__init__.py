"""Metrics: definitions (the one module), summaries, run directories and plots.

Definitions live in `metrics.definitions`; `metrics.plots` is not imported here so that
summaries and run directories do not pay for matplotlib/seaborn.
"""
from metrics.results import format_summary_table, load_run_dir, write_run_dir
from metrics.summary import summarize

__all__ = ["summarize", "write_run_dir", "load_run_dir", "format_summary_table"]
