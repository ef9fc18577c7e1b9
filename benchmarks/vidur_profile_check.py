"""Vidur's measured per-layer operator times through the Vidur-profile cost model
(sim/vidur_profile.py) against the roofline's same per-layer part, at every profiled
token count: how far a run with `executor.profile=<Vidur dir>` moves from the roofline.

Usage: python benchmarks/vidur_profile_check.py --profiles PATH

PATH: Vidur's profiling data directory (microsoft/vidur `data/profiling`), read at
compute/{a100,h100}/meta-llama/Llama-2-7b-hf/mlp.csv. Llama-2-7b is not a bundled
model (models/); its spec here is Llama-3-8B's changed to Llama-2-7b's config.json
(32 KV heads, MLP 11008; meta-llama/Llama-2-7b-hf). The roofline was calibrated on these
same files (benchmarks/calibrate_linear.py), so this checks consistency, not step times.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sim.specs import get_hardware, get_model  # noqa: E402
from sim.vidur_profile import VidurProfileCostModel  # noqa: E402

GPUS = {"a100": "a100_80g", "h100": "h100_80g"}


def llama2_7b():
    return dataclasses.replace(get_model("llama3_8b"), name="llama2_7b", num_kv_heads=32, intermediate=11008,
                               vocab=32000, max_context_tokens=4096)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=Path, required=True, help="Vidur's data/profiling directory")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    model = llama2_7b()
    for sku, hw in GPUS.items():
        path = args.profiles / "compute" / sku / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
        if not path.is_file():
            raise SystemExit(f"error: --profiles {args.profiles}: no {path.relative_to(args.profiles)}")
        ratios = []
        for tp in (1, 2, 4, 8):
            v = VidurProfileCostModel(path, model, get_hardware(hw), tp=tp)
            rs = [y / v._roof_layer(x) for x, y in zip(v.layer.x, v.layer.y)]
            ratios += rs
            print(f"{sku} tp{tp}: per-layer ops, profile / roofline: median {statistics.median(rs):.3f} "
                  f"over {len(rs)} token counts")
        print(f"{sku} all TP: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
              f"({len(ratios)} points)")


if __name__ == "__main__":
    main()
