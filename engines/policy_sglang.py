"""SGLang v0.4.x's default scheduling policy, over the shared scheduler's state.

Read from sgl-project/sglang (v0.4 line): `python/sglang/srt/managers/scheduler.py`
(`get_next_batch_to_run`, `get_new_batch_prefill`, `update_running_batch`),
`managers/schedule_policy.py` (`PrefillAdder`), `managers/schedule_batch.py`
(`retract_decode`), `server_args.py` and `global_config.py`. Rules modelled:

- A step is EITHER a prefill ("extend") batch OR a decode step. A prefill batch that
  can be formed runs first; otherwise every running request decodes one token.
- A prefill batch: the request being chunked continues first; then waiting requests in
  FCFS order while the batch has input budget (`max_prefill_tokens`, 16384) and chunk
  budget (`chunked_prefill_size`); a prompt longer than the chunk budget left is cut and
  continues in the next prefill batch.
- KV admission is a reservation: a new request needs its prompt plus
  min(max_new_tokens, 4096) free tokens, after reserving for every running request
  `new_token_ratio` x its remaining output. When that fails (or `max_running_requests`
  is reached) the batch is "full" and no prefill is tried until the running batch shrinks.
- Decode out of KV: retract requests with the fewest outputs (then longest prompt) until
  20 decode steps fit for the rest; they recompute from the back of the queue, and
  `new_token_ratio` jumps to the observed ratio; otherwise it decays 0.7 -> 0.098 over
  600 decode steps and resets when the server goes idle.
- `--enable-mixed-chunk` (off by default) adds the decodes to the prefill batch.

Not modelled: the radix prefix cache (`lpm` ordering equals FCFS when prompts share no
prefix) and token-granular KV slots (the pool keeps its block size).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engines.request import Request, Status

if TYPE_CHECKING:
    from engines.scheduler import Scheduler

CLIP_MAX_NEW_TOKENS = 4096        # schedule_policy.py: CLIP_MAX_NEW_TOKENS_ESTIMATION
RETRACT_DECODE_STEPS = 20         # global_config.py: retract_decode_steps
INIT_NEW_TOKEN_RATIO = 0.7        # global_config.py, x schedule_conservativeness (1.0)
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * 0.14
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / 600


def default_chunk_tokens(hbm_bytes: int) -> int:
    """server_args.py: chunked_prefill_size is 2048 below 25,000 MB of GPU memory, else 8192."""
    return 2048 if hbm_bytes / 2**20 < 25_000 else 8192


def default_max_running_requests(pool_tokens: int, context_len_tokens: int) -> int:
    """tp_worker.py: min(max_total_num_tokens // 2, req_to_token_pool size - 1), the
    request pool holding min(max(pool / context_len * 512, 2048), 4096) slots (model_runner.py)."""
    req_pool = min(max(int(pool_tokens / context_len_tokens * 512), 2048), 4096)
    return max(1, min(pool_tokens // 2, req_pool - 1))


class SGLangPolicy:
    """Per-scheduler state of the policy: the chunked request, the "batch is full" latch
    and the new-token ratio."""

    def __init__(self, sched: "Scheduler", max_running_requests: int) -> None:
        self.s = sched
        self.max_running = max_running_requests
        self.chunked: Request | None = None
        self.batch_is_full = False
        self.new_token_ratio = INIT_NEW_TOKEN_RATIO
        self.num_retracted = 0
        self._shrunk = False  # a running request finished since the last decode step

    def on_finished(self) -> None:
        self._shrunk = True

    def schedule(self, now_s: float) -> list[tuple[Request, int]]:
        s = self.s
        if not s.running and self.chunked is None:
            self.new_token_ratio = INIT_NEW_TOKEN_RATIO  # the server was idle
        out: list[tuple[Request, int]] = []
        decoding = [r for r in s.running if r is not self.chunked]
        if not decoding:  # SGLang's loop clears the latch on an empty running batch
            self.batch_is_full = False
        self._prefill_batch(decoding, now_s, out)
        if out:
            if s.config.mixed_chunk:  # decodes ride along in the extend batch
                out.extend(self._decodes(decoding))
            return out
        return self._decode_step(decoding)

    # ----- prefill ("extend") batch -----------------------------------------------
    def _prefill_batch(self, decoding: list[Request], now_s: float, out: list[tuple[Request, int]]) -> None:
        s = self.s
        if (self.batch_is_full or not s.waiting) and self.chunked is None:
            return
        if len(decoding) >= self.max_running:
            self.batch_is_full = True
            return
        mixed = len(decoding) if s.config.mixed_chunk else 0
        b = _Budget(s, decoding, self.new_token_ratio, mixed)
        chunked, self.chunked = self.chunked, None
        if chunked is not None:  # continues first, whatever the KV reservation says
            n = min(chunked.num_pending_tokens, b.rem_chunk)
            if n > 0 and s.pool.ensure_capacity(chunked.block_ids, chunked.num_computed_tokens + n):
                truncated = n < chunked.num_pending_tokens
                b.take(n, 0 if truncated else self._max_new(chunked))
                out.append((chunked, n))
                self.chunked = chunked if truncated else None
            else:
                self.chunked = chunked
        while s.waiting:
            if len(decoding) + len(out) >= self.max_running:
                self.batch_is_full = True
                break
            req = s.waiting[0]
            state = self._add_one(req, b, bool(out), now_s, out)
            if state == "no_token":
                self.batch_is_full = True
            if state != "continue":
                break

    def _add_one(self, req: Request, b: "_Budget", have_some: bool, now_s: float,
                 out: list[tuple[Request, int]]) -> str:
        s = self.s
        extend = req.num_pending_tokens
        if extend + self._max_new(req) >= b.rem_total:
            return "no_token"
        if extend > b.rem_input and have_some:
            return "other"
        n = extend if extend <= b.rem_chunk else b.rem_chunk
        if n <= 0:
            return "other"
        if not s.pool.ensure_capacity(req.block_ids, req.num_computed_tokens + n):
            return "no_token"  # block rounding left less than the token count said
        s.waiting.popleft()
        req.status = Status.RUNNING
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
        s.running.append(req)
        out.append((req, n))
        if n < extend:
            self.chunked = req
            b.take(n, 0)
        else:
            b.take(n, self._max_new(req))
        return b.state()

    def _max_new(self, req: Request) -> int:
        """max_new_tokens as the adder counts it: clipped to 4096, and (at intake) to what
        the pool can hold next to the prompt (max_req_len = pool tokens - 1). A retracted
        request reserves only the output it has left next to prompt + generated tokens:
        reserving its whole output again could exceed an idle pool, and nothing would ever
        run again (found by benchmarks/soak.py; tests/test_soak_regressions.py)."""
        pool_tokens = self.s.pool.num_blocks * self.s.pool.block_size_tokens
        return max(0, min(req.output_len - req.num_output_tokens, CLIP_MAX_NEW_TOKENS,
                          pool_tokens - 2 - req.num_tokens))

    # ----- decode step ------------------------------------------------------------
    def _decode_step(self, decoding: list[Request]) -> list[tuple[Request, int]]:
        if not decoding:
            return []
        if self._shrunk:
            self.batch_is_full = False
            self._shrunk = False
        pool = self.s.pool
        need = sum(pool.blocks_for_tokens(r.num_computed_tokens + 1) - len(r.block_ids) for r in decoding)
        if need > pool.num_free_blocks:
            decoding = self._retract(decoding)
        else:
            self.new_token_ratio = max(self.new_token_ratio - NEW_TOKEN_RATIO_DECAY, MIN_NEW_TOKEN_RATIO)
        return self._decodes(decoding)

    def _decodes(self, decoding: list[Request]) -> list[tuple[Request, int]]:
        out = []
        for req in decoding:
            if not self.s.pool.ensure_capacity(req.block_ids, req.num_computed_tokens + 1):
                self._retract_one(req)  # only reachable with a single oversized request left
                continue
            out.append((req, 1))
        return out

    def _retract(self, decoding: list[Request]) -> list[Request]:
        """schedule_batch.retract_decode: keep the requests with the most outputs."""
        pool = self.s.pool
        keep = sorted(decoding, key=lambda r: (r.num_output_tokens, -r.prompt_len), reverse=True)
        first = True
        while first or pool.num_free_blocks * pool.block_size_tokens < len(keep) * RETRACT_DECODE_STEPS:
            if len(keep) == 1:
                break
            first = False
            self._retract_one(keep.pop())
        decoded = sum(r.num_output_tokens for r in keep)
        max_new = sum(r.output_len for r in keep)
        self.new_token_ratio = min(1.0, (decoded + RETRACT_DECODE_STEPS * len(keep)) / max_new)
        self.batch_is_full = False
        order = {id(r): i for i, r in enumerate(self.s.running)}
        return sorted(keep, key=lambda r: order[id(r)])

    def _retract_one(self, req: Request) -> None:
        """Recompute-style: drop the KV, keep the outputs, go to the BACK of the queue."""
        s = self.s
        s.running.remove(req)
        s.pool.free(req.block_ids)
        req.block_ids.clear()
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        req.status = Status.WAITING
        s.num_preemptions += 1
        self.num_retracted += 1
        s.waiting.append(req)


class _Budget:
    """PrefillAdder's budgets, in tokens. Free tokens are read once: blocks are taken as
    requests are added, while SGLang allocates after the batch is formed."""

    def __init__(self, s: "Scheduler", decoding: list[Request], ratio: float, mixed_tokens: int) -> None:
        self.free_tokens = s.pool.num_free_blocks * s.pool.block_size_tokens
        self.rem_input = s.config.max_prefill_tokens - mixed_tokens
        self.rem_chunk = s.config.max_num_batched_tokens - mixed_tokens
        reserve = sum(min(r.output_len - r.num_output_tokens, CLIP_MAX_NEW_TOKENS) * ratio for r in decoding)
        self.total_offset = mixed_tokens + reserve
        self.cur_offset = mixed_tokens

    @property
    def rem_total(self) -> float:
        return self.free_tokens - self.total_offset

    def take(self, input_tokens: int, reserved_output_tokens: int) -> None:
        self.total_offset += input_tokens + reserved_output_tokens
        self.cur_offset += input_tokens
        self.rem_input -= input_tokens
        self.rem_chunk -= input_tokens

    def state(self) -> str:
        if self.rem_total <= 0 or self.free_tokens - self.cur_offset <= 0:
            return "no_token"
        if self.rem_input <= 0 or self.rem_chunk <= 0:
            return "other"
        return "continue"
