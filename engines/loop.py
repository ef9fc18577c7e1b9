"""The clock seam: engines schedule callbacks on a loop and never read a clock themselves.

`sim.loop.VirtualLoop` runs the callbacks in virtual time; a wall-clock loop runs them at
real times. Both implement this protocol. The wall-clock loop also has `when_ready(source,
callback)`, used for executors that compute in worker processes (engines/plan.py,
AsyncExecutor).
"""
from __future__ import annotations

from typing import Callable, Protocol


class Loop(Protocol):
    @property
    def now_s(self) -> float: ...

    def at(self, time_s: float, callback: Callable[[], None]) -> None:
        """Run `callback` at `time_s` (not before `now_s`). Ties run in insertion order."""
        ...
