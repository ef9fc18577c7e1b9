"""Invariant checker for a simulated run: KV ownership, request conservation, token
counts and step timing, checked after every event of the loop (used by the soak,
benchmarks/soak.py; a normal run pays nothing for it).

Attach it before the run, pass `after_event` as the loop's `on_event`, call `at_end`
after the loop drained. Any broken invariant raises InvariantViolation with what and where.
Where a request may legally sit (one place at a time):
  scheduler waiting queue (status WAITING, holds no KV) | scheduler running list
  (RUNNING, holds KV in that scheduler's pool) | disagg pending queue or KV transfer
  (TRANSFERRING, holds KV in its prefill pool; a transfer also holds decode blocks) |
  disagg swapped queue or swap-in (WAITING, KV in host memory; a swap-in holds decode blocks).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.blocks import BlockPool
from engines.engine import Engine
from engines.kv_ownership import InvariantViolation, check_pool_ownership, fail as _fail
from engines.plan import StepPlan, StepResult, shape_of
from engines.request import Request, Status
from engines.worker import Worker

__all__ = ["InvariantChecker", "InvariantViolation", "check_pool_ownership"]

_TIME_EPS_S = 1e-9  # float slack for end = start + duration comparisons


def _require(ok: bool, message: str) -> None:
    """For checks that run once per step or per run (the message is built either way)."""
    if not ok:
        raise InvariantViolation(message)


@dataclass
class _Tally:
    """What the executed plans did to one request (independent of the request's fields)."""

    computed_tokens: int = 0
    samples: int = 0


@dataclass
class _Place:
    where: str
    status: Status
    pool: BlockPool | None  # the pool whose blocks `block_ids` index (None: must hold none)


@dataclass
class InvariantChecker:
    engine: Engine
    requests: list[Request]
    submitted: set[int] = field(default_factory=set)
    tallies: dict[int, _Tally] = field(default_factory=dict)
    step_tokens: dict[str, int] = field(default_factory=dict)  # worker -> tokens of its plans
    last_end_s: dict[str, float] = field(default_factory=dict)
    start_share: dict[str, float] = field(default_factory=dict)  # worker -> share its step started at
    last_now_s: float = 0.0
    num_events: int = 0

    def attach(self) -> None:
        """Wrap the engine's intake and every worker's step completion (instance attributes
        only: other engines and runs are untouched)."""
        self._by_id = {r.id: r for r in self.requests}
        _require(len(self._by_id) == len(self.requests), "duplicate request ids in the workload")
        submit = self.engine.submit

        def checked_submit(req: Request) -> None:
            _require(req.id not in self.submitted, f"request {req.id} submitted twice")
            _require(self.engine.loop.now_s == req.arrival_s,
                     f"request {req.id} submitted at {self.engine.loop.now_s}, it arrives at {req.arrival_s}")
            self.submitted.add(req.id)
            submit(req)
        self.engine.submit = checked_submit
        for worker in self.engine.workers:
            self._wrap_finish(worker)
        self._dirty: set[int] = {id(p) for p in self.engine.pools}
        for pool in self.engine.pools:
            self._watch(pool)

    def _watch(self, pool: BlockPool) -> None:
        """Ref counts change only through these calls: re-scan them only after one ran."""
        for method in ("allocate", "free", "incref"):
            inner = getattr(pool, method)

            def marked(*args, _inner=inner):
                self._dirty.add(id(pool))
                return _inner(*args)
            setattr(pool, method, marked)

    def _wrap_finish(self, worker: Worker) -> None:
        start, finish = worker.start_step, worker.finish_step

        def checked_start(now_s: float):
            started = start(now_s)
            if started is not None:
                self.start_share[worker.name] = worker.share
            return started

        def checked_finish(plan: StepPlan, result: StepResult, start_s: float, end_s: float):
            self._check_step(worker, plan, result, start_s, end_s)
            return finish(plan, result, start_s, end_s)
        worker.start_step, worker.finish_step = checked_start, checked_finish

    # ----- per step -------------------------------------------------------------------
    def _check_step(self, worker: Worker, plan: StepPlan, result: StepResult, start_s: float,
                    end_s: float) -> None:
        name = worker.name
        _require(result.duration_s > 0, f"{name}: step duration {result.duration_s} s is not positive")
        _require(end_s + _TIME_EPS_S >= start_s, f"{name}: step ends at {end_s} before its start {start_s}")
        prev_end = self.last_end_s.get(name, 0.0)
        _require(start_s + _TIME_EPS_S >= prev_end,
                 f"{name}: step starting at {start_s} overlaps the previous step ending at {prev_end}")
        self.last_end_s[name] = end_s
        # Contention may stretch a step (semi-PD), nothing makes it shorter than it takes alone.
        _require(end_s - start_s >= result.duration_s * (1 - 1e-9) - _TIME_EPS_S,
                 f"{name}: step at {start_s} took {end_s - start_s} s, less than its {result.duration_s} s alone")
        _require(0.0 < worker.share <= 1.0, f"{name}: share {worker.share} outside (0, 1]")
        # A new partition takes effect at iteration boundaries only (semi-PD's switch).
        _require(self.start_share.get(name) == worker.share,
                 f"{name}: share changed from {self.start_share.get(name)} to {worker.share} "
                 f"during the step at {start_s}")
        sched, pool = worker.scheduler, worker.scheduler.pool
        seen: set[int] = set()
        num_prefill = num_decode = 0
        for seq in plan.seqs:
            req = self._by_id[seq.request_id]
            if req.id in seen or not any(r is req for r in sched.running):
                _fail(f"{name}: request {req.id} in the step at {start_s} is scheduled twice or "
                      "is not in the worker's running list")
            seen.add(req.id)
            end_tok = seq.num_context_tokens + seq.num_new_tokens
            if (seq.num_new_tokens < 1 or seq.num_context_tokens != req.num_computed_tokens
                    or end_tok > req.num_tokens or seq.samples != (end_tok == req.num_tokens)):
                _fail(f"{name}: request {req.id} in the step at {start_s}: plan computes tokens "
                      f"[{seq.num_context_tokens}, {end_tok}) samples={seq.samples}, but the request "
                      f"has {req.num_computed_tokens} computed of {req.num_tokens}")
            if len(req.block_ids) < pool.blocks_for_tokens(end_tok):
                _fail(f"{name}: request {req.id} in the step at {start_s}: {len(req.block_ids)} "
                      f"blocks cannot hold {end_tok} tokens")
            tally = self.tallies.setdefault(req.id, _Tally())
            tally.computed_tokens += seq.num_new_tokens
            tally.samples += int(seq.samples)
            if seq.is_prefill:
                num_prefill += seq.num_new_tokens
            else:
                num_decode += seq.num_new_tokens
        _require(plan.shape == shape_of(plan.seqs),
                 f"{name}: the plan's sums {plan.shape} at {start_s} disagree with its seqs' {shape_of(plan.seqs)}")
        _require((num_prefill, num_decode) == (plan.num_prefill_tokens, plan.num_decode_tokens),
                 f"{name}: plan says {plan.num_prefill_tokens}+{plan.num_decode_tokens} tokens, "
                 f"its seqs {num_prefill}+{num_decode}")
        self.step_tokens[name] = self.step_tokens.get(name, 0) + plan.num_tokens

    # ----- after every event --------------------------------------------------------------
    def after_event(self) -> None:
        self.num_events += 1
        now = self.engine.loop.now_s
        if now < self.last_now_s:
            _fail(f"clock went back from {self.last_now_s} to {now}")
        self.last_now_s = now
        places = self._places()
        holders: dict[int, list[tuple[str, list[int]]]] = {id(p): [] for p in self.engine.pools}
        for rid in self.submitted:
            req = self._by_id[rid]
            place = places.get(rid)
            if req.status is Status.FINISHED or req.status is Status.REJECTED:
                if place is not None:
                    _fail(f"request {rid} ({req.status.value}) still queued in {place.where}")
                continue
            if place is None:
                _fail(f"request {rid} ({req.status.value}) was submitted but is in no queue")
            self._check_live(req, place, now)
            if req.block_ids:
                holders[id(place.pool)].append((f"request {rid}", req.block_ids))
        for label, blocks, pool in self._engine_held_blocks():
            holders[id(pool)].append((label, blocks))
        for pool in self.engine.pools:
            check_pool_ownership(pool, holders[id(pool)], scan_ref_counts=id(pool) in self._dirty)
        self._dirty.clear()

    @staticmethod
    def _check_live(req: Request, place: _Place, now: float) -> None:
        """A queued request: status, token counts and KV agree with where it is."""
        rid = req.id
        if req.status is not place.status:
            _fail(f"request {rid} in {place.where} has status {req.status.value}")
        if not 0 <= req.num_computed_tokens <= req.num_tokens:
            _fail(f"request {rid}: computed {req.num_computed_tokens} of {req.num_tokens} tokens")
        if req.num_output_tokens >= req.output_len:
            _fail(f"request {rid}: {req.num_output_tokens}/{req.output_len} tokens but not finished")
        if len(req.token_times_s) != req.num_output_tokens:
            _fail(f"request {rid}: {len(req.token_times_s)} token times for {req.num_output_tokens} tokens")
        if req.arrival_s > now:
            _fail(f"request {rid} is live at {now} before its arrival {req.arrival_s}")
        if place.pool is None:
            if req.block_ids:
                _fail(f"request {rid} in {place.where} holds blocks {req.block_ids}")
        elif len(req.block_ids) < place.pool.blocks_for_tokens(req.num_computed_tokens):
            _fail(f"request {rid} in {place.where}: {len(req.block_ids)} blocks for "
                  f"{req.num_computed_tokens} computed tokens")

    def _places(self) -> dict[int, _Place]:
        out: dict[int, _Place] = {}

        def put(req: Request, place: _Place) -> None:
            if req.id in out:
                _fail(f"request {req.id} is in {out[req.id].where} and in {place.where}")
            if req.id not in self.submitted:
                _fail(f"request {req.id} is in {place.where} but was never submitted")
            out[req.id] = place
        for part in getattr(self.engine, "parts", [self.engine]):
            for w in part.workers:
                s = w.scheduler
                for req in s.waiting:
                    put(req, _Place(f"{w.name}.waiting", Status.WAITING, None))
                for req in s.running:
                    put(req, _Place(f"{w.name}.running", Status.RUNNING, s.pool))
            held = getattr(part, "_held", {})
            for name, queue in getattr(part, "pending", {}).items():
                for req in queue:
                    put(req, _Place(f"pending[{name}]", Status.TRANSFERRING, held.get(req.id, (None, None))[1]))
            for name, queue in getattr(part, "swapped", {}).items():  # KV in host memory
                for req in queue:
                    put(req, _Place(f"swapped[{name}]", Status.WAITING, None))
            for rid in getattr(part, "_incoming", {}):
                if rid in held:  # P -> D transfer: the prefill KV stays until it lands
                    put(held[rid][0], _Place("kv transfer", Status.TRANSFERRING, held[rid][1]))
                else:  # swap-in from host memory: only the destination blocks
                    put(self._by_id[rid], _Place("swap-in", Status.WAITING, None))
        return out

    def _engine_held_blocks(self) -> list[tuple[str, list[int], BlockPool]]:
        """Blocks an engine holds outside request block tables (disagg: a transfer's destination)."""
        out = []
        for part in getattr(self.engine, "parts", [self.engine]):
            for rid, (blocks, pool) in getattr(part, "_incoming", {}).items():
                out.append((f"transfer of request {rid}", blocks, pool))
        return out

    # ----- at the end ---------------------------------------------------------------------
    def at_end(self) -> None:
        """After the loop drained (before finalize_unfinished): nothing left anywhere."""
        self.after_event()
        for req in self.requests:
            self._check_final(req)
        for pool in self.engine.pools:
            _require(pool.num_free_blocks == pool.num_blocks,
                     f"pool '{pool.name}' leaks {pool.num_used_blocks} blocks at the end")
        for w in self.engine.workers:
            _require(not w.busy, f"worker {w.name} still busy at the end")
            self._check_records(w)
        per_request = sum(t.computed_tokens for t in self.tallies.values())
        per_step = sum(r.num_prefill_tokens + r.num_decode_tokens for w in self.engine.workers for r in w.records)
        _require(per_request == per_step, f"steps.csv counts {per_step} tokens, the requests' plans {per_request}")

    def _check_final(self, req: Request) -> None:
        rid = req.id
        _require(rid in self.submitted, f"request {rid} was never submitted")
        _require(req.status in (Status.FINISHED, Status.REJECTED),
                 f"request {rid} stalled: {req.status.value} with {req.num_output_tokens}/{req.output_len} "
                 "tokens when no event was left")
        tally = self.tallies.get(rid, _Tally())
        if req.status is Status.REJECTED:
            _require(bool(req.reject_reason.strip()), f"request {rid} rejected without a reason")
            _require(tally.computed_tokens == 0 and not req.token_times_s,
                     f"request {rid} rejected after being served")
            _require(req.finish_s == req.arrival_s, f"request {rid} rejected at {req.finish_s}, not on arrival")
            return
        times = req.token_times_s
        # Only a sampled stop (EOS) id or an abort (a server's client left) ends a request
        # before output_len; the simulator samples none and aborts none.
        stopped = getattr(req, "finish_reason", "length") in ("stop", "abort")
        expected = req.num_output_tokens if stopped and req.num_output_tokens <= req.output_len else req.output_len
        _require(req.num_output_tokens == expected == tally.samples == len(times) > 0,
                 f"request {rid}: {req.num_output_tokens} output tokens, output_len {req.output_len}, "
                 f"{tally.samples} sampling steps, {len(times)} token times, finish reason "
                 f"{getattr(req, 'finish_reason', 'n/a')!r}")
        _require(all(a <= b for a, b in zip(times, times[1:])), f"request {rid}: token times not monotonic")
        sched = req.first_scheduled_s
        _require(sched is not None and req.arrival_s <= sched <= times[0] == req.prefill_done_s
                 and times[-1] == req.finish_s,
                 f"request {rid}: arrival {req.arrival_s}, scheduled {sched}, first token {times[0]}, "
                 f"prefill done {req.prefill_done_s}, last token {times[-1]}, finish {req.finish_s}")
        # Each token but the last is computed once; a recompute-style preemption computes
        # again what it dropped (a swap keeps it, so only ">=" holds after preemptions).
        base = req.prompt_len + req.num_output_tokens - 1
        ok = tally.computed_tokens == base if req.num_preemptions == 0 else tally.computed_tokens >= base
        _require(ok and req.num_computed_tokens == base,
                 f"request {rid}: plans computed {tally.computed_tokens} tokens, the request "
                 f"{req.num_computed_tokens}, for prompt {req.prompt_len} + output {req.num_output_tokens} "
                 f"with {req.num_preemptions} preemptions")

    def _check_records(self, w: Worker) -> None:
        recs = w.records
        for a, b in zip(recs, recs[1:]):
            _require(b.start_s + _TIME_EPS_S >= a.start_s + a.duration_s,
                     f"worker {w.name}: steps.csv step at {b.start_s} overlaps the one at {a.start_s} "
                     f"lasting {a.duration_s}")
        tokens = sum(r.num_prefill_tokens + r.num_decode_tokens for r in recs)
        _require(tokens == self.step_tokens.get(w.name, 0),
                 f"worker {w.name}: steps.csv counts {tokens} tokens, its plans {self.step_tokens.get(w.name, 0)}")
