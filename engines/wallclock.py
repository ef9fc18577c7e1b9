"""Wall-clock loop: callbacks run at real times (seconds since `start`).

Used with real executors. An in-process executor's forward pass really takes its time
inside the callback that starts it, so arrivals due meanwhile run as soon as it returns
and their requests have waited, exactly as a request reaching a busy server does.
Executors in worker processes (engines/torch/procs.py) instead return at once; the loop
then sleeps until the next timer OR until a worker's connection becomes readable
(`when_ready`), whichever comes first, so two workers computing at the same time are
served in the order they finish. Besides the real executor timing its own step, this is
the only place that reads the clock.
"""
from __future__ import annotations

import heapq
import itertools
import time
from multiprocessing.connection import wait as wait_readable
from typing import Any, Callable


class WallClockLoop:
    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clock, self._sleep = clock, sleep
        self._t0 = clock()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        # Readable sources (Connection, socket, process sentinel) -> callback, run once.
        self._waiting: dict[Any, Callable[[], None]] = {}
        self.max_lateness_s = 0.0  # how late the worst callback ran (driver overhead + busy steps)

    @property
    def now_s(self) -> float:
        return self._clock() - self._t0

    def at(self, time_s: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (time_s, next(self._seq), callback))

    def when_ready(self, source: Any, callback: Callable[[], None]) -> None:
        """Run `callback` once, as soon as `source` is readable (anything
        multiprocessing.connection.wait accepts). One callback per source at a time."""
        if source in self._waiting:
            raise RuntimeError(f"{source!r} already has a callback waiting")
        self._waiting[source] = callback

    def cancel_ready(self, source: Any) -> None:
        self._waiting.pop(source, None)

    def run(self, on_event: Callable[[], None] | None = None) -> float:
        heap = self._heap
        self._t0 = self._clock()  # time 0 = when the run starts, not when the loop was built
        while heap or self._waiting:
            timeout_s = max(0.0, heap[0][0] - self.now_s) if heap else None
            if self._waiting and (timeout_s is None or timeout_s > 0):
                ready = wait_readable(list(self._waiting), timeout_s)
                if ready:
                    for source in ready:
                        callback = self._waiting.pop(source, None)
                        if callback is not None:
                            callback()
                            if on_event is not None:
                                on_event()
                    continue
            if not heap:
                continue
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
