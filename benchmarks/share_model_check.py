"""Check the roofline share model against semi-PD's measured A100 slowdown curves.

Usage: python benchmarks/share_model_check.py [--model llama3_8b] [--hardware a100_80g]

For typical decode and prefill steps it prints, at SM shares 30-100 %, the slowdown
(step time at the share / step time at 100 %) of the roofline share model and of the
measured curves (semi-PD DynamicPartitioner: scale_tpot for decode, scale_latency for
prefill, normalised to 1 at 100 %; DynamicPartitioner.replan in github.com/infinigence/Semi-PD,
branch distserve_base, distserve/single_stage_engine.py), with the error; then
the worst error per candidate bandwidth-saturation share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engines.plan import ScheduledSeq, StepPlan  # noqa: E402
from sim.cost_model import RooflineCostModel  # noqa: E402
from sim.share_model import RooflineShare, decode_slowdown, prefill_slowdown  # noqa: E402
from sim.specs import get_hardware, get_model  # noqa: E402

SHARES = [s / 100 for s in range(30, 101, 5)]


def decode_plan(batch: int, context_tokens: int) -> StepPlan:
    seqs = tuple(ScheduledSeq(i, context_tokens, 1, True, False, ()) for i in range(batch))
    return StepPlan("decode", seqs, 0, batch)


def prefill_plan(prompt_lens: list[int]) -> StepPlan:
    seqs = tuple(ScheduledSeq(i, 0, n, True, True, ()) for i, n in enumerate(prompt_lens))
    return StepPlan("prefill", seqs, sum(prompt_lens), 0)


def typical_steps() -> dict[str, tuple[StepPlan, object]]:
    """Llama3-8B ShareGPT at 10-16 req/s keeps ~64-128 seqs decoding at ~500 context;
    prefill batches are up to the 4096-token budget of semi-PD's DistServe branch."""
    return {"decode b64 ctx500": (decode_plan(64, 500), decode_slowdown),
            "decode b128 ctx500": (decode_plan(128, 500), decode_slowdown),
            "prefill 1x2048": (prefill_plan([2048]), prefill_slowdown),
            "prefill 4x1024": (prefill_plan([1024] * 4), prefill_slowdown)}


def slowdown_errors(cost_model: RooflineCostModel, plan: StepPlan, measured,
                    shares=SHARES) -> list[tuple[float, float, float, float]]:
    """(share, model slowdown, measured slowdown, relative error) per share."""
    base = cost_model.step_time_s(plan, 1.0)
    rows = []
    for s in shares:
        model = cost_model.step_time_s(plan, s) / base
        rows.append((s, model, measured(s), model / measured(s) - 1.0))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama3_8b")
    ap.add_argument("--hardware", default="a100_80g")
    args = ap.parse_args()
    model, hw = get_model(args.model), get_hardware(args.hardware)
    cm = RooflineCostModel(model, hw)
    print(f"{model.name} on {hw.name}, saturation share {hw.bandwidth_saturation_share}")
    for name, (plan, measured) in typical_steps().items():
        print(f"\n{name}: step {cm.step_time_s(plan, 1.0) * 1e3:.1f} ms at 100 %")
        print("  share  roofline  measured  error")
        for s, mod, meas, err in slowdown_errors(cm, plan, measured):
            print(f"  {s * 100:5.0f}  {mod:8.3f}  {meas:8.3f}  {err * 100:+5.1f} %")
    print("\nworst |error| % by saturation share  (80-100 % | 30-100 %)")
    for sat in (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0):
        cm_sat = RooflineCostModel(model, hw, share_model=RooflineShare(sat))
        errs = [(s, abs(e)) for plan, meas in typical_steps().values()
                for s, _, _, e in slowdown_errors(cm_sat, plan, meas)]
        hi = max(e for s, e in errs if s >= 0.8) * 100
        print(f"  {sat:4.2f}: {hi:5.1f} | {max(e for _, e in errs) * 100:5.1f}")


if __name__ == "__main__":
    main()
