"""Discrete-event loop with a virtual clock: deterministic, as fast as the callbacks."""
from __future__ import annotations

import heapq
import itertools
from typing import Callable


class VirtualLoop:
    def __init__(self) -> None:
        self._now_s = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()  # tie-breaker: same-time events run in insertion order

    @property
    def now_s(self) -> float:
        return self._now_s

    def at(self, time_s: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(time_s, self._now_s), next(self._seq), callback))

    def run(self, on_event: Callable[[], None] | None = None) -> float:
        """Run until no events are left; returns the final time."""
        heap = self._heap
        while heap:
            self._now_s, _, callback = heapq.heappop(heap)
            callback()
            if on_event is not None:
                on_event()
        return self._now_s
