"""Synthetic request lengths: fixed, uniform, and distributions matched to published
statistics of ShareGPT and LongBench (for runs without the dataset files).

All draws come from the caller's seeded numpy Generator; everything is vectorised, so
1000 requests take well under a millisecond or two.
"""
from __future__ import annotations

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
