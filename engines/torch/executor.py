"""TorchExecutor: runs a StepPlan on the real model and reports tokens and wall time.

- Every step is ONE forward over all scheduled seqs (prefill chunks, decodes, mixed).
- `duration_s` is time.perf_counter() around metadata building, the forward and
  sampling (the tokens are copied to the host, which also synchronises CUDA).
- Seqs without `token_ids` (simulated workloads) get made-up ids that depend only on
  (request_id, position), see `synthetic_token_ids`: recomputing a preempted request
  feeds the same ids again, and runs are reproducible.
- Sampling is greedy, or temperature sampling whose noise is seeded by
  (seed, request_id, position), so a request's tokens do not depend on what else was
  batched with it.
- `share` (the worker's compute fraction) is ignored here: on CPU the cap is applied
  outside the executor (thread count / core affinity per worker process), and on CUDA
  by MPS; the executor just runs as fast as it can in the resources it was given.
"""
from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from engines.plan import ScheduledSeq, StepPlan, StepResult
from engines.torch.config import LlamaConfig
from engines.torch.model import LlamaModel, pack_cpu_weights
from engines.torch.fused import select_ops
from engines.torch.paged_attention import KVCache, SeqSlice, TorchAttention


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 means greedy (argmax)
    seed: int = 0


def num_blocks_for_budget(config: LlamaConfig, budget_bytes: int, block_size: int,
                          dtype: torch.dtype) -> int:
    """How many KV blocks of `block_size` tokens fit in `budget_bytes` (all layers, K+V)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(budget_bytes // (block_size * config.kv_bytes_per_token(itemsize)))


def keep_freed_memory(bytes_: int = 1 << 30) -> bool:
    """Make glibc malloc reuse freed big blocks instead of returning them to the OS.

    Each step allocates a few large tensors (logits: batch x 128k vocab). By default
    glibc mmaps such blocks and unmaps them on free, so every step page-faults them
    afresh: +3 ms median on a 12.5 ms decode step (tiny_llama, batch 32, 2 threads).
    Raising the mmap and trim thresholds (what tcmalloc/jemalloc do anyway) keeps them
    in the heap. Process-wide; False where this is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, bytes_) and libc.mallopt(m_trim_threshold, bytes_))


def synthetic_token_ids(request_ids: torch.Tensor, positions: torch.Tensor,
                        vocab_size: int) -> torch.Tensor:
    """Deterministic pseudo-random ids in [0, vocab_size) from (request id, position).

    A splitmix64-style integer hash (int64 arithmetic wraps identically everywhere).
    """
    x = request_ids.long() * 0x9E3779B1 + positions.long() * 0x85EBCA77 + 0x165667B1
    x = (x ^ (x >> 31)) * 0x7FEB352D
    x = (x ^ (x >> 29)) * 0x846CA68B
    return torch.remainder(x ^ (x >> 32), vocab_size)


class TorchExecutor:
    """The `torch` executor of the Executor protocol (engines/plan.py).

    It owns `model`: it moves and casts it to `device`/`dtype` and, on CPU, gives its
    linear layers oneDNN-packed weights (`pack_weights`). Pass `kv_cache` to run over an
    existing pool (e.g. one shared by two workers); otherwise it allocates
    `num_blocks` x `block_size` tokens per layer. `threads` sets torch's process-wide
    intra-op thread count (one worker per process). `fused_ops` (fused.py): None uses
    the fused C++ elementwise ops where they build (CPU), False the torch ones.
    """

    def __init__(self, model: LlamaModel, *, num_blocks: int, block_size: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 sampling: Sampling = Sampling(), threads: int | None = None,
                 attention=None, pack_weights: bool = True, kv_cache: KVCache | None = None,
                 tune_malloc: bool = True, fused_ops: bool | None = None):
        if threads is not None:
            torch.set_num_threads(threads)
        if tune_malloc:
            keep_freed_memory()
        self.device = torch.device(device)
        dtype = dtype or model.dtype
        if model.dtype != dtype or model.embed_tokens.device != self.device:
            model = model.to(device=self.device, dtype=dtype)  # drops packed copies
        self.model = model.eval()
        if not pack_weights:  # the executor owns the model: drop copies an earlier owner made
            for module, _ in self.model.linear_weights():
                module.packed = {}
        self.packed = bool(self.model.packed) or (pack_weights and pack_cpu_weights(self.model))
        c = model.config
        if kv_cache is None:
            kv_cache = KVCache(c.num_hidden_layers, num_blocks, block_size,
                               c.num_key_value_heads, c.head_dim, self.model.dtype, self.device)
        elif (kv_cache.num_blocks, kv_cache.block_size) != (num_blocks, block_size):
            raise ValueError(f"kv_cache has {kv_cache.num_blocks} blocks of "
                             f"{kv_cache.block_size}, not {num_blocks} of {block_size}")
        self.kv_cache, self.block_size = kv_cache, block_size
        self.sampling = sampling
        self.ops = select_ops(self.device, self.model.dtype, fused_ops)
        self.attention = attention or _default_attention(self.model, self.device)
        calibrate = getattr(self.attention, "calibrate", None)
        if calibrate is not None:  # auto: the faster decode path for this CPU and model
            calibrate(c.num_attention_heads, c.num_key_value_heads, c.head_dim, self.model.dtype)

    @property
    def attention_name(self) -> str | None:
        return getattr(self.attention, "name", None)

    def execute(self, plan: StepPlan, share: float = 1.0) -> StepResult:
        if not plan.seqs:
            return StepResult(0.0, ())
        longest = max(s.num_context_tokens + s.num_new_tokens for s in plan.seqs)
        limit = self.model.config.max_context_tokens  # a sliding window's attention is full only within it
        if longest > limit:
            raise ValueError(f"a sequence reaches {longest} tokens, past the model's context of {limit} "
                             "(max_position_embeddings, or the sliding window if smaller)")
        start = time.perf_counter()
        with torch.inference_mode():
            slices = [_slice(s) for s in plan.seqs]
            order = self.attention.order(slices)
            ordered = [plan.seqs[i] for i in order]
            meta = self.attention.build([slices[i] for i in order], self.block_size)
            input_ids = self._input_ids(ordered, meta.positions)
            rows, keys = _sample_rows(plan.seqs, ordered)
            logits = self.model(input_ids, meta, self.kv_cache, self.attention,
                                torch.tensor(rows, dtype=torch.long, device=self.device), self.ops)
            temperatures = [self.sampling.temperature if s.temperature is None else s.temperature
                            for s in plan.seqs if s.samples]
            tokens = self._sample(logits, keys, temperatures).tolist()
        return StepResult(time.perf_counter() - start, tuple(tokens))

    def _input_ids(self, ordered: Sequence[ScheduledSeq], positions: torch.Tensor):
        ids: list[int] = []
        for s in ordered:
            if s.token_ids is None:
                ids.extend([-1] * s.num_new_tokens)
            elif len(s.token_ids) != s.num_new_tokens:
                raise ValueError(f"request {s.request_id}: {len(s.token_ids)} token_ids for "
                                 f"{s.num_new_tokens} new tokens")
            else:
                ids.extend(s.token_ids)
        flat = torch.tensor(ids, dtype=torch.long, device=self.device)
        vocab = self.model.config.vocab_size
        if any(s.token_ids is None for s in ordered):
            rids = torch.tensor([s.request_id for s in ordered], device=self.device)
            counts = torch.tensor([s.num_new_tokens for s in ordered], device=self.device)
            made_up = synthetic_token_ids(torch.repeat_interleave(rids, counts), positions, vocab)
            flat = torch.where(flat < 0, made_up, flat)
        if int(flat.max()) >= vocab or int(flat.min()) < 0:
            raise ValueError(f"token id out of range [0, {vocab})")
        return flat

    def _sample(self, logits: torch.Tensor, keys: list[tuple[int, int]], temperatures: list[float]) -> torch.Tensor:
        """Each row greedy at temperature 0, else sampled at its own temperature."""
        hot = [i for i, t in enumerate(temperatures) if t > 0]
        if not hot:
            return greedy(logits)
        rows = torch.tensor(hot, device=logits.device)
        scale = torch.tensor([temperatures[i] for i in hot], device=logits.device).unsqueeze(1)
        probs = torch.softmax(logits[rows].float() / scale, dim=-1)
        # Exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p; E comes
        # from a generator keyed by the token's identity, not by the batch it ran in.
        noise = torch.empty_like(probs)
        gen = torch.Generator(device=probs.device)
        for row, i in enumerate(hot):
            rid, pos = keys[i]
            gen.manual_seed(_mix(self.sampling.seed, rid, pos))
            noise[row].exponential_(generator=gen)
        sampled = (probs / noise).argmax(dim=-1)
        if len(hot) == len(temperatures):
            return sampled
        tokens = greedy(logits)
        tokens[rows] = sampled.to(tokens.dtype)
        return tokens


def greedy(logits: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Row-wise argmax (first index of the maximum, like torch.argmax), in two stages.

    torch.argmax over a 128k vocab is not vectorised on CPU (~3 ms for 32 rows, ~8 ms
    in bf16), while amax is; so find each row's best chunk with amax, then the argmax
    within it. Ties resolve to the lowest index in both stages.
    """
    logits = logits.float()  # amax is ~2x faster on float32 than on bf16 here
    rows, vocab = logits.shape
    main = vocab - vocab % chunk
    if main == 0:
        return logits.argmax(dim=-1)
    blocks = logits[:, :main].view(rows, main // chunk, chunk)
    best_block = blocks.amax(dim=-1).argmax(dim=-1)
    index = best_block * chunk + blocks[torch.arange(rows), best_block].argmax(dim=-1)
    if main < vocab:  # the tail wins only if strictly greater (it has higher indices)
        tail = logits[:, main:]
        tail_max, tail_arg = tail.max(dim=-1)
        better = tail_max > logits.gather(1, index[:, None])[:, 0]
        index = torch.where(better, main + tail_arg, index)
    return index


def _default_attention(model: LlamaModel, device: torch.device):
    """flashinfer on CUDA when importable, else torch SDPA over gathered pages."""
    if device.type == "cuda":
        from engines.torch.flashinfer_backend import FlashInferAttention, flashinfer_available
        if flashinfer_available():
            c = model.config
            return FlashInferAttention(device, c.num_attention_heads, c.num_key_value_heads,
                                       c.head_dim, model.dtype, model.scale)
    return TorchAttention(device)


def _mix(seed: int, request_id: int, position: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + request_id * 0xBF58476D1CE4E5B9 + position) % (1 << 63)


def _slice(s: ScheduledSeq) -> SeqSlice:
    return SeqSlice(s.num_context_tokens, s.num_new_tokens, s.block_ids)


def _sample_rows(seqs: Sequence[ScheduledSeq], ordered: Sequence[ScheduledSeq]):
    """Flat rows of the sampling seqs' last tokens, in PLAN order, and their
    (request_id, position) keys."""
    end, row_end = 0, {}
    for s in ordered:
        end += s.num_new_tokens
        row_end[id(s)] = end - 1
    sampling = [s for s in seqs if s.samples]
    return ([row_end[id(s)] for s in sampling],
            [(s.request_id, s.num_context_tokens + s.num_new_tokens) for s in sampling])
