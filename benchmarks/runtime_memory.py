"""Memory of each design on the real multi-process runtime: PSS summed over processes.

    .venv/bin/python benchmarks/runtime_memory.py [--model small_llama] [--dtype bfloat16]
        [--kv-cache-bytes 268435456] [--out results/runtime_memory.md]

Runs `bench.py executor=torch` for unified, semipd and disagg (1P1D) with a short
synthetic workload (8 requests, 64 in / 16 out) and reads what the run measured at its
end, while every worker was alive (summary.json): the proportional set size (PSS) of the
driver and of each worker process. PSS splits each shared page between the processes that
map it, so the sum counts the shared weights and KV pool once. Each design runs twice,
with the workers' private oneDNN-packed weight copies (executor.pack_weights=true, the
default) and without; the model's weight bytes and one KV pool's bytes are printed beside
them, so "one weight copy and one pool" can be read off the table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = ("unified", "semipd", "disagg")
MIB = 1 << 20


def run(design: str, pack: bool, args, out_dir: Path) -> dict:
    cmd = [sys.executable, "bench.py", f"engine={design}", "executor=torch", f"model={args.model}", "hardware=cpu",
           f"executor.dtype={args.dtype}", f"executor.kv_cache_bytes={args.kv_cache_bytes}",
           f"executor.pack_weights={str(pack).lower()}", "workload=synthetic", "workload.num_requests=8",
           "workload.prompt_len=64", "workload.output_len=16", "workload.rate=inf", "plots=false",
           "progress=false", f"hydra.run.dir={out_dir}"]
    if design == "semipd":
        cmd.append("engine.semipd.controller=static")
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise SystemExit(f"{design}: bench.py failed:\n{res.stderr[-3000:]}")
    return json.loads((out_dir / "summary.json").read_text())


def weight_bytes(model: str, dtype: str) -> int:
    sys.path.insert(0, str(ROOT))
    from sim.specs import get_model
    return get_model(model).num_params() * (2 if dtype == "bfloat16" else 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--kv-cache-bytes", type=int, default=256 * MIB)
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    lines = [f"{args.model}, {args.dtype}: weights {weight_bytes(args.model, args.dtype) / MIB:.0f} MiB, one KV pool "
             f"{args.kv_cache_bytes / MIB:.0f} MiB (PSS in MiB, measured at the end of each run)", "",
             "| design | packed copies | weight copies loaded | processes | PSS total | per process |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for pack in (True, False):
            for design in DESIGNS:
                s = run(design, pack, args, Path(tmp) / f"{design}_{pack}")
                per = ", ".join(f"{k} {v / MIB:.0f}" for k, v in s["memory_pss_bytes"].items())
                lines.append(f"| {design} | {'yes' if pack else 'no'} | {s['num_model_copies_loaded']} | "
                             f"{len(s['memory_pss_bytes'])} | {s['memory_pss_bytes_total'] / MIB:.0f} | {per} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
