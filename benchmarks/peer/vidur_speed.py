"""Simulator speed beside Vidur 0.0.26 (microsoft/vidur), in one run on this machine: Vidur's
default workload (Llama-3-8B, H100, TP1, fixed 4,096-token prompts and 512-token outputs,
Poisson 4 req/s, chunked prefill 512, batch cap 128) simulated by both, each as a whole
process (start-up, workload, simulation, result files; plots off), at 10 and at N requests.

    .venv/bin/python benchmarks/peer/vidur_speed.py --vidur-python VENV/bin/python
        [--requests 1000] [--repeats 3] [--work-dir /tmp/vidur_speed] [--out results.md]

Vidur needs its own venv (`python3 -m venv V && V/bin/pip install vidur==0.0.26`). It
downloads operator profiles from a model hub when it starts, which is impossible offline:
this script writes profiles in Vidur's schema into --work-dir (operator times from this
project's roofline of Llama-3-8B on H100, sim/specs.py; they only have to exist, Vidur's
speed does not depend on their values, and nothing is calibrated on them), and runs Vidur
through a small runner that points its downloads at them. Vidur's first run trains its
random-forest predictors (its cache in --work-dir); every timed run is after that (warm).

The runs alternate (ours 10, Vidur 10, ours N, Vidur N, repeated), so machine drift hits
both alike. Reports the median wall time of each and the per-extra-request cost, (median at
N - median at 10) / (N - 10).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

OURS = ["engine=unified_chunked", "engine.chunk_size_tokens=512", "engine.max_num_seqs=128", "hardware=h100_80g",
        "model=llama3_8b", "workload=synthetic", "workload.distribution=fixed", "workload.prompt_len=4096",
        "workload.output_len=512", "workload.rate=4", "plots=false", "progress=false"]
VIDUR = ["--replica_config_tensor_parallel_size", "1", "--replica_config_num_pipeline_stages", "1",
         "--execution_time_predictor_config_type", "random_forrest",
         "--random_forrest_execution_time_predictor_config_prediction_max_tokens_per_request", "16384",
         "--interval_generator_config_type", "poisson", "--poisson_request_interval_generator_config_qps", "4",
         "--no-metrics_config_store_plots"]
VIDUR_MODEL, VIDUR_DEVICE, VIDUR_NETWORK = "meta-llama/Llama-3-8B", "h100", "h100_dgx"
LAUNCH_MS = 0.008  # per-kernel fixed time in the written profiles
# The runner Vidur's python executes: its hub downloads answered from the profile folders.
RUNNER = '''import os, sys, time
import vidur.execution_time_predictor.sklearn_execution_time_predictor as predictor
PROFILES = sys.argv.pop(1)
def local_snapshot(repo_id, repo_type=None, cache_dir=None, **kwargs):
    if "predictions-" in repo_id:  # no published predictions offline: Vidur trains its own
        raise FileNotFoundError(repo_id)
    # Vidur's defaults: project-vajra/dev-staging-meta-llama-llama-3-8b-h100 (compute) and
    # project-vajra/dev-staging-h100-dgx (network)
    return os.path.join(PROFILES, "network" if repo_id.endswith("-dgx") else "compute")
predictor.snapshot_download = local_snapshot
from vidur.main import main
main()
'''


def write_vidur_profiles(root: Path) -> None:
    """Operator profiles of Llama-3-8B on H100 (TP1) in the schema Vidur 0.0.26 reads:
    compute/{mlp,attention}.csv.xz, network/{all_reduce,send_recv}.csv.xz, config.json each.
    Times in ms: max(FLOPs / peak, bytes / bandwidth) + LAUNCH_MS, from sim/specs.py."""
    from sim.specs import get_hardware, get_model
    m, hw = get_model("llama3_8b"), get_hardware("h100_80g")
    flops_s, bytes_s = hw.peak_tflops_bf16 * 1e12, hw.hbm_bandwidth_bytes_s
    h, hq, hkv, f, vocab = m.hidden, m.num_heads, m.num_kv_heads, m.intermediate, m.vocab
    d = h // hq

    def ms(flops: float, nbytes: float) -> float:
        return 1e3 * max(flops / flops_s, nbytes / bytes_s) + LAUNCH_MS

    def gemm(n: int, k: int, out: int) -> float:
        return ms(2 * n * k * out, 2 * (n * k + k * out + n * out))

    def elementwise(n: int, width: int, passes: int = 2) -> float:
        return ms(0, 2 * n * width * passes)

    mlp = [{"n_head": hq, "n_kv_head": hkv, "n_embd": h, "n_expanded_embd": f, "use_gated_mlp": True,
            "vocab_size": vocab, "num_tensor_parallel_workers": 1, "num_tokens": n,
            "time_stats.attn_pre_proj.median": gemm(n, h, (hq + 2 * hkv) * d),
            "time_stats.attn_post_proj.median": gemm(n, h, h),
            "time_stats.mlp_up_proj.median": gemm(n, h, 2 * f),
            "time_stats.mlp_down_proj.median": gemm(n, f, h),
            "time_stats.mlp_act.median": elementwise(n, 3 * f // 2),
            "time_stats.input_layernorm.median": elementwise(n, h),
            "time_stats.post_attention_layernorm.median": elementwise(n, h),
            "time_stats.attn_rope.median": elementwise(n, (hq + hkv) * d),
            "time_stats.add.median": elementwise(n, h, 3)}
           for n in sorted({2 ** i for i in range(15)} | {3 * 2 ** i for i in range(13)})]
    kv_bytes = lambda tokens: 2 * tokens * hkv * d * 2  # noqa: E731 - K and V, bf16
    common = {"n_embd": h, "n_q_head": hq, "n_kv_head": hkv, "block_size": 16, "num_tensor_parallel_workers": 1}
    attention = [dict(common, batch_size=1, prefill_chunk_size=c, kv_cache_size=kv,
                      **{"time_stats.attn_prefill.median": ms(4 * c * (kv + c / 2) * hq * d, kv_bytes(kv + c)),
                         "time_stats.attn_decode.median": 0.0,
                         "time_stats.attn_kv_cache_save.median": ms(0, kv_bytes(c))})
                 for c, kv in itertools.product([2 ** i for i in range(5, 13)], [0] + [2 ** i for i in range(8, 15)])]
    attention += [dict(common, batch_size=b, prefill_chunk_size=0, kv_cache_size=kv,
                       **{"time_stats.attn_prefill.median": 0.0, "time_stats.attn_decode.median": ms(0, b * kv_bytes(kv)),
                          "time_stats.attn_kv_cache_save.median": ms(0, kv_bytes(b))})
                  for b, kv in itertools.product([2 ** i for i in range(8)], [2 ** i for i in range(8, 15)])]
    network = pd.DataFrame([{"collective": c, "devices_per_node": dpn, "num_workers": nw, "size": size,
                             f"time_stats.{c}.median": 1e3 * size / hw.nvlink_bandwidth_bytes_s + 0.01}
                            for c, dpn, nw, size in itertools.product(["all_reduce", "send_recv"], [1, 2, 8], [1, 2, 4, 8],
                                                                       [2 ** i for i in range(10, 31, 2)])])
    compute, net = root / "compute", root / "network"
    compute.mkdir(parents=True, exist_ok=True)
    net.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(mlp).to_csv(compute / "mlp.csv.xz", index=False)
    pd.DataFrame(attention).to_csv(compute / "attention.csv.xz", index=False)
    network.to_csv(net / "all_reduce.csv.xz", index=False)
    network.to_csv(net / "send_recv.csv.xz", index=False)
    (compute / "config.json").write_text(json.dumps({"model": VIDUR_MODEL, "device_sku": VIDUR_DEVICE}))
    (net / "config.json").write_text(json.dumps({"sku": VIDUR_NETWORK}))


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"vidur_speed: {' '.join(cmd[:4])} ... failed (exit {res.returncode}):\n"
                         + (res.stdout + res.stderr)[-3000:])
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vidur-python", required=True, type=Path, help="python of a venv with vidur==0.0.26")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "vidur_speed")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    if not args.vidur_python.is_file():
        print(f"vidur_speed: --vidur-python {args.vidur_python} is not a file", file=sys.stderr)
        return 2
    if args.requests <= 10 or args.repeats < 1:
        print("vidur_speed: --requests must be > 10 and --repeats >= 1", file=sys.stderr)
        return 2
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    write_vidur_profiles(work / "profiles")
    (work / "run_vidur.py").write_text(RUNNER)

    def vidur(n: int) -> list[str]:
        return [str(args.vidur_python), "run_vidur.py", str(work / "profiles"), *VIDUR,
                "--random_forrest_execution_time_predictor_config_cache_dir", str(work / "cache_rf"),
                "--synthetic_request_generator_config_num_requests", str(n), "--metrics_config_output_dir",
                str(work / "vidur_out")]

    def ours(n: int) -> list[str]:
        return [sys.executable, str(ROOT / "bench.py"), *OURS, f"workload.num_requests={n}",
                f"hydra.run.dir={work / 'ours_out' / str(n)}"]

    print("vidur_speed: Vidur's first run (trains its predictors) ...", flush=True)
    timed(vidur(10), work)
    walls: dict[tuple[str, int], list[float]] = {}
    for r in range(args.repeats):
        for n in (10, args.requests):
            for name, cmd in (("ours", ours(n)), ("vidur", vidur(n))):
                walls.setdefault((name, n), []).append(timed(cmd, work))
        print(f"vidur_speed: round {r + 1}/{args.repeats} done", flush=True)
    rows = []
    for name, label in (("vidur", "Vidur 0.0.26 (predictor cache warm)"), ("ours", "ours")):
        small, big = (statistics.median(walls[(name, n)]) for n in (10, args.requests))
        rows.append({"": label, f"whole process, {args.requests:,} req (s)": round(big, 2),
                     "whole process, 10 req (s)": round(small, 2),
                     "per extra request (ms)": round(1e3 * (big - small) / (args.requests - 10), 3)})
    table = pd.DataFrame(rows)
    ratio = rows[0]["per extra request (ms)"] / rows[1]["per extra request (ms)"]
    header = "| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))
    text = (f"medians of {args.repeats} alternating runs each; "
            f"per extra request: Vidur / ours = {ratio:.1f}x\n\n" + header + body)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\nall runs (s): " + json.dumps({f"{k[0]} {k[1]}": v for k, v in walls.items()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
