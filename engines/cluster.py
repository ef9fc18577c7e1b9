"""A heterogeneous cluster: several engines (e.g. a 1P3D disaggregated group and four
semi-PD GPUs) behind one router, on one loop.

Routing is smooth weighted round-robin by GPU count (deterministic; each group gets
arrivals in proportion to its GPUs). The semi-PD paper does not say how its 1P3D4S
cluster routes requests; this is our documented assumption.
"""
from __future__ import annotations

from engines.engine import Engine, KVUsageTracker
from engines.request import Request


class ClusterEngine(Engine):
    def __init__(self, name: str, parts: list[Engine]) -> None:
        loop = parts[0].loop
        super().__init__(name, workers=[w for p in parts for w in p.workers],
                         pools=[pool for p in parts for pool in p.pools], loop=loop,
                         num_gpus=sum(p.num_gpus for p in parts),
                         max_model_len=min(p.max_model_len for p in parts),
                         num_weight_copies=sum(p.num_weight_copies for p in parts))
        self.parts = parts
        for i, part in enumerate(parts):  # unique names in steps.csv
            for w in part.workers:
                w.name = f"g{i}.{w.name}"
        # One tracker over every pool, shared by the parts (each observes after its events).
        self.kv = KVUsageTracker(self.pools)
        for part in parts:
            part.kv = self.kv
            part.on_request_done = self._done
        self._credit = [0.0] * len(parts)

    def submit(self, req: Request) -> None:
        part = self.parts[self._pick()]
        part.submit(req)

    def _pick(self) -> int:
        """Smooth weighted round-robin (as in nginx): add each weight, pick the largest
        credit, subtract the total from it."""
        total = 0.0
        for i, part in enumerate(self.parts):
            self._credit[i] += part.num_gpus
            total += part.num_gpus
        best = max(range(len(self.parts)), key=lambda i: self._credit[i])
        self._credit[best] -= total
        return best

    def kick(self) -> None:
        for part in self.parts:
            part.kick()

    def live_block_tables(self, pool):
        return [t for part in self.parts if pool in part.pools for t in part.live_block_tables(pool)]
