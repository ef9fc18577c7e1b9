"""The one exception type for user mistakes in workload configuration or data files.

It subclasses ValueError so generic callers can catch it, and its message is meant to be
shown as-is (one paragraph naming the file, record or option at fault): bench.py prints
it instead of a traceback.
"""
from __future__ import annotations

from collections.abc import Iterable


class WorkloadError(ValueError):
    """A workload could not be built because of the configuration or a data file."""


def choice_error(option: str, value: object, valid: Iterable[str]) -> WorkloadError:
    """Error for an option whose value is not one of a fixed set."""
    choices = ", ".join(repr(v) for v in valid)
    return WorkloadError(f"Unknown value {value!r} for {option}; valid values are: {choices}.")
