"""Wall-clock loop: callbacks run at real times (seconds since `start`).

Used with real executors: a step's forward pass really takes its time inside the
callback that starts it, so arrivals due meanwhile run as soon as it returns and their
requests have waited, exactly as a request reaching a busy server does. Besides the real
executor timing its own step, this is the only place that reads the clock.
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import Callable


class WallClockLoop:
    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._t0 = clock()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.max_lateness_s = 0.0  # how late the worst callback ran (driver overhead + busy steps)

    @property
    def now_s(self) -> float:
        return self._clock() - self._t0

    def at(self, time_s: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time_s, next(self._seq), callback))

    def run(self, on_event: Callable[[], None] | None = None) -> float:
        heap = self._heap
        self._t0 = self._clock()  # time 0 = when the run starts, not when the loop was built
        while heap:
            due_s, _, callback = heapq.heappop(heap)
            wait_s = due_s - self.now_s
            if wait_s > 0:
                self._sleep(wait_s)
            else:
                self.max_lateness_s = max(self.max_lateness_s, -wait_s)
            callback()
            if on_event is not None:
                on_event()
        return self.now_s
