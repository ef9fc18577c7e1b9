"""How many KV-cache blocks fit on each GPU of a tensor-parallel group (vLLM's rule).

vLLM sizes its KV pool as: total memory x gpu_memory_utilization - weights - peak
activation memory of a profiling forward pass at the maximum token budget; the rest is
divided into fixed-size blocks. Every GPU of a TP group holds 1/tp of the weights and
of each token's KV (whole KV heads; replicated when tp > num_kv_heads; MLA's latent is
replicated on every rank); with pipeline parallelism (semi-PD's 405B runs TP8 x PP4) a
GPU holds only its stage's layers (arch.pipeline_stages) and their weights and KV.
"""
from __future__ import annotations

from engines.errors import UserError
from sim.arch import activation_elems_per_token, pipeline_stages
from sim.specs import GIB, HardwareSpec, ModelSpec, stage_weight_bytes

# Non-activation memory vLLM must also leave free: CUDA context, cuBLAS workspace, NCCL
# buffers and CUDA-graph pools. ~1 GiB is the order vLLM 0.6 reports as "non-torch
# memory" plus graph memory for Llama-size models; an assumption, not a measurement.
RUNTIME_RESERVE_BYTES = 1 * GIB
# Token budget of the profiling pass: vLLM's max_num_batched_tokens is at least the
# context length (8192 for Llama-3; semi-PD's SGLang chunked prefill is 8192 too).
PROFILE_TOKENS = 8192
MAX_NUM_SEQS = 256  # vLLM default max_num_seqs: rows of fp32 logits in the profiling pass


class ModelDoesNotFitError(UserError):
    """The weights and reserves leave no room for even one KV block."""


def estimate_activation_reserve_bytes(model: ModelSpec, tp: int = 1,
                                      profile_tokens: int = PROFILE_TOKENS) -> int:
    """Peak activations of one layer's forward at `profile_tokens` tokens, plus logits and
    the runtime reserve. One layer suffices: activations are freed layer by layer; the
    widest live set is hidden states + residual + attention inputs + MLP intermediates
    (arch.activation_elems_per_token)."""
    per_token = activation_elems_per_token(model, tp) * model.dtype_bytes
    logits = MAX_NUM_SEQS * model.vocab * 4  # fp32, gathered in full on one rank
    return profile_tokens * per_token + logits + RUNTIME_RESERVE_BYTES


def kv_bytes_per_token_layer_per_gpu(model: ModelSpec, tp: int) -> int:
    """GQA: K and V of this GPU's KV heads (whole heads; replicated when tp > num_kv_heads).
    MLA: the whole latent on EVERY rank -- it is one shared "KV head", so TP attention
    (vLLM, SGLang without DP-attention) replicates the latent cache across the TP group."""
    if model.mla is not None:
        return model.mla.latent_dim * model.dtype_bytes
    return 2 * max(1, model.num_kv_heads // tp) * model.head_dim * model.dtype_bytes


def kv_bytes_per_block_per_gpu(model: ModelSpec, tp: int, block_size_tokens: int,
                               pp: int = 1) -> int:
    layers = max(end - first for first, end in pipeline_stages(model.num_layers, pp))
    return layers * kv_bytes_per_token_layer_per_gpu(model, tp) * block_size_tokens


def weight_bytes_per_gpu(model: ModelSpec, tp: int, pp: int = 1) -> float:
    """Weights on the fullest GPU: its stage's layers (+ embedding on the first stage, LM
    head on the last) with TP-sharded matrices / tp and replicated ones whole."""
    stages = pipeline_stages(model.num_layers, pp)
    return max(stage_weight_bytes(model, a, b, i == 0, i == pp - 1, tp)
               for i, (a, b) in enumerate(stages))


def kv_capacity_blocks(model: ModelSpec, hardware: HardwareSpec, *, tp: int,
                       gpu_memory_utilization: float = 0.9,
                       activation_reserve_bytes: int | None = None,
                       block_size_tokens: int = 16, num_weight_copies: int = 1,
                       pp: int = 1) -> int:
    """KV blocks per GPU (= blocks of the TP group's pool, each spread over the tp GPUs).

    With pp > 1 every stage holds its own layers' KV for the same blocks, so the pool is
    the smallest stage's count (vLLM takes the minimum over workers).
    `activation_reserve_bytes=None` uses `estimate_activation_reserve_bytes`.
    `num_weight_copies` > 1 models designs that keep several weight copies on a GPU
    (semi-PD keeps one; a naive co-location of two instances keeps two).
    Raises ModelDoesNotFitError when no block fits."""
    if activation_reserve_bytes is None:
        activation_reserve_bytes = estimate_activation_reserve_bytes(model, tp)
    budget = hardware.hbm_bytes * gpu_memory_utilization
    per_layer_block = kv_bytes_per_token_layer_per_gpu(model, tp) * block_size_tokens
    stages = pipeline_stages(model.num_layers, pp)
    blocks = []
    for i, (a, b) in enumerate(stages):
        weights = num_weight_copies * stage_weight_bytes(model, a, b, i == 0, i == pp - 1, tp)
        free = budget - weights - activation_reserve_bytes
        block = (b - a) * per_layer_block
        if free < block:
            raise ModelDoesNotFitError(_does_not_fit(
                model, hardware, tp, pp, gpu_memory_utilization, budget, weights,
                activation_reserve_bytes, free, block, block_size_tokens, num_weight_copies))
        blocks.append(int(free // block))
    return min(blocks)


def _does_not_fit(model: ModelSpec, hardware: HardwareSpec, tp: int, pp: int, util: float,
                  budget: float, weights: float, reserve: float, free: float, block: float,
                  block_size_tokens: int, copies: int) -> str:
    return (f"{model.name} does not fit on {hardware.name} at tp={tp}: the KV budget is "
            f"{hardware.hbm_bytes / GIB:.1f} GiB memory x {util:.2f} "
            f"utilisation = {budget / GIB:.1f} GiB, minus {weights / GIB:.1f} GiB of "
            f"weights per GPU ({copies} cop{'y' if copies == 1 else 'ies'}"
            f" / tp {tp} / pp {pp}) and a {reserve / GIB:.1f} GiB activation "
            f"reserve, leaving {free / GIB:.2f} GiB, but one KV block of "
            f"{block_size_tokens} tokens needs {block / 2**20:.2f} MiB per GPU; "
            f"needed at least {(weights + reserve + block) / GIB:.1f} "
            f"GiB usable: raise tp or pp, use a larger GPU or raise gpu_memory_utilization.")
