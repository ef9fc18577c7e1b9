"""Where OUR engine's time goes: per-category wall time of a decode step.

    .venv/bin/python benchmarks/peer/ours_profile.py --model checkpoints/small_llama \
        --prompts PROMPTS.json [--output-len 64] [--torch-profile 1]

Same setup as ours_offline.py (real scheduler, chunked prefill, 32 x 128 in, 64 out). The
model's functions are wrapped IN THIS PROCESS ONLY (engines/ is not edited) with
perf_counter timers (CPU ops are synchronous); a run with output_len=1 (prefill only) is
subtracted from a run with output_len, so the result is per DECODE step:
    (T(output_len) - T(1)) / (output_len - 1)  for every category.
Categories: embed, rmsnorm, qkv_proj, rope, kv_write, attention, o_proj, attn_rest,
gate_up_proj, act_mul, down_proj, residual_loop, lm_head, sampling, metadata, input_ids,
executor_rest, scheduler_python. Prints one JSON object; with --torch-profile also the
top aten ops of the decode steps (torch.profiler), to stderr.
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import engines.torch.executor as ex_mod  # noqa: E402
import engines.torch.model as model_mod  # noqa: E402
from engines.scheduler import SchedulerConfig  # noqa: E402
from engines.torch.checkpoint import load_model  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.torch.fused import FusedOps, TorchOps  # noqa: E402
from engines.torch.paged_attention import TorchAttention  # noqa: E402
from ours_offline import generate  # noqa: E402

TIMES: collections.Counter = collections.Counter()


def timed(category, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[category] += time.perf_counter() - t
    return wrapper


def instrument() -> None:
    m = model_mod
    orig_linear = m.linear

    def linear(module, name, x):
        t = time.perf_counter()
        try:
            return orig_linear(module, name, x)
        finally:
            TIMES[name] += time.perf_counter() - t
    m.linear = linear
    for ops in (FusedOps, TorchOps):  # the executor's elementwise ops, whichever it uses
        ops.rms_norm = staticmethod(timed("rmsnorm", ops.rms_norm))
        ops.add_rms_norm = staticmethod(timed("rmsnorm", ops.add_rms_norm))  # incl. the residual add
        ops.rope = staticmethod(timed("rope", ops.rope))
        ops.silu_and_mul = staticmethod(timed("act_mul", ops.silu_and_mul))
    m.cos_sin = timed("rope_cos_sin", m.cos_sin)
    m.write_kv = timed("kv_write", m.write_kv)
    TorchAttention.attend = timed("attention", TorchAttention.attend)
    TorchAttention.build = timed("metadata", TorchAttention.build)
    m.F = _Embedding(m.F)
    m.LlamaModel._attention = timed("_attention_total", m.LlamaModel._attention)
    m.LlamaModel.forward = timed("_forward_total", m.LlamaModel.forward)
    ex_mod.greedy = timed("sampling", ex_mod.greedy)
    TorchExecutor._input_ids = timed("input_ids", TorchExecutor._input_ids)
    TorchExecutor.execute = timed("_execute_total", TorchExecutor.execute)


class _Embedding:
    """torch.nn.functional with a timed `embedding` (the model calls F.embedding)."""

    def __init__(self, f):
        self._f = f
        self.embedding = timed("embed", f.embedding)

    def __getattr__(self, name):
        return getattr(self._f, name)


def categories(t: dict, wall: float) -> dict:
    """Exclusive categories from the (partly nested) timers."""
    g = lambda k: t.get(k, 0.0)  # noqa: E731
    out = {k: g(k) for k in ("embed", "rmsnorm", "qkv_proj", "kv_write", "attention", "o_proj",
                             "gate_up_proj", "act_mul", "down_proj", "lm_head", "sampling", "metadata",
                             "input_ids")}
    out["rope"] = g("rope") + g("rope_cos_sin")  # apply_rope per layer + cos/sin once per step
    out["attn_rest"] = g("_attention_total") - sum(g(k) for k in ("qkv_proj", "rope", "kv_write",
                                                                  "attention", "o_proj"))
    out["residual_loop"] = (g("_forward_total") - g("_attention_total") - g("gate_up_proj") - g("act_mul")
                            - g("down_proj") - g("embed") - g("rmsnorm") - g("lm_head") - g("rope_cos_sin"))
    out["executor_rest"] = (g("_execute_total") - g("_forward_total") - g("sampling") - g("metadata")
                            - g("input_ids"))
    out["scheduler_python"] = wall - g("_execute_total")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-profile", type=int, default=0)
    args = ap.parse_args()
    prompts = json.loads(Path(args.prompts).read_text())
    dtype = torch.bfloat16
    model = load_model(args.model, dtype=dtype)
    bs = 16
    num_blocks = len(prompts) * -(-(max(map(len, prompts)) + args.output_len) // bs) + 16
    executor = TorchExecutor(model, num_blocks=num_blocks, block_size=bs, dtype=dtype, threads=args.threads)
    cfg = SchedulerConfig(max_num_batched_tokens=4096, max_num_seqs=256, chunked_prefill=True)
    run = lambda n: generate(executor, prompts, n, cfg, num_blocks, bs)  # noqa: E731

    # Un-instrumented reference first.
    run(args.output_len)
    plain = {n: min(run(n)[0] for _ in range(args.repeats)) for n in (1, args.output_len)}
    instrument()
    per_n = {}
    for n in (1, args.output_len):
        run(n)
        best = None
        for _ in range(args.repeats):
            TIMES.clear()
            wall = run(n)[0]
            cats = categories(dict(TIMES), wall)
            if best is None or wall < best[0]:
                best = (wall, cats)
        per_n[n] = best
    steps = args.output_len - 1
    (w1, c1), (wn, cn) = per_n[1], per_n[args.output_len]
    decode = {k: 1e3 * (cn[k] - c1[k]) / steps for k in cn}
    result = {"engine": "ours", "model": args.model,
              "plain_decode_step_ms": 1e3 * (plain[args.output_len] - plain[1]) / steps,
              "plain_prefill_s": plain[1],
              "instrumented_decode_step_ms": 1e3 * (wn - w1) / steps,
              "decode_ms": decode}
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile
        run(args.output_len)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(args.output_len)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
