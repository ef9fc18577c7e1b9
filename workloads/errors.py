"""The exception type for user mistakes in workload configuration or data files.

A UserError (engines/errors.py; so also a ValueError): its message is shown as-is (one
paragraph naming the file, record or option at fault), without a traceback.
"""
from __future__ import annotations

from collections.abc import Iterable

from engines.errors import UserError


class WorkloadError(UserError):
    """A workload could not be built because of the configuration or a data file."""


def choice_error(option: str, value: object, valid: Iterable[str]) -> WorkloadError:
    """Error for an option whose value is not one of a fixed set."""
    choices = ", ".join(repr(v) for v in valid)
    return WorkloadError(f"Unknown value {value!r} for {option}; valid values are: {choices}.")
