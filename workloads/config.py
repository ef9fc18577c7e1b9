"""WorkloadConfig (the `workload:` Hydra group) and build_workload(cfg) -> Workload.

Every field has a default, so `WorkloadConfig()` is a valid workload (1000 ShareGPT-like
requests, Poisson at 10 req/s per GPU). Rates are PER GPU, as in the semi-PD paper;
build_workload multiplies by the GPU count.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from workloads.arrivals import ARRIVAL_PROCESSES, arrival_times_s
from workloads.errors import WorkloadError, choice_error
from workloads.sources import load_requests, trace_times
from workloads.spec import RequestSpec

SOURCES = ("synthetic", "sharegpt", "longbench", "math500", "trace", "jsonl")
DISTRIBUTIONS = ("sharegpt_like", "longbench_like", "math500_like", "mix", "fixed", "uniform")
TIMED_SOURCES = ("trace", "jsonl")  # sources whose records can carry arrival times


@dataclass
class WorkloadConfig:
    """Flat workload options; see the comment on each field. Lengths are in tokens."""

    # --- what to send -----------------------------------------------------------------
    name: str = "sharegpt"  # label written into results
    source: str = "sharegpt"  # synthetic | sharegpt | longbench | math500 | trace | jsonl
    # Dataset file (sharegpt .json, MATH-500 / generic .jsonl, trace .csv) or LongBench task
    # directory. sharegpt/longbench/math500 with no path fall back to the matching
    # synthetic distribution (<source>_like), with a warning.
    path: str | None = None
    # source=synthetic: sharegpt_like | longbench_like | math500_like | mix | fixed | uniform
    distribution: str = "sharegpt_like"
    prompt_len: int = 512  # distribution=fixed, tokens
    output_len: int = 128  # distribution=fixed, tokens
    prompt_len_min: int = 128  # distribution=uniform, inclusive range, tokens
    prompt_len_max: int = 1024
    output_len_min: int = 32
    output_len_max: int = 256
    num_requests: int = 1000
    seed: int = 0  # one seed; lengths and arrivals use independent child streams
    oversample: bool = False  # too few usable records: repeat random ones to reach num_requests
    # --- when to send it ----------------------------------------------------------------
    rate: float = 10.0  # requests/s PER GPU (total = rate * num_gpus); .inf = all at t=0
    arrival: str = "poisson"  # poisson | gamma | constant | trace (times from the file)
    burstiness: float = 1.0  # gamma shape: 1 = Poisson, < 1 burstier (vLLM --burstiness)
    normalize_arrivals: bool = True  # vLLM: rescale so the last arrival is at N/total_rate
    trace_time_scale: float = 1.0  # arrival=trace: multiply the file's times by this
    # --- tokenization -------------------------------------------------------------------
    tokenizer: str | None = None  # tokenizer.json (or its directory); null = Llama-3
    keep_token_ids: bool = False  # keep real prompt ids (torch executor); off = faster
    # --- ShareGPT filter (vLLM's; also bounds sharegpt_like) ----------------------------
    sharegpt_min_tokens: int = 4  # drop prompt or output shorter than this
    sharegpt_max_prompt_tokens: int = 1024
    sharegpt_max_total_tokens: int = 2048  # prompt + output
    # --- LongBench ------------------------------------------------------------------------
    longbench_tasks: list[str] = field(default_factory=list)  # empty = every file in path
    # Middle-truncate longer prompts (LongBench's rule). 7500 = LongBench v1's limit for
    # 8k-context models, leaving room for max_gen <= 512 in Llama-3's 8192; null = none.
    longbench_max_prompt_tokens: int | None = 7500
    # --- distribution=mix: ShareGPT-like + long prompts (semi-PD cluster test, Fig. 16) ----
    mix_long_fraction: float = 0.05  # exact share of long-prompt requests (paper: 5 %)
    mix_long_prompt_tokens: int = 4096  # median long prompt (paper: "~4k-token prompts")
    mix_long_prompt_sigma: float = 0.1  # lognormal sigma of long prompts (0 = all equal)
    # Long prompts are clipped so prompt + output <= this (the model context; Llama-3: 8192).
    mix_max_total_tokens: int = 8192


def config_from_mapping(values: object) -> WorkloadConfig:
    """A WorkloadConfig from itself, a dict, or an OmegaConf DictConfig (Hydra's `cfg.workload`)."""
    if isinstance(values, WorkloadConfig):
        return values
    if type(values).__name__ == "DictConfig":  # avoid importing omegaconf when unused
        from omegaconf import OmegaConf

        values = OmegaConf.to_object(values)  # type: ignore[arg-type]
        if isinstance(values, WorkloadConfig):
            return values
    if not isinstance(values, Mapping):
        raise WorkloadError(f"A workload config must be a mapping, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(WorkloadConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise WorkloadError(
            f"Unknown workload option(s) {', '.join(unknown)}; valid options are: "
            f"{', '.join(sorted(known))}."
        )
    kwargs = dict(values)
    if "longbench_tasks" in kwargs and kwargs["longbench_tasks"] is not None:
        kwargs["longbench_tasks"] = list(kwargs["longbench_tasks"])
    return WorkloadConfig(**kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WorkloadError(message)


def validate_config(cfg: WorkloadConfig, num_gpus: int = 1) -> None:
    """Raise WorkloadError naming the option for any invalid value."""
    for option, value, valid in (("workload.source", cfg.source, SOURCES),
                                 ("workload.distribution", cfg.distribution, DISTRIBUTIONS),
                                 ("workload.arrival", cfg.arrival, ARRIVAL_PROCESSES)):
        if value not in valid:
            raise choice_error(option, value, valid)
    _check(isinstance(num_gpus, int) and num_gpus >= 1,
           f"num_gpus must be an integer >= 1, got {num_gpus!r}.")
    _check(cfg.num_requests >= 1, f"workload.num_requests must be >= 1, got {cfg.num_requests}.")
    _check(cfg.seed >= 0, f"workload.seed must be an integer >= 0 (numpy's seeds), got {cfg.seed}.")
    _check(cfg.rate > 0, f"workload.rate must be > 0 requests/s per GPU (or .inf), got {cfg.rate}.")
    _check(cfg.burstiness > 0 and math.isfinite(cfg.burstiness),
           f"workload.burstiness must be a finite number > 0, got {cfg.burstiness}.")
    _check(cfg.trace_time_scale > 0 and math.isfinite(cfg.trace_time_scale),
           f"workload.trace_time_scale must be a finite number > 0, got {cfg.trace_time_scale}.")
    _check(cfg.prompt_len >= 1 and cfg.output_len >= 1, "workload.prompt_len and output_len "
           f"must be >= 1, got {cfg.prompt_len} and {cfg.output_len}.")
    for lo, hi, what in ((cfg.prompt_len_min, cfg.prompt_len_max, "prompt_len"),
                         (cfg.output_len_min, cfg.output_len_max, "output_len")):
        _check(1 <= lo <= hi, f"workload.{what}_min..{what}_max must satisfy "
               f"1 <= min <= max, got {lo}..{hi}.")
    lo, mid, hi = cfg.sharegpt_min_tokens, cfg.sharegpt_max_prompt_tokens, cfg.sharegpt_max_total_tokens
    _check(1 <= lo <= mid < hi, "workload ShareGPT filter must satisfy 1 <= sharegpt_min_tokens <= "
           f"sharegpt_max_prompt_tokens < sharegpt_max_total_tokens, got {lo}, {mid}, {hi}.")
    limit = cfg.longbench_max_prompt_tokens
    _check(limit is None or limit >= 2,
           f"workload.longbench_max_prompt_tokens must be >= 2 or null, got {limit}.")
    _validate_mix(cfg)
    _check(cfg.arrival != "trace" or cfg.source in TIMED_SOURCES,
           "workload.arrival='trace' needs arrival times from the data, i.e. workload.source "
           f"in {TIMED_SOURCES} (got source={cfg.source!r}); use poisson, gamma or constant instead.")


def _validate_mix(cfg: WorkloadConfig) -> None:
    frac = cfg.mix_long_fraction
    _check(isinstance(frac, (int, float)) and 0.0 <= frac <= 1.0,
           f"workload.mix_long_fraction must be a fraction in [0, 1], got {frac!r}.")
    _check(cfg.mix_long_prompt_tokens >= 1,
           f"workload.mix_long_prompt_tokens must be >= 1, got {cfg.mix_long_prompt_tokens}.")
    sigma = cfg.mix_long_prompt_sigma
    _check(sigma >= 0 and math.isfinite(sigma),
           f"workload.mix_long_prompt_sigma must be a finite number >= 0, got {sigma}.")
    if cfg.source == "synthetic" and cfg.distribution == "mix":
        _check(cfg.mix_max_total_tokens > cfg.sharegpt_max_total_tokens,
               "workload.mix_max_total_tokens (the context long prompts are clipped to) must "
               "exceed workload.sharegpt_max_total_tokens so every ShareGPT-like output leaves "
               f"room for a prompt, got {cfg.mix_max_total_tokens} <= "
               f"{cfg.sharegpt_max_total_tokens}.")


@dataclass(frozen=True)
class Workload:
    """The requests of one run. `specs` are sorted by arrival with ids 0..N-1."""

    specs: tuple[RequestSpec, ...]
    source_used: str  # where the lengths came from, in words, for logs and summaries
    total_rate: float  # requests/s over all GPUs (observed rate for arrival=trace)
    name: str = ""
    arrival: str = "poisson"
    burstiness: float = 1.0
    details: dict[str, object] = field(default_factory=dict, compare=False)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: what was sent, how fast, and length statistics."""
        prompt = np.array([s.prompt_len for s in self.specs], dtype=float)
        output = np.array([s.output_len for s in self.specs], dtype=float)
        last_s = self.specs[-1].arrival_s if self.specs else 0.0
        out: dict[str, object] = {
            "name": self.name, "source_used": self.source_used,
            "num_requests": len(self.specs), "total_rate": self.total_rate,
            "arrival": self.arrival, "burstiness": self.burstiness,
            "last_arrival_s": float(last_s),
            "total_prompt_tokens": int(prompt.sum()), "total_output_tokens": int(output.sum()),
        }
        for label, arr in (("prompt_len", prompt), ("output_len", output)):
            if len(arr):
                p50, p90 = np.percentile(arr, [50, 90]).tolist()
                out.update({f"{label}_mean": float(arr.mean()), f"{label}_p50": p50,
                            f"{label}_p90": p90, f"{label}_max": int(arr.max())})
        out["requests_per_source"] = dict(Counter(s.source for s in self.specs))
        out.update(self.details)
        return out


def build_workload(cfg: WorkloadConfig | object, num_gpus: int = 1) -> Workload:
    """The run's requests: lengths from the source, arrivals from the process.

    `cfg.rate` is per GPU; the arrival process runs at `cfg.rate * num_gpus`. Raises
    WorkloadError (a ValueError) with a one-paragraph message for user mistakes.
    """
    cfg = config_from_mapping(cfg)
    validate_config(cfg, num_gpus)
    # Independent child streams: changing the arrival process keeps the same lengths.
    length_seed, arrival_seed = np.random.SeedSequence(cfg.seed).spawn(2)
    result = load_requests(cfg, np.random.default_rng(length_seed))
    if cfg.arrival == "trace":
        arrivals, total_rate = trace_times(cfg, result)
    else:
        total_rate = cfg.rate * num_gpus
        arrivals = arrival_times_s(cfg.arrival, len(result.requests), total_rate,
                                   np.random.default_rng(arrival_seed), cfg.burstiness,
                                   cfg.normalize_arrivals)
    order = np.argsort(arrivals, kind="stable").tolist()  # stable: ties keep source order
    specs = tuple(
        RequestSpec(i, float(arrivals[j]), r.prompt_len, r.output_len, r.prompt_token_ids, r.source)
        for i, j in enumerate(order)
        for r in (result.requests[j],)
    )
    details = {"num_gpus": num_gpus, "rate_per_gpu": cfg.rate, "seed": cfg.seed,
               "normalize_arrivals": cfg.normalize_arrivals, "source_stats": dict(result.stats)}
    return Workload(specs, result.description, total_rate, cfg.name, cfg.arrival, cfg.burstiness,
                    details)
