"""Profile the decode-step gap between ours and vLLM (eager) on one model.

    .venv/bin/python benchmarks/peer/profile_gap.py [--model small_llama] [--output-len 64]

Runs ours_profile.py (.venv) and vllm_profile.py (.venv-vllm) one after the other on the
same checkpoint and prompts as offline.py (32 x 128 in, 64 out, bf16, 2 threads) and
prints ms per decode step by category, side by side. Also writes ours' top aten ops
(torch.profiler) to results/peer/profile_<stamp>_ours_ops.txt.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import HERE, OURS_PY, ROOT, VLLM_PY, ensure_checkpoint, make_prompts, run_json, vllm_env  # noqa: E402

# (row label, ours categories, vLLM categories)
ROWS = [
    ("embedding", ["embed"], ["embed"]),
    ("RMSNorm incl. the residual add before it", ["rmsnorm"], ["rmsnorm"]),
    ("QKV projection", ["qkv_proj"], ["qkv_proj"]),
    ("RoPE", ["rope"], ["rope"]),
    ("attention incl. KV-cache write", ["kv_write", "attention"], ["attention"]),
    ("attention glue (views, reshapes)", ["attn_rest"], ["attn_rest"]),
    ("O projection", ["o_proj"], ["o_proj"]),
    ("gate/up projection", ["gate_up_proj"], ["gate_up_proj"]),
    ("SiLU * up", ["act_mul"], ["act_mul", "mlp_rest"]),
    ("down projection", ["down_proj"], ["down_proj"]),
    ("residual adds + layer loop", ["residual_loop"], ["residual_loop"]),
    ("LM head (final norm + logits)", ["lm_head"], ["lm_head"]),
    ("sampling (greedy)", ["sampling"], ["sampling"]),
    ("step inputs / metadata / runner", ["metadata", "input_ids", "executor_rest"], ["prepare_inputs", "runner_rest"]),
    ("scheduler + engine loop (+ vLLM IPC, detokenize)", ["scheduler_python"], ["engine_core_frontend"]),
]
GROUPS = [("all linear layers (4 per layer)", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
          ("attention total", ["attention", "kv_write", "attn_rest", "rope"]),
          ("outside the model forward", ["sampling", "metadata", "input_ids", "executor_rest", "prepare_inputs",
                                         "runner_rest", "scheduler_python", "engine_core_frontend"])]


def render(ours: dict, vllm: dict, model: str) -> str:
    o, v = ours["decode_ms"], vllm["decode_ms"]
    s = lambda d, ks: sum(d.get(k, 0.0) for k in ks)  # noqa: E731
    lines = [f"Decode step, {model}, batch 32, context 128-192, bf16, 2 threads (ms per step; "
             "instrumented runs, decode = (T(64 tokens) - T(1 token)) / 63)", "",
             "| category | ours | vLLM eager | ours - vLLM |", "|---|---|---|---|"]
    for label, ko, kv in ROWS:
        a, b = s(o, ko), s(v, kv)
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    a, b = sum(o.values()), sum(v.values())
    lines.append(f"| **sum (instrumented step)** | **{a:.2f}** | **{b:.2f}** | **{a - b:+.2f}** |")
    lines.append(f"| un-instrumented decode step | {ours['plain_decode_step_ms']:.2f} | "
                 f"{vllm['plain_decode_step_ms']:.2f} | "
                 f"{ours['plain_decode_step_ms'] - vllm['plain_decode_step_ms']:+.2f} |")
    lines += ["", "| group | ours | vLLM eager |", "|---|---|---|"]
    for label, keys in GROUPS:
        lines.append(f"| {label} | {s(o, keys):.2f} | {s(v, keys):.2f} |")
    lines.append(f"| prefill of 32 x 128 tokens (whole step, s) | {ours['plain_prefill_s']:.3f} | "
                 f"{vllm['plain_prefill_s']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-wait-idle-s", type=float, default=600)
    args = ap.parse_args()
    out = ROOT / "results" / "peer"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    prompts = make_prompts(32, 128, 0, out / f"profile_{stamp}_prompts.json")
    ckpt = ensure_checkpoint(args.model)
    common = ["--model", str(ckpt), "--prompts", str(prompts), "--output-len", str(args.output_len)]
    print("vLLM (eager, hooks) ...", flush=True)
    env = {**vllm_env(), "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}  # collective_rpc(fn) pickles fn
    vllm = run_json([str(VLLM_PY), str(HERE / "vllm_profile.py"), *common], env, 1800,
                    out / f"profile_{stamp}_vllm.log", args.max_wait_idle_s)
    print("ours (timers) ...", flush=True)
    ours = run_json([str(OURS_PY), str(HERE / "ours_profile.py"), *common, "--torch-profile", "1"], None, 1800,
                    out / f"profile_{stamp}_ours.log", args.max_wait_idle_s)
    text = render(ours, vllm, args.model)
    text += f"\n\nother load during the runs: ours {100 * ours['other_load']:.0f}%, vLLM {100 * vllm['other_load']:.0f}%"
    print(text)
    (out / f"profile_{stamp}.md").write_text(text + "\n")
    (out / f"profile_{stamp}.json").write_text(json.dumps({"ours": ours, "vllm": vllm}, indent=1))
    print(f"wrote {out}/profile_{stamp}.{{md,json}}; ours' aten ops in profile_{stamp}_ours.log")


if __name__ == "__main__":
    main()
