"""Where vLLM's time goes: per-category wall time of a decode step. Runs in .venv-vllm.

    VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \
    VLLM_ALLOW_INSECURE_SERIALIZATION=1 .venv-vllm/bin/python benchmarks/peer/vllm_profile.py \
        --model checkpoints/small_llama --prompts PROMPTS.json [--output-len 64]

Eager mode (module hooks do not fire inside a torch.compile'd graph). Timers are installed
in vLLM's worker process by `LLM.collective_rpc(fn)` (fn gets the Worker): forward hooks
on the model's modules and wrappers around the model runner's execute_model/sample_tokens.
As in ours_profile.py, a prefill-only run (max_tokens=1) is subtracted from a full run, so
every number is per DECODE step. Categories are named like ours_profile.py's.
"""
from __future__ import annotations

import argparse
import json
import time

_LEAF = {"embed_tokens": "embed", "input_layernorm": "rmsnorm", "post_attention_layernorm": "rmsnorm",
         "norm": "rmsnorm", "qkv_proj": "qkv_proj", "rotary_emb": "rope", "attn": "attention",
         "o_proj": "o_proj", "self_attn": "_attention_total", "gate_up_proj": "gate_up_proj",
         "act_fn": "act_mul", "down_proj": "down_proj", "mlp": "_mlp_total", "logits_processor": "lm_head"}


def _install(worker):
    """Runs inside vLLM's worker: hooks + method wrappers adding into worker._peer_times."""
    import collections
    import functools
    import time as _time
    runner = worker.model_runner
    model = runner.model
    times = collections.Counter()
    worker._peer_times = times
    starts = {}

    def pre(category):
        def hook(mod, args, kwargs=None):
            starts.setdefault(id(mod), []).append(_time.perf_counter())
        return hook

    def post(category):
        def hook(mod, args, out):
            times[category] += _time.perf_counter() - starts[id(mod)].pop()
        return hook

    def hook(mod, category):
        mod.register_forward_pre_hook(pre(category))
        mod.register_forward_hook(post(category))

    found = collections.Counter()
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        category = _LEAF.get(leaf) if name else None
        if category:
            hook(mod, category)
            found[category] += 1
    if getattr(runner, "sampler", None) is not None:
        hook(runner.sampler, "sampling")
        found["sampling"] += 1

    def wrap(obj, attr, category):
        fn = getattr(obj, attr, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def wrapper(*a, **k):
            t = _time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[category] += _time.perf_counter() - t
        setattr(obj, attr, wrapper)
        found[category] += 1

    # The decoder (model.model) is wrapped by vLLM's compile decorator, whose __call__
    # skips module hooks, so time the top-level forward (LlamaForCausalLM.forward: the
    # decoder, not the logits) through an instance attribute instead.
    wrap(model, "forward", "_forward_total")
    wrap(runner, "execute_model", "_execute_model")
    wrap(runner, "sample_tokens", "_sample_tokens")
    wrap(runner, "_prepare_inputs", "prepare_inputs")
    return dict(found)


def _read(worker, reset):
    t = dict(worker._peer_times)
    if reset:
        worker._peer_times.clear()
    return t


def categories(t: dict, wall: float) -> dict:
    g = lambda k: t.get(k, 0.0)  # noqa: E731
    out = {k: g(k) for k in ("embed", "rmsnorm", "qkv_proj", "rope", "attention", "o_proj",
                             "gate_up_proj", "act_mul", "down_proj", "lm_head", "sampling", "prepare_inputs")}
    out["attn_rest"] = g("_attention_total") - sum(g(k) for k in ("qkv_proj", "rope", "attention", "o_proj"))
    out["mlp_rest"] = g("_mlp_total") - g("gate_up_proj") - g("act_mul") - g("down_proj")
    # norms inside layers are fused with the residual add in vLLM (fused_add_rms_norm).
    out["residual_loop"] = g("_forward_total") - g("_attention_total") - g("_mlp_total") - g("embed") - g("rmsnorm")
    runner = g("_execute_model") + g("_sample_tokens")
    out["runner_rest"] = runner - g("_forward_total") - g("lm_head") - g("sampling") - g("prepare_inputs")
    out["engine_core_frontend"] = wall - runner
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    args = ap.parse_args()
    from vllm import LLM, SamplingParams
    prompts = [{"prompt_token_ids": p} for p in json.loads(open(args.prompts).read())]
    llm = LLM(model=args.model, dtype="bfloat16", enforce_eager=True, seed=0,
              max_model_len=args.max_model_len, enable_prefix_caching=False)
    sp = {n: SamplingParams(max_tokens=n, ignore_eos=True, temperature=0) for n in (1, args.output_len)}

    def run(n):
        t = time.perf_counter()
        llm.generate(prompts, sp[n], use_tqdm=False)
        return time.perf_counter() - t

    run(args.output_len)
    plain = {n: min(run(n) for _ in range(args.repeats)) for n in sp}
    found = llm.collective_rpc(_install)[0]
    per_n = {}
    for n in sp:
        run(n)
        best = None
        for _ in range(args.repeats):
            llm.collective_rpc(_read, args=(True,))
            wall = run(n)
            cats = categories(llm.collective_rpc(_read, args=(False,))[0], wall)
            if best is None or wall < best[0]:
                best = (wall, cats)
        per_n[n] = best
    steps = args.output_len - 1
    (w1, c1), (wn, cn) = per_n[1], per_n[args.output_len]
    result = {"engine": "vllm", "mode": "eager", "model": args.model, "hooks": found,
              "plain_decode_step_ms": 1e3 * (plain[args.output_len] - plain[1]) / steps,
              "plain_prefill_s": plain[1],
              "instrumented_decode_step_ms": 1e3 * (wn - w1) / steps,
              "decode_ms": {k: 1e3 * (cn[k] - c1[k]) / steps for k in cn}}
    print("\n" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
