"""Load every run of the paper suite into one flat table (one row per run directory)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

_LATENCY = ("ttft_s", "tpot_s", "e2e_s")


def load_runs(root: str | Path) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(root).rglob("summary.json")):
        s = json.loads(path.read_text())
        row = {"run": str(path.parent), "tag": s.get("tag") or path.parent.parent.name,
               "engine": s.get("engine"), "label": s.get("engine_label") or s.get("engine"),
               "shape": s.get("engine_shape"), "model": s.get("model"), "hardware": s.get("hardware"),
               "workload": s.get("workload"), "workload_source": s.get("workload_source"),
               "rate": s.get("rate_per_gpu"), "rate_unit": s.get("rate_unit", "gpu"),
               "num_gpus": s.get("num_gpus"), "num_requests": s.get("num_requests"),
               "num_finished": s.get("num_finished"), "num_rejected": s.get("num_rejected"),
               "slo_ttft_s": (s.get("slo") or {}).get("ttft_s"), "slo_tpot_s": (s.get("slo") or {}).get("tpot_s"),
               "attainment": s.get("slo_attainment"), "num_preemptions": s.get("num_preemptions"),
               "controller": s.get("controller"), "final_shares": s.get("final_shares_pct"),
               "kv_pools": s.get("kv_pools") or {}}
        for metric in _LATENCY:
            for q in ("mean", "p90", "p99"):
                row[f"{q}_{metric}"] = (s.get(metric) or {}).get(q)
        rows.append(row)
    return pd.DataFrame(rows)


def kv_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, KV pool): the pool's role, peak and time-averaged use."""
    out = []
    for _, r in runs.iterrows():
        for pool, st in r["kv_pools"].items():
            role = "decode" if "decode" in pool else "prefill" if "prefill" in pool else "shared"
            out.append({"tag": r["tag"], "label": r["label"], "rate": r["rate"], "pool": pool, "role": role,
                        "peak_used": st.get("peak_used_fraction"), "mean_used": st.get("mean_used_fraction")})
    return pd.DataFrame(out)
