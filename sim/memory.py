"""How many KV-cache blocks fit on each GPU of a tensor-parallel group (vLLM's rule).

vLLM sizes its KV pool as: total memory x gpu_memory_utilization - weights - peak
activation memory of a profiling forward pass at the maximum token budget; the rest is
divided into fixed-size blocks. Every GPU of a TP group holds 1/tp of the weights and
of each token's KV (whole KV heads; replicated when tp > num_kv_heads); with pipeline
parallelism (semi-PD's 405B runs TP8 x PP4) a GPU also holds only 1/pp of the layers.
"""
from __future__ import annotations

from sim.specs import GIB, HardwareSpec, ModelSpec

# Non-activation memory vLLM must also leave free: CUDA context, cuBLAS workspace, NCCL
# buffers and CUDA-graph pools. ~1 GiB is the order vLLM 0.6 reports as "non-torch
# memory" plus graph memory for Llama-size models; an assumption, not a measurement.
RUNTIME_RESERVE_BYTES = 1 * GIB
# Token budget of the profiling pass: vLLM's max_num_batched_tokens is at least the
# context length (8192 for Llama-3; semi-PD's SGLang chunked prefill is 8192 too).
PROFILE_TOKENS = 8192
MAX_NUM_SEQS = 256  # vLLM default max_num_seqs: rows of fp32 logits in the profiling pass


class ModelDoesNotFitError(ValueError):
    """The weights and reserves leave no room for even one KV block."""


def estimate_activation_reserve_bytes(model: ModelSpec, tp: int = 1,
                                      profile_tokens: int = PROFILE_TOKENS) -> int:
    """Peak activations of one layer's forward at `profile_tokens` tokens, plus logits and
    the runtime reserve. One layer suffices: activations are freed layer by layer; the
    widest live set is hidden states + residual + QKV + gate/up + SiLU output."""
    heads, kv_heads = model.num_heads // tp, max(1, model.num_kv_heads // tp)
    per_token = (2 * model.hidden + (heads + 2 * kv_heads) * model.head_dim
                 + 3 * model.intermediate // tp) * model.dtype_bytes
    logits = MAX_NUM_SEQS * model.vocab * 4  # fp32, gathered in full on one rank
    return profile_tokens * per_token + logits + RUNTIME_RESERVE_BYTES


def kv_bytes_per_block_per_gpu(model: ModelSpec, tp: int, block_size_tokens: int,
                               pp: int = 1) -> int:
    kv_heads = max(1, model.num_kv_heads // tp)
    layers = -(-model.num_layers // pp)  # the fullest stage bounds the pool
    per_token = 2 * layers * kv_heads * model.head_dim * model.dtype_bytes
    return per_token * block_size_tokens


def kv_capacity_blocks(model: ModelSpec, hardware: HardwareSpec, *, tp: int,
                       gpu_memory_utilization: float = 0.9,
                       activation_reserve_bytes: int | None = None,
                       block_size_tokens: int = 16, num_weight_copies: int = 1,
                       pp: int = 1) -> int:
    """KV blocks per GPU (= blocks of the TP group's pool, each spread over the tp GPUs).

    `activation_reserve_bytes=None` uses `estimate_activation_reserve_bytes`.
    `num_weight_copies` > 1 models designs that keep several weight copies on a GPU
    (semi-PD keeps one; a naive co-location of two instances keeps two).
    Raises ModelDoesNotFitError when no block fits."""
    if activation_reserve_bytes is None:
        activation_reserve_bytes = estimate_activation_reserve_bytes(model, tp)
    budget = hardware.hbm_bytes * gpu_memory_utilization
    weights = num_weight_copies * model.weight_bytes() / (tp * pp)
    block = kv_bytes_per_block_per_gpu(model, tp, block_size_tokens, pp)
    free = budget - weights - activation_reserve_bytes
    if free < block:
        raise ModelDoesNotFitError(
            f"{model.name} does not fit on {hardware.name} at tp={tp}: the KV budget is "
            f"{hardware.hbm_bytes / GIB:.1f} GiB memory x {gpu_memory_utilization:.2f} "
            f"utilisation = {budget / GIB:.1f} GiB, minus {weights / GIB:.1f} GiB of "
            f"weights per GPU ({num_weight_copies} cop{'y' if num_weight_copies == 1 else 'ies'}"
            f" / tp {tp} / pp {pp}) and a {activation_reserve_bytes / GIB:.1f} GiB activation "
            f"reserve, leaving {free / GIB:.2f} GiB, but one KV block of "
            f"{block_size_tokens} tokens needs {block / 2**20:.2f} MiB per GPU; "
            f"needed at least {(weights + activation_reserve_bytes + block) / GIB:.1f} "
            f"GiB usable: raise tp or pp, use a larger GPU or raise gpu_memory_utilization.")
    return int(free // block)
