"""The project's user-error types, and range checks that raise them.

A `UserError` means "the user asked for something wrong": an option out of range, a
missing or malformed file, a model that does not fit, a run that could serve nothing.
Its message is one paragraph naming the option or file, what was expected and what was
given; the CLIs (bench.py, ...) print it without a traceback and exit 2. Every other
exception - including a plain ValueError from a broken invariant such as a double free
in the block pool - is a bug and keeps its traceback.

UserError subclasses ValueError so library callers that catch ValueError keep working.
It lives in `engines` (no imports) because sim/, workloads/ and harness/ all depend on
this package, never the other way round.
"""
from __future__ import annotations

import math
from collections.abc import Iterable


class UserError(ValueError):
    """Base of every error caused by the user's input (printed without a traceback)."""


class ConfigError(UserError):
    """An option has a value outside its allowed set or range.

    Message: "<option> must be <expected>; got <value>", with `option` the full dotted
    Hydra path (e.g. engine.semipd.percentile), so the user knows what to override.
    """

    def __init__(self, option: str, expected: str, value: object) -> None:
        self.option, self.expected, self.value = option, expected, value
        super().__init__(f"{option} must be {expected}; got {value!r}")


class NothingServedError(UserError):
    """A run finished without serving any request (every one was rejected)."""


class WorkerError(RuntimeError):
    """A worker process of a real run died or failed (engines/torch/procs.py). Not a user
    error, but not a driver bug either: the CLI prints the message, which names the
    worker and its exit code or traceback, and exits 1; the run directory keeps what
    finished."""


def check_choice(option: str, value: object, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(option, f"one of {', '.join(valid)}", value)


def check_int(option: str, value: object, minimum: int, *, optional: bool = False) -> None:
    """An integer >= minimum (or None when `optional`)."""
    if value is None and optional:
        return
    # bool is an int subclass: `true` for a count is a typo, not 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(option, f"an integer >= {minimum}" + (" or null" if optional else ""), value)


def check_number(option: str, value: object, lo: float, hi: float = math.inf, *,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite real number in the interval from lo to hi (ends closed unless `*_open`);
    nan and inf never pass (a comparison with nan is False, so it would slip through)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ConfigError(option, _interval(lo, hi, lo_open, hi_open), value)


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    if hi == math.inf:
        return f"a finite number {'>' if lo_open else '>='} {lo:g}"
    return f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
