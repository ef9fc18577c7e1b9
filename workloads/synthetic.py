"""Synthetic request lengths: fixed, uniform, distributions matched to published
statistics of ShareGPT, LongBench and MATH-500 (for runs without the dataset files), and
the semi-PD cluster test's mix of ShareGPT-like and long-prompt requests.

All draws come from the caller's seeded numpy Generator; everything is vectorised, so
1000 requests take well under a millisecond or two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from workloads.longbench_tasks import AVG_WORDS_AND_SAMPLES, MAX_GEN_TOKENS
from workloads.records import SampledRequest, SourceResult
from workloads.sharegpt import ShareGPTFilter
from workloads.tokenizer import truncated_len

# --- ShareGPT-like -------------------------------------------------------------------
# Targets (means AFTER vLLM's filters: prompt and output >= 4 tokens, prompt <= 1024,
# prompt + output <= 2048), Llama-3 tokenizer:
#  * prompt mean 251 tokens: the semi-PD paper's ShareGPT sampling ("average input 251").
#    Cross-check: public vLLM benchmark_serving logs (ShareGPT_V3, 1000 prompts, seed 0,
#    Llama-3 tokenizer) report 215,196 input tokens, i.e. 215 per request.
#  * output mean 188 tokens: SGLang bench_serving (same filters, outputs forced to the
#    reference answer length with ignore_eos) reports 453,502 input / 376,493 output
#    tokens for 2000 ShareGPT prompts (sgl-project/sglang issue #1639): 227 / 188.
# No median under these filters is published; the log-space sigmas (1.2 prompt, 1.0
# output) are our assumption of a heavy right tail (vLLM paper, Kwon et al. SOSP'23,
# Fig. 11: ShareGPT has long, high-variance inputs and outputs). The mus were fitted by
# fixed-point iteration on 2M draws so the FILTERED means hit the targets; resulting
# medians: prompt ~173, output ~119 tokens. tests/test_workloads_synthetic.py checks it.
SHAREGPT_LIKE_MEAN_PROMPT_TOKENS = 251.0
SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS = 188.0
_SHAREGPT_MU_SIGMA_PROMPT = (5.2802, 1.2)
_SHAREGPT_MU_SIGMA_OUTPUT = (4.7822, 1.0)

# --- LongBench-like ------------------------------------------------------------------
# Per task: prompt ~ lognormal with mean = published average words x TOKENS_PER_WORD,
# output = the task's max_gen (LongBench forces it), tasks drawn in proportion to their
# sample counts (as when pooling all English+code task files). The words->tokens factor
# (~1.3 for English prose with Llama-3's tokenizer) and the per-task spread are
# assumptions; use the real files for exact lengths. Prompts longer than the limit are
# middle-truncated like LongBench's pred.py, i.e. they become exactly the limit.
TOKENS_PER_WORD = 1.3
LONGBENCH_LIKE_SIGMA = 0.5
LONGBENCH_LIKE_MIN_PROMPT_TOKENS = 16

# --- MATH-500-like -------------------------------------------------------------------
# No token statistics of MATH-500 are published; these are derived from published sizes.
#  * problem: 195.9 characters on average. EvalScope's MATH-500 page (evalscope docs,
#    benchmarks/math_500, "Data Statistics") gives prompt means of 266.89 characters, and
#    193.19 / 218.82 / 236.0 / 277.1 / 337.28 for levels 1-5 (43 / 90 / 105 / 128 / 134
#    problems); its template "{question}\nPlease reason step by step, and put your final
#    answer within \\boxed{}." (modelscope/evalscope math_500_adapter.py) adds 71.
#  * solution: ~531 characters on average, from two published sizes of the same 500
#    problems: the Arrow size of nlile/hendrycks-MATH-benchmark's test split (400,274
#    bytes) -> 531.8, and the size of HuggingFaceH4/MATH-500 test.jsonl (446,564 bytes,
#    JSON escaping +4.5 %) -> 529.7, each less the problem characters above and the other
#    fields (subjects: 124 Algebra, 97 Intermediate Algebra, 82 Prealgebra, 62 Number
#    Theory, 56 Precalculus, 41 Geometry, 38 Counting & Probability; answers ~5 chars).
#  * characters per Llama-3 token: 2.81 in problems, 2.55 in solutions (LaTeX tokenizes
#    densely), measured on 12 real MATH-500 records (5 are tests/data/math500_tiny.jsonl).
# => prompt mean 69.7 tokens (levels 1-5: 43.5 .. 94.8), output mean 208 tokens.
# Spread (assumption): lognormal; prompt sigma 0.75 within a level (the published range
# of 20..1733 problem characters over 500 problems implies ~0.73 overall; the 12 records
# give 0.91), output sigma 0.6 (12 records: 0.59), drawn independently (12 records: r=0.13).
MATH500_LEVELS = {1: (43, 193.19), 2: (90, 218.82), 3: (105, 236.0), 4: (128, 277.1),
                  5: (134, 337.28)}  # level: (problems, EvalScope mean prompt characters)
MATH500_TEMPLATE_CHARS = 71
MATH500_SOLUTION_CHARS = 531.0
MATH500_PROBLEM_CHARS_PER_TOKEN = 2.81
MATH500_SOLUTION_CHARS_PER_TOKEN = 2.55
MATH500_LIKE_MEAN_OUTPUT_TOKENS = MATH500_SOLUTION_CHARS / MATH500_SOLUTION_CHARS_PER_TOKEN
MATH500_LIKE_SIGMA_PROMPT = 0.75
MATH500_LIKE_SIGMA_OUTPUT = 0.6
MATH500_LIKE_MIN_TOKENS = 4  # the shortest MATH-500 problem is ~20 characters

# --- ShareGPT + long prompts (the semi-PD cluster test, Fig. 16) ---------------------
# The semi-PD paper's cluster test (8 A800s, DeepSeek-V2-Lite) uses a synthetic mix of 95 %
# ShareGPT and 5 % long (~4k-token) prompts (arXiv 2504.19867, evaluation, Fig. 16) and
# gives no spread. Long prompts: lognormal with median `prompt_tokens` and a small sigma
# (assumption; 0.1 puts ~90 % within -15 %..+18 %), clipped so prompt + output <=
# max_total_tokens (the model context). Every output comes from the ShareGPT-like
# distribution (a long request keeps the output of its ShareGPT-like draw). The long
# requests are an EXACT count, floor(fraction * N + 0.5), at seeded random positions (not
# a per-request Bernoulli draw), so every seed sends exactly the configured share.


@dataclass(frozen=True)
class LongMix:
    """The long-prompt part of distribution=mix (WorkloadConfig.mix_* options)."""

    fraction: float = 0.05
    prompt_tokens: int = 4096  # median
    sigma: float = 0.1
    max_total_tokens: int = 8192  # prompt + output of a long request


def _requests(prompt: np.ndarray, output: np.ndarray, sources: list[str]) -> tuple[SampledRequest, ...]:
    return tuple(
        SampledRequest(p, o, None, s) for p, o, s in zip(prompt.tolist(), output.tolist(), sources)
    )


def fixed_lengths(num_requests: int, prompt_len: int, output_len: int) -> SourceResult:
    prompt = np.full(num_requests, prompt_len, dtype=np.int64)
    output = np.full(num_requests, output_len, dtype=np.int64)
    return SourceResult(
        _requests(prompt, output, ["fixed"] * num_requests),
        f"synthetic fixed (prompt {prompt_len}, output {output_len} tokens)",
    )


def uniform_lengths(
    num_requests: int,
    rng: np.random.Generator,
    prompt_range: tuple[int, int],
    output_range: tuple[int, int],
) -> SourceResult:
    """Lengths uniform over the inclusive ranges."""
    prompt = rng.integers(prompt_range[0], prompt_range[1] + 1, size=num_requests)
    output = rng.integers(output_range[0], output_range[1] + 1, size=num_requests)
    return SourceResult(
        _requests(prompt, output, ["uniform"] * num_requests),
        f"synthetic uniform (prompt {prompt_range[0]}..{prompt_range[1]}, "
        f"output {output_range[0]}..{output_range[1]} tokens)",
    )


def sharegpt_like(
    num_requests: int, rng: np.random.Generator, flt: ShareGPTFilter | None = None
) -> SourceResult:
    """Lognormal prompt/output lengths, redrawn until they pass the ShareGPT filter."""
    flt = flt or ShareGPTFilter()
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    have = 0
    while have < num_requests:
        # ~9 % of draws fail the default filter; oversample so one round usually suffices.
        batch = int(1.2 * (num_requests - have)) + 16
        p = np.rint(rng.lognormal(*_SHAREGPT_MU_SIGMA_PROMPT, size=batch)).astype(np.int64)
        o = np.rint(rng.lognormal(*_SHAREGPT_MU_SIGMA_OUTPUT, size=batch)).astype(np.int64)
        keep = flt.keeps(p, o)
        prompts.append(p[keep])
        outputs.append(o[keep])
        have += int(keep.sum())
    prompt = np.concatenate(prompts)[:num_requests]
    output = np.concatenate(outputs)[:num_requests]
    return SourceResult(
        _requests(prompt, output, ["sharegpt_like"] * num_requests),
        "synthetic sharegpt_like",
        {"target_mean_prompt_tokens": SHAREGPT_LIKE_MEAN_PROMPT_TOKENS,
         "target_mean_output_tokens": SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS},
    )


def longbench_task_mean_tokens() -> dict[str, float]:
    """Untruncated mean prompt tokens per task implied by the published word counts."""
    return {t: words * TOKENS_PER_WORD for t, (words, _) in AVG_WORDS_AND_SAMPLES.items()}


def longbench_like(
    num_requests: int, rng: np.random.Generator, max_prompt_tokens: int | None
) -> SourceResult:
    """Prompt lengths per LongBench task (truncated to max_prompt_tokens), output = max_gen."""
    tasks = list(AVG_WORDS_AND_SAMPLES)
    counts = np.array([AVG_WORDS_AND_SAMPLES[t][1] for t in tasks], dtype=float)
    means = np.array([longbench_task_mean_tokens()[t] for t in tasks])
    mus = np.log(means) - LONGBENCH_LIKE_SIGMA**2 / 2  # lognormal mean = exp(mu + s^2/2)
    which = rng.choice(len(tasks), size=num_requests, p=counts / counts.sum())
    raw = np.rint(rng.lognormal(mus[which], LONGBENCH_LIKE_SIGMA)).astype(np.int64)
    raw = np.maximum(raw, LONGBENCH_LIKE_MIN_PROMPT_TOKENS)
    prompt = np.array([truncated_len(n, max_prompt_tokens) for n in raw.tolist()], dtype=np.int64)
    output = np.array([MAX_GEN_TOKENS[tasks[i]] for i in which.tolist()], dtype=np.int64)
    limit = "no truncation" if max_prompt_tokens is None else f"truncated to {max_prompt_tokens} tokens"
    return SourceResult(
        _requests(prompt, output, [tasks[i] for i in which.tolist()]),
        f"synthetic longbench_like ({limit})",
    )


def math500_level_mean_prompt_tokens() -> dict[int, float]:
    """Mean problem tokens per MATH level implied by EvalScope's character counts."""
    return {lv: (chars - MATH500_TEMPLATE_CHARS) / MATH500_PROBLEM_CHARS_PER_TOKEN
            for lv, (_, chars) in MATH500_LEVELS.items()}


def _lognormal_ints(rng: np.random.Generator, mean: np.ndarray | float, sigma: float,
                    size: int, minimum: int) -> np.ndarray:
    """Integers from a lognormal with the given mean (exp(mu + sigma^2 / 2)), floored."""
    mu = np.log(mean) - sigma**2 / 2
    return np.maximum(np.rint(rng.lognormal(mu, sigma, size=size)).astype(np.int64), minimum)


def math500_like(num_requests: int, rng: np.random.Generator) -> SourceResult:
    """Problem lengths per difficulty level (levels drawn by their MATH-500 counts), and
    solution lengths, matched to the statistics derived above."""
    levels = list(MATH500_LEVELS)
    counts = np.array([MATH500_LEVELS[lv][0] for lv in levels], dtype=float)
    means = np.array([math500_level_mean_prompt_tokens()[lv] for lv in levels])
    which = rng.choice(len(levels), size=num_requests, p=counts / counts.sum())
    prompt = _lognormal_ints(rng, means[which], MATH500_LIKE_SIGMA_PROMPT, num_requests,
                             MATH500_LIKE_MIN_TOKENS)
    output = _lognormal_ints(rng, MATH500_LIKE_MEAN_OUTPUT_TOKENS, MATH500_LIKE_SIGMA_OUTPUT,
                             num_requests, MATH500_LIKE_MIN_TOKENS)
    target_prompt = float(counts @ means / counts.sum())
    return SourceResult(
        _requests(prompt, output, ["math500_like"] * num_requests),
        "synthetic math500_like",
        {"target_mean_prompt_tokens": round(target_prompt, 1),
         "target_mean_output_tokens": round(MATH500_LIKE_MEAN_OUTPUT_TOKENS, 1)},
    )


def sharegpt_long_mix(num_requests: int, rng: np.random.Generator, mix: LongMix,
                      flt: ShareGPTFilter | None = None) -> SourceResult:
    """ShareGPT-like requests, of which round(fraction * N) get a long prompt instead."""
    base = sharegpt_like(num_requests, rng, flt)
    prompt = np.array([r.prompt_len for r in base.requests], dtype=np.int64)
    output = np.array([r.output_len for r in base.requests], dtype=np.int64)
    num_long = math.floor(mix.fraction * num_requests + 0.5)
    is_long = np.zeros(num_requests, dtype=bool)
    is_long[rng.permutation(num_requests)[:num_long]] = True
    raw = np.rint(rng.lognormal(math.log(mix.prompt_tokens), mix.sigma, size=num_long))
    prompt[is_long] = np.clip(raw.astype(np.int64), 1, mix.max_total_tokens - output[is_long])
    sources = np.where(is_long, "long", "sharegpt_like").tolist()
    return SourceResult(
        _requests(prompt, output, sources),
        f"synthetic mix ({num_requests - num_long} sharegpt_like + {num_long} long requests, "
        f"long prompts ~{mix.prompt_tokens} tokens)",
        {"mix_long_requests": num_long, "mix_long_fraction": mix.fraction,
         "mix_long_prompt_tokens": mix.prompt_tokens, "mix_long_prompt_sigma": mix.sigma,
         "mix_max_total_tokens": mix.max_total_tokens},
    )
