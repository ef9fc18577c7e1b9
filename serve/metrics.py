"""/metrics in Prometheus' text format (prometheus_client, one registry per server).

Names follow vLLM's (vllm/v1/metrics/loggers.py: num_requests_running / waiting, prompt and
generation token counters, request counts by finish reason) with this project's `serve_`
prefix, plus what the designs here add: KV blocks per pool, step times per worker and
phase, and semi-PD's compute partition.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engines.engine import Engine

# Step-time buckets (seconds): 1 ms (a GPU decode) to 10 s (a long CPU prefill).
STEP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def step_phase(num_prefill_tokens: int, num_decode_tokens: int) -> str:
    return ("mixed" if num_decode_tokens else "prefill") if num_prefill_tokens else "decode"


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.running = Gauge("serve_num_requests_running", "Requests holding KV (computing or between steps)",
                             registry=r)
        self.waiting = Gauge("serve_num_requests_waiting", "Requests queued for prefill", registry=r)
        self.pending = Gauge("serve_num_requests_pending", "Requests accepted and not finished", registry=r)
        self.kv_used = Gauge("serve_kv_blocks_used", "KV blocks in use", ["pool"], registry=r)
        self.kv_free = Gauge("serve_kv_blocks_free", "KV blocks free", ["pool"], registry=r)
        self.share = Gauge("serve_compute_share_pct", "Semi-PD compute share of the prefill and decode workers",
                           ["phase"], registry=r)
        self.step_s = Histogram("serve_step_seconds", "Step time per worker and phase (prefill, mixed, decode)",
                                ["worker", "phase"], buckets=STEP_BUCKETS_S, registry=r)
        self.requests = Counter("serve_requests", "Finished requests by finish reason (length, stop, abort; "
                                "rejected by the engine; error: the engine failed)", ["finish_reason"], registry=r)
        self.refused = Counter("serve_http_refused", "Requests answered with an error before they were queued "
                               "(400, 404, 413, 503; 499: the client left before its body arrived)", ["status"],
                               registry=r)
        self.prompt_tokens = Counter("serve_prompt_tokens", "Prompt tokens of accepted requests", registry=r)
        self.generation_tokens = Counter("serve_generation_tokens", "Generated tokens", registry=r)
        self._children: dict[tuple[str, str], object] = {}
        self._pools = None

    def observe_engine(self, engine: Engine) -> None:
        """From the engine thread after each loop event: gauges, and the steps that ended
        (then dropped: a server keeps no step log). Labelled children are looked up once."""
        waiting = running = 0
        for w in engine.workers:
            waiting += len(w.scheduler.waiting)
            running += len(w.scheduler.running)
            for rec in w.records:
                key = (rec.worker, step_phase(rec.num_prefill_tokens, rec.num_decode_tokens))
                child = self._children.get(key) or self._children.setdefault(key, self.step_s.labels(*key))
                child.observe(rec.duration_s)
            w.records.clear()
        for part in getattr(engine, "parts", [engine]):
            for log_list in ("transfers", "timeline"):  # disagg's transfers, semi-PD's partition log
                if isinstance(getattr(part, log_list, None), list):
                    del getattr(part, log_list)[:-1]
            if hasattr(part, "shares_pct"):
                x, y = part.shares_pct
                self.share.labels("prefill").set(x)
                self.share.labels("decode").set(y)
        del engine.kv.series[:]
        self.waiting.set(waiting)
        self.running.set(running)
        if self._pools is None:
            self._pools = [(p, self.kv_used.labels(p.name), self.kv_free.labels(p.name)) for p in engine.pools]
        for pool, used, free in self._pools:
            used.set(pool.num_used_blocks)
            free.set(pool.num_free_blocks)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
