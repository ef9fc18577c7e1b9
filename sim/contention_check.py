"""Contention models against measurement: how much a prefill step and a decode step slow
each other down when semi-PD's two workers run them at once.

    python -m sim.contention_check --profile P.csv --contention C.csv [--model small_llama] [--hardware cpu]

C.csv comes from `python -m engines.torch.profiler model=... contention=1` (measured solo and
together times on the two workers), P.csv from the same profiler without it (the profiled
cost model's steps). For each row this prints the measured slowdowns beside what
semipd/engine.py's contention models predict from the profiled cost model for the same
shapes and shares:
- resources: each step uses compute_s / solo and memory_s / solo of the device (the cost
  model's resource demands over its solo time at the worker's share); both slow down by
  the larger oversubscription (semipd.engine.resources_slowdown);
- proportional: with shares x + y > 100 each runs at the share s / (x + y), else alone.
"""
from __future__ import annotations

import argparse

import pandas as pd

from engines.plan import StepPlan
from semipd.engine import resources_slowdown
from sim.profiled import ProfiledCostModel, shape_plan
from sim.specs import get_hardware, get_model


def predict(model: ProfiledCostModel, prefill: StepPlan, decode: StepPlan, x_pct: float, y_pct: float
            ) -> dict[str, tuple[float, float]]:
    """{contention model: (prefill slowdown, decode slowdown)}."""
    x, y = x_pct / 100.0, y_pct / 100.0
    solo = (model.step_time_s(prefill, x), model.step_time_s(decode, y))
    uses = [tuple(d / t for d in model.resource_demands_s(plan)) for plan, t in zip((prefill, decode), solo)]
    r = resources_slowdown(uses)
    total = x + y
    if total <= 1.0 + 1e-9:
        proportional = (1.0, 1.0)
    else:
        proportional = (model.step_time_s(prefill, x / total) / solo[0], model.step_time_s(decode, y / total) / solo[1])
    return {"resources": (r, r), "proportional": proportional}


def check(profile: str, contention: str, model_name: str, hardware: str) -> pd.DataFrame:
    # The contention workers wait passively (semi-PD's set-up): the profile's passive rows.
    model = ProfiledCostModel(profile, get_model(model_name), get_hardware(hardware), omp_wait="passive")
    rows = pd.read_csv(contention, comment="#")
    out = []
    for r in rows.itertuples():
        pred = predict(model, shape_plan(int(r.prefill_tokens)),
                       shape_plan(decode_seqs=int(r.decode_seqs), decode_context=int(r.decode_context)),
                       r.prefill_share_pct, r.decode_share_pct)
        out.append({"layout": f"{r.layout} ({r.prefill_share_pct:g}, {r.decode_share_pct:g})",
                    "prefill": int(r.prefill_tokens), "decode": f"{int(r.decode_seqs)}@{int(r.decode_context)}",
                    "prefill measured": r.prefill_together_s / r.prefill_solo_s,
                    "prefill resources": pred["resources"][0], "prefill proportional": pred["proportional"][0],
                    "decode measured": r.decode_together_s / r.decode_solo_s,
                    "decode resources": pred["resources"][1], "decode proportional": pred["proportional"][1]})
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--contention", required=True)
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--hardware", default="cpu")
    args = ap.parse_args()
    print(to_markdown(check(args.profile, args.contention, args.model, args.hardware)))


if __name__ == "__main__":
    main()
