"""Per disagg run (repeat_runs.py): prefill steps real / grid-predicted (1 thread), decode steps alone and
overlapped with a prefill, and the TTFT mean. Run: .venv/bin/python step_ratios.py"""
import sys, numpy as np, pandas as pd
sys.path.insert(0, "/work/main")
from harness.fidelity_profile import run_rows, overlap_s, idle_before_s
from sim.profiled import ProfiledCostModel, row_plan
from sim.specs import get_model, get_hardware
D = "/tmp/fd/disagg"  # the harness.fidelity --out dir whose merged profile predicts the steps
cost = ProfiledCostModel(f"{D}/profile_cpu_small_llama.csv", get_model("small_llama"), get_hardware("cpu"), devices=2)
fit = cost.fits[1]
def an(run):
    steps = pd.read_csv(f"{run}/steps.csv")
    steps["ov"] = overlap_s(steps) / steps.duration_s
    steps["idle"] = idle_before_s(steps)
    rows = run_rows(__import__("pathlib").Path(run), threads=1)
    steps = steps.loc[rows.index]
    steps["pred"] = [cost._predict(fit, row_plan(r)) for _, r in rows.iterrows()]
    steps["ratio"] = steps.duration_s / steps.pred
    return steps
import json
rows=[]
for k in range(4):
    for name in ("cal","cmp"):
        s = an(f"/tmp/fd/rep/{name}{k}")
        p = s[s.worker=="prefill0"]; d = s[s.worker=="decode0"]
        sm = json.load(open(f"/tmp/fd/rep/{name}{k}/summary.json"))
        rows.append((f"{name}{k}", len(p), round(p.ratio.median(),3), round(d[d.ov<0.05].ratio.median(),3), round(d[d.ov>0.95].ratio.median(),3), round(sm["ttft_s"]["mean"],3)))
for r in rows: print(*r)
