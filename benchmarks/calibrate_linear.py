"""Calibrate the cost model's GEMM, elementwise and all-reduce constants on Vidur profiles.

Usage: python benchmarks/calibrate_linear.py --profiles PATH [--out CSV]

Data: Vidur's measured per-layer operator times (microsoft/vidur, MIT), A100-80GB and
H100, Llama-2-7b / Llama-2-70b / CodeLlama-34b, TP 1/2/4/8, 1-4096 tokens (fp16).
For each GPU it fits, by least squares on log(predicted / measured) over every row:
  GEMM:        compute_efficiency_max, compute_efficiency_half_tokens,
               bandwidth_efficiency, kernel_floor_s   (sim.cost_model.linear_time_s)
  elementwise: elementwise_bandwidth_efficiency        (RMSNorm, RoPE, SiLU-mul, add)
  all-reduce:  link_efficiency, interconnect_latency_s (ring formula, 2-GPU NVLink pair)
then predicts every row with the cost model's own function, writes them to --out and
prints the median absolute % error per (gpu, model, tp, op) and overall. The printed
constants are copied into conf/hardware/<gpu>.yaml by hand (the project never reads these files).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sim.cost_model import linear_time_s  # noqa: E402
from sim.specs import get_hardware  # noqa: E402

GPUS = {"a100": "a100_80g", "h100": "h100_80g"}
MODELS = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf",
          "codellama/CodeLlama-34b-Instruct-hf")
OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
# Vidur profiled GPUs in NVLink-bridged pairs (the 4-GPU rows cross PCIe): the bridge
# carries 600 GB/s total on both A100 and H100, 300 GB/s each way.
PAIR_LINK_BYTES_S = 300e9
FP16_BYTES = 2


def nelder_mead(f, x0, steps, iters=600):
    """Minimise f from x0 (plain Nelder-Mead; the repo does not depend on scipy)."""
    pts = [np.asarray(x0, float)] + [np.asarray(x0, float) + np.eye(len(x0))[i] * s
                                     for i, s in enumerate(steps)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        centroid = np.mean(pts[:-1], axis=0)
        refl = centroid + (centroid - pts[-1])
        fr = f(refl)
        if fr < vals[0]:
            exp = centroid + 2 * (centroid - pts[-1])
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = centroid + 0.5 * (pts[-1] - centroid)
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [f(p) for p in pts]
    return pts[int(np.argmin(vals))]


def load_rows(profiles: Path, gpu: str) -> pd.DataFrame:
    """One row per (model, tokens, tp, op) with the GEMM's (k, n) on one GPU."""
    rows = []
    for model in MODELS:
        raw = pd.read_csv(profiles / "compute" / gpu / model / "mlp.csv")
        df = raw.groupby(["num_tokens", "num_tensor_parallel_workers"],
                         as_index=False).median(numeric_only=True)  # a few duplicate rows
        r, name = df.iloc[0], model.split("/")[1].removesuffix("-hf")
        h, heads, kv, inter = r.n_embd, r.n_head, r.n_kv_head, r.n_expanded_embd
        hd = h / heads
        for tp, part in df.groupby("num_tensor_parallel_workers"):
            kv_tp = max(1.0, kv / tp)
            shapes = {"attn_pre_proj": (h, (heads / tp + 2 * kv_tp) * hd),
                      "attn_post_proj": (h / tp, h), "mlp_up_proj": (h, 2 * inter / tp),
                      "mlp_down_proj": (inter / tp, h)}
            # Unfused elementwise ops as Vidur timed them: elements read+written per token.
            # (Vidur's separate residual `add` is left out: vLLM fuses it into the norm,
            # and the cost model counts it there.)
            elem = {"input_layernorm": 2 * h, "post_attention_layernorm": 2 * h,
                    "attn_rope": 2 * (heads / tp + kv_tp) * hd,
                    "mlp_act": 3 * inter / tp}
            for op, (k, n) in shapes.items():
                rows.append(part.assign(model=name, op=op, k=k, n=n, elems=np.nan))
            for op, e in elem.items():
                rows.append(part.assign(model=name, op=op, k=np.nan, n=np.nan, elems=e))
    out = pd.concat(rows, ignore_index=True)
    out["measured_s"] = [r[f"time_stats.{r.op}.median"] * 1e-3 for _, r in out.iterrows()]
    out = out.rename(columns={"num_tokens": "tokens", "num_tensor_parallel_workers": "tp"})
    return out[["model", "tp", "op", "tokens", "k", "n", "elems", "measured_s"]]


def gemm_vec(x, m, k, n, hw):
    """Vectorised mirror of sim.cost_model._gemm_s for fitting (checked against it below)."""
    eff_max, half, eff_bw, floor = np.exp(x)
    compute = 2 * k * n * (m + half) / (hw.peak_flops_s * eff_max)
    memory = (k * n + (k + n) * m) * FP16_BYTES / (hw.hbm_bandwidth_bytes_s * eff_bw)
    return np.maximum(compute, memory) + floor


def fit_gemm(g: pd.DataFrame, hw):
    m, k, n, t = (g[c].to_numpy(float) for c in ("tokens", "k", "n", "measured_s"))
    loss = lambda x: float(np.sum(np.log(gemm_vec(x, m, k, n, hw) / t) ** 2))  # noqa: E731
    x = nelder_mead(loss, np.log([0.7, 40.0, 0.75, 4e-6]), [0.2, 0.5, 0.2, 0.5])
    eff_max, half, eff_bw, floor = np.exp(x)
    return dataclasses.replace(hw, compute_efficiency_max=round(eff_max, 3),
                               compute_efficiency_half_tokens=round(half, 1),
                               bandwidth_efficiency=round(eff_bw, 3),
                               kernel_floor_s=float(f"{floor:.2e}"))


def fit_elementwise(e: pd.DataFrame, hw) -> float:
    by, t = e.elems.to_numpy() * e.tokens.to_numpy() * FP16_BYTES, e.measured_s.to_numpy()
    def pred(x):
        return by / (hw.hbm_bandwidth_bytes_s * np.exp(x[0])) + hw.kernel_floor_s

    x = nelder_mead(lambda x: float(np.sum(np.log(pred(x) / t) ** 2)), [np.log(0.5)], [0.3])
    return round(float(np.exp(x[0])), 3)


def predict(df: pd.DataFrame, hw) -> pd.DataFrame:
    g = df[df.k.notna()].copy()
    g["predicted_s"] = [linear_time_s(r.tokens, r.k, r.n, FP16_BYTES, hw)
                        for r in g.itertuples()]
    e = df[df.k.isna()].copy()
    e["predicted_s"] = (e.elems * e.tokens * FP16_BYTES
                        / (hw.hbm_bandwidth_bytes_s * hw.elementwise_bandwidth_efficiency)
                        + hw.kernel_floor_s)
    out = pd.concat([g, e])
    out["err_pct"] = 100 * (out.predicted_s / out.measured_s - 1)
    return out


def fit_all_reduce(profiles: Path, gpu: str) -> tuple[float, float]:
    raw = pd.read_csv(profiles / "network" / f"{gpu}_pairwise_nvlink" / "all_reduce.csv")
    df = raw.groupby(["num_workers", "size"], as_index=False)["time_stats.all_reduce.median"]\
        .median().rename(columns={"time_stats.all_reduce.median": "ms"})
    print(f"\n== all_reduce {gpu}: is `size` elements or bytes? (ring bus bandwidth at "
          "the largest size; a GPU pair's bridge carries 300 GB/s each way, PCIe 4/5 "
          "x16 ~25/50 GB/s)")
    for w, part in df.groupby("num_workers"):
        big = part.iloc[-1]
        bus = 2 * (w - 1) / w * big["size"] / (big.ms * 1e-3) / 1e9
        print(f"  {w} GPUs: {bus:.0f} GB/s if bytes, {2 * bus:.0f} GB/s if fp16 elements")
    print("  -> bytes: as elements the pair would beat its 300 GB/s link and the 4-GPU "
          "rings (over PCIe) would run at 2x PCIe speed.")
    # Fit where TP messages live (tokens x hidden x 2 B <= 64 MiB): above that NCCL's
    # asymptotic bandwidth is higher than what the small messages see.
    pair = df[(df.num_workers == 2) & (df["size"] <= 64 * 2**20)]
    size, t = pair["size"].to_numpy(float), pair.ms.to_numpy() * 1e-3
    def pred(x):  # ring with 2 GPUs: 2(n-1)/n = 1
        return np.exp(x[0]) + size / (PAIR_LINK_BYTES_S * np.exp(x[1]))

    x = nelder_mead(lambda x: float(np.sum(np.log(pred(x) / t) ** 2)),
                    np.log([1e-5, 0.6]), [0.5, 0.3])
    err = np.abs(pred(x) / t - 1) * 100
    mid = size >= 2**20
    print(f"  fit (2-GPU pair, ring, sizes <= 64 MiB): latency {np.exp(x[0]) * 1e6:.1f} us, "
          f"link efficiency {np.exp(x[1]):.3f}; median |err| {np.median(err):.1f} % "
          f"({np.median(err[mid]):.1f} % for 1-64 MiB)")
    return float(np.exp(x[0])), float(np.exp(x[1]))


def summarise(pred: pd.DataFrame) -> None:
    sel = pred[(pred.tokens >= 64) & pred.tp.isin([1, 4]) & pred.op.isin(OPS)]
    sel = sel.assign(abs_err=sel.err_pct.abs())
    table = sel.pivot_table(index=["gpu", "model", "tp"], columns="op", values="abs_err",
                            aggfunc="median").round(1)
    print("\n== median |error| %, GEMMs, tokens >= 64, TP1 and TP4")
    print(table[list(OPS)].to_string())
    print("\nby gpu:", sel.groupby("gpu").abs_err.median().round(1).to_dict(),
          " by tp:", sel.groupby("tp").abs_err.median().round(1).to_dict())
    print(f"OVERALL median |error| (tokens >= 64, TP1+TP4): {sel.abs_err.median():.1f} %"
          f"   (p90 {sel.abs_err.quantile(0.9):.1f} %)")
    allg = pred[pred.op.isin(OPS)].err_pct.abs()
    elem = pred[~pred.op.isin(OPS) & (pred.tokens >= 64)].err_pct.abs()
    print(f"all GEMM rows (every TP, 1-4096 tokens): {allg.median():.1f} %; "
          f"elementwise rows >= 64 tokens: {elem.median():.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=Path, required=True,
                    help="Vidur's profiling data directory (microsoft/vidur `data/profiling`: "
                         "compute/<gpu>/<model>/mlp.csv and network/.../all_reduce.csv)")
    ap.add_argument("--out", type=Path, default=REPO / "results/calibration/linear.csv")
    args = ap.parse_args()
    preds = []
    if not (args.profiles / "compute").is_dir():
        raise SystemExit(f"error: --profiles {args.profiles}: no compute/ directory (expected Vidur's "
                         "data/profiling layout: compute/<gpu>/<model>/mlp.csv)")
    for gpu, hw_name in GPUS.items():
        df = load_rows(args.profiles, gpu)
        hw = fit_gemm(df[df.k.notna()], get_hardware(hw_name))
        hw = dataclasses.replace(hw, elementwise_bandwidth_efficiency=fit_elementwise(
            df[df.k.isna() & (df.tokens >= 64)], hw))
        latency_s, link_eff = fit_all_reduce(args.profiles, gpu)
        print(f"\n== fitted constants for {hw_name} (copy into conf/hardware/{hw_name}.yaml):\n"
              f"  compute_efficiency_max={hw.compute_efficiency_max}, "
              f"compute_efficiency_half_tokens={hw.compute_efficiency_half_tokens},\n"
              f"  bandwidth_efficiency={hw.bandwidth_efficiency}, "
              f"elementwise_bandwidth_efficiency={hw.elementwise_bandwidth_efficiency},\n"
              f"  kernel_floor_s={hw.kernel_floor_s}, link_efficiency={link_eff:.3f}, "
              f"interconnect_latency_s={latency_s:.2e}")
        g = df[df.k.notna()]
        vec = gemm_vec(np.log([hw.compute_efficiency_max, hw.compute_efficiency_half_tokens,
                               hw.bandwidth_efficiency, hw.kernel_floor_s]),
                       g.tokens.to_numpy(float), g.k.to_numpy(), g.n.to_numpy(), hw)
        p = predict(df, hw).assign(gpu=gpu)
        assert np.allclose(p[p.k.notna()].predicted_s.to_numpy(), vec), "mirror drifted"
        preds.append(p)
    pred = pd.concat(preds, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pred.to_csv(args.out, index=False)
    print(f"\nwrote {len(pred)} rows (predicted vs measured) to {args.out}")
    summarise(pred)


if __name__ == "__main__":
    main()
