"""Every design on the real engine over a rate sweep, with the simulator's prediction beside it.

    .venv/bin/python benchmarks/real_designs.py [--model small_llama] [--rates 1,2,3,4]
        [--num-requests 60] [--slo cpu_small_llama_sharegpt_tight] [--out DIR]
    .venv/bin/python benchmarks/real_designs.py --single-request   # the SLOs' basis

Designs (conf/engine): unified (vLLM-D), unified_chunked (vLLM-S), disagg 1P1D (DistServe),
semipd static (50, 50), semipd static (100, 100), semipd slo_code (the controller).
Each (design, rate) runs twice through harness.run on the same ShareGPT-like workload
(seed 0) and SLO: `executor=torch` (worker processes on this machine's cores) and
`executor=sim hardware=cpu` (the cost model's prediction; uncalibrated for this CPU, its
accuracy is measured elsewhere). Rates are per machine: every design gets the same cores,
so a 1P1D pair (two instances, one core each on 2 cores) gets the same total rate as one
unified instance (`workload.rate` is per instance, so it is divided by the instances).
Goodput = the highest swept rate whose SLO attainment (both TTFT and TPOT met) is >= 90 %,
as in the semi-PD paper's evaluation. Writes DIR/results.csv, DIR/compare.png (attainment,
P90 TTFT and P90 TPOT against rate; real solid, simulated dashed) and DIR/README.md.

--single-request runs unified with requests one at a time (0.1 req/s, 10 requests) and
prints mean TTFT and TPOT: the paper sets its SLOs at ~7.5x (tight) and ~10x (loose) the
single-request latency (arXiv 2504.19867, Sec. 6.1).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.goodput import compose  # noqa: E402
from harness.run import run  # noqa: E402

DESIGNS = {  # label -> overrides
    "unified (vLLM-D)": ["engine=unified"],
    "unified_chunked (vLLM-S)": ["engine=unified_chunked"],
    "disagg 1P1D": ["engine=disagg"],
    "semipd static (50,50)": ["engine=semipd", "engine.semipd.controller=static",
                              "engine.semipd.prefill_share_pct=50", "engine.semipd.decode_share_pct=50"],
    "semipd static (100,100)": ["engine=semipd", "engine.semipd.controller=static"],
    "semipd slo_code": ["engine=semipd", "engine.semipd.controller=slo_code", "engine.semipd.window_requests=10"],
}
INSTANCES = {"disagg 1P1D": 2}
TARGET = 0.9


def common(args) -> list[str]:
    return [f"model={args.model}", "hardware=cpu", "workload=synthetic", "workload.distribution=sharegpt_like",
            f"workload.num_requests={args.num_requests}", "workload.seed=0", f"executor.dtype={args.dtype}",
            "plots=false", "progress=false"]


def one(args, label: str, executor: str, rate: float, out: Path) -> dict:
    per_instance = rate / INSTANCES.get(label, 1)
    overrides = common(args) + DESIGNS[label] + [f"slo={args.slo}", f"executor={executor}",
                                                 f"workload.rate={per_instance}"]
    if executor == "sim" and label.startswith("disagg"):  # the CPU spec has no GPU-GPU link;
        overrides.append("engine.kv_link=pcie")  # the real copy is a memcpy in host memory
    start = time.perf_counter()
    s = run(compose(overrides), out / f"{executor}_{label.split()[0]}_{label.split()[-1]}_r{rate:g}".replace(",", "_")
            .replace("(", "").replace(")", "")).summary
    print(f"  {executor:5s} {label:26s} rate {rate:g}: attainment {s['slo_attainment']:.2f}, TTFT p90 "
          f"{s['ttft_s']['p90']:.3f} s, TPOT p90 {s['tpot_s']['p90']:.3f} s ({time.perf_counter() - start:.0f} s)",
          flush=True)
    return {"design": label, "executor": executor, "rate": rate, "attainment": s["slo_attainment"],
            "ttft_p90_s": s["ttft_s"]["p90"], "tpot_p90_s": s["tpot_s"]["p90"],
            "output_tok_s": s["output_throughput_tok_s"], "finished": s["num_finished"],
            "requests": s["num_requests"], "final_shares": s.get("final_shares_pct"),
            "memory_pss_mib": (s.get("memory_pss_bytes_total") or 0) / 2**20 or None}


def goodput(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (design, executor), g in frame.groupby(["design", "executor"], sort=False):
        ok = g[g["attainment"] >= TARGET]["rate"]
        best = ok.max() if len(ok) else 0.0
        # The top swept rate met: the goodput is at least that (the sweep did not find the limit).
        text = f">= {best:g}" if len(ok) and best == g["rate"].max() else f"{best:g}"
        rows.append({"design": design, "executor": executor, "goodput": text})
    return pd.DataFrame(rows).pivot(index="design", columns="executor", values="goodput").reindex(list(DESIGNS))


def markdown(frame: pd.DataFrame) -> str:
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, col, name in zip(axes, ("attainment", "ttft_p90_s", "tpot_p90_s"),
                             ("SLO attainment", "P90 TTFT (s)", "P90 TPOT (s)")):
        for i, design in enumerate(DESIGNS):
            for executor, style in (("torch", "-o"), ("sim", "--x")):
                g = frame[(frame["design"] == design) & (frame["executor"] == executor)]
                ax.plot(g["rate"], g[col], style, color=f"C{i}", label=f"{design} ({'real' if executor == 'torch' else 'sim'})")
        ax.set_xlabel("requests/s (whole machine)")
        ax.set_title(name)
    axes[0].axhline(TARGET, color="grey", lw=0.8)
    axes[0].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def single_request(args) -> None:
    overrides = common(args) + ["engine=unified", "executor=torch", "workload.rate=0.1",
                                "workload.num_requests=10"]
    s = run(compose(overrides), Path(args.out or "results/real_designs") / "single_request").summary
    ttft, tpot = s["ttft_s"]["mean"], s["tpot_s"]["mean"]
    print(f"single-request latency, {args.model} {args.dtype}, ShareGPT-like (10 requests, one at a time): "
          f"TTFT mean {ttft:.3f} s, TPOT mean {tpot:.4f} s; x7.5 (tight): {7.5 * ttft:.3f} / {7.5 * tpot:.4f} s; "
          f"x10 (loose): {10 * ttft:.3f} / {10 * tpot:.4f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rates", default="1,2,3,4")
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--slo", default="cpu_small_llama_sharegpt_tight")
    ap.add_argument("--designs", default=";".join(DESIGNS), help="labels, separated by ';'")
    ap.add_argument("--executors", default="torch,sim")
    ap.add_argument("--single-request", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.single_request:
        return single_request(args)
    out = Path(args.out or f"results/real_designs/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    out.mkdir(parents=True, exist_ok=True)
    done = out / "results.csv"  # an interrupted sweep resumes where it stopped
    rows = pd.read_csv(done).to_dict("records") if done.exists() else []
    have = {(r["design"], r["executor"], float(r["rate"])) for r in rows}
    for rate in [float(r) for r in args.rates.split(",")]:
        for label in [d for d in DESIGNS if d in args.designs.split(";")]:
            for executor in args.executors.split(","):
                if (label, executor, rate) in have:
                    continue
                rows.append(one(args, label, executor, rate, out))
                pd.DataFrame(rows).to_csv(out / "results.csv", index=False)  # keep what finished
    frame = pd.DataFrame(rows)
    title = f"{args.model} {args.dtype}, ShareGPT-like x {args.num_requests}, SLO {args.slo}"
    plot(frame, out / "compare.png", title)
    table = markdown(goodput(frame).reset_index())
    (out / "README.md").write_text(f"# {title}\n\nGoodput (req/s, highest swept rate with >= 90 % attainment)\n\n"
                                   f"{table}\n\n{markdown(frame)}\n")
    print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
