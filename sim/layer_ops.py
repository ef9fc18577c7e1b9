"""Per-GPU op constants of one layer, precomputed once per (model, hardware, tp).

The cost model (cost_model.py) turns these into times each step. Sources of the shapes:
sim/arch.py. What is modelled, per layer, on one TP rank:

- GEMMs (Gemm tuples): flops per token, weight bytes (read once per step), activation
  in+out bytes per token, and whether it runs on the FP8 tensor-core path. FP8 path =
  quantized weights of 1 byte on a GPU with FP8 tensor cores (DeepSeek-V3 on H100/H200,
  as SGLang runs its block-FP8 checkpoint); it uses HardwareSpec.peak_tflops_fp8 with the
  SAME calibrated efficiency curve as bf16 -- an assumption: the Vidur profiles hold no
  FP8 GEMMs. 1-byte weights on a GPU without FP8 (A100) are read as 1 byte but computed
  at the bf16 peak (weight-only FP8, as Marlin kernels do). Each FP8 GEMM's input is
  first quantized (per-token-group, SGLang's per_token_group_quant_fp8): one more
  elementwise kernel reading bf16 and writing fp8.
- Attention, per phase (AttentionOps): flops per (query, key) pair, bytes per KV token
  and per query token, plus (MLA) the kv_b GEMM the phase applies:
  GQA: FlashAttention on K/V heads, same for prefill and decode.
  MLA prefill: the MHA path (vLLM's MLA backend and SGLang for prefills): kv_b
    decompresses k_nope and v for EVERY token attended to (new and cached prefix) and
    attention runs with qk dim 192 and v dim 128 per head -- cheaper per pair than the
    absorbed form, which is why engines use it for long prompts.
  MLA decode: the absorbed path (DeepSeek-V2 paper section 2.1.2: W_UK folds into the
    query, W_UV into the output; FlashMLA's kernel): per token a bmm q_nope -> latent
    space and one latent -> v back (together kv_b's FLOPs), then MQA over the cache:
    every head scores against the 576-element latent+rope key and sums 512-element
    latent values, so the KV read is the compressed latent only, once per sequence for
    all heads: 576 x 2 bytes per token per layer.
- Elementwise ops (bytes per token, kernel count): fused add+RMSNorm x2, RoPE, KV-cache
  write; MLA's latent norms; SiLU-and-mul; MoE routing (top-k over E fp32 logits, token
  sort), the weighted sum of k expert outputs; FP8 input quantization.
- MoE routed experts (ExpertOps): a grouped GEMM; see cost_model.RooflineCostModel.
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.arch import (Linear, attention_linears, expert_linears, kv_up_linear, mlp_linears)
from sim.specs import HardwareSpec, ModelSpec

# (flops per token, weight bytes, io bytes per token, fp8 path)
Gemm = tuple[float, float, float, bool]


@dataclass(frozen=True, slots=True)
class AttentionOps:
    flops_per_pair: float
    kv_bytes_per_kv_token: float
    q_bytes_per_q_token: float
    kv_up: Gemm | None          # MLA kv_b GEMM of this phase
    kv_up_on_kv_tokens: bool    # prefill: on every attended token; decode: per query


@dataclass(frozen=True, slots=True)
class ExpertOps:
    num_experts: int
    num_active: int
    flops_per_token_expert: float   # gate+up and down, 1/tp of the expert
    weight_bytes_per_expert: float
    io_bytes_per_token_expert: float
    fp8: bool


@dataclass(frozen=True, slots=True)
class LayerOps:
    common_gemms: tuple[Gemm, ...]       # attention projections
    dense_gemms: tuple[Gemm, ...]        # dense MLP
    moe_gemms: tuple[Gemm, ...]          # router + shared experts
    experts: ExpertOps | None
    common_elementwise: tuple[float, int]  # (bytes per token, kernels)
    dense_elementwise: tuple[float, int]
    moe_elementwise: tuple[float, int]
    prefill_attention: AttentionOps
    decode_attention: AttentionOps


def _gemm(x: Linear, m: ModelSpec, tp: int, fp8_compute: bool) -> Gemm:
    k, n = x.local_kn(tp)
    wb = m.weight_bytes_per_param if x.quantized else m.dtype_bytes
    return 2.0 * k * n, k * n * wb, (k + n) * m.dtype_bytes, x.quantized and wb == 1 and fp8_compute


def build_layer_ops(m: ModelSpec, hw: HardwareSpec, tp: int) -> LayerOps:
    fp8 = m.weight_bytes_per_param == 1 and hw.peak_tflops_fp8 > 0
    b = m.dtype_bytes

    def gemms(lins: tuple[Linear, ...]) -> tuple[Gemm, ...]:
        return tuple(_gemm(x, m, tp, fp8) for x in lins)

    def quant(lins: tuple[Linear, ...]) -> tuple[float, int]:
        q = [x.local_kn(tp)[0] for x, g in zip(lins, gemms(lins)) if g[3]]
        return sum(q) * (b + 1), len(q)

    attn_l, dense_l = attention_linears(m), mlp_linears(m, False)
    if m.mla is None and m.num_kv_heads < tp:  # whole KV heads, replicated (as vLLM does)
        kv_heads = max(1, m.num_kv_heads // tp)
        attn_l = (Linear(m.hidden, (m.num_heads // tp + 2 * kv_heads) * m.head_dim * tp),
                  ) + attn_l[1:]
    moe_l = mlp_linears(m, True) if m.moe else ()
    ew_common = _add(_common_elementwise(m, tp), quant(attn_l))
    ew_dense = _add((b * 3.0 * m.intermediate / tp, 1), quant(dense_l))
    experts, ew_moe = None, (0.0, 0)
    if m.moe is not None:
        experts = _expert_ops(m, tp, fp8)
        ew_moe = _add(_moe_elementwise(m, tp, fp8), quant(moe_l))
    prefill, decode = _attention_ops(m, tp, fp8)
    return LayerOps(gemms(attn_l), gemms(dense_l), gemms(moe_l), experts,
                    ew_common, ew_dense, ew_moe, prefill, decode)


def _add(a: tuple[float, int], c: tuple[float, int]) -> tuple[float, int]:
    return a[0] + c[0], a[1] + c[1]


def _common_elementwise(m: ModelSpec, tp: int) -> tuple[float, int]:
    b, h = m.dtype_bytes, m.hidden
    heads = m.num_heads // tp
    if m.mla is None:
        # 2 fused add+RMSNorm (read x, residual; write both), RoPE in place on q and k,
        # KV-cache write (read + write of k and v).
        q_dim, kv_dim = heads * m.head_dim, max(1, m.num_kv_heads // tp) * m.head_dim
        return b * (8 * h + 2 * (q_dim + kv_dim) + 4 * kv_dim), 4
    a = m.mla
    # + kv_a (and q_a) RMSNorm r+w, RoPE on q_pe of each head and the shared k_pe,
    # latent cache write (r+w).
    norms = 2 * (a.kv_lora_rank + a.q_lora_rank)
    rope = 2 * (heads + 1) * a.qk_rope_head_dim
    return b * (8 * h + norms + rope + 2 * a.latent_dim), 5 + (1 if a.q_lora_rank else 0)


def _moe_elementwise(m: ModelSpec, tp: int, fp8: bool) -> tuple[float, int]:
    e, b, h = m.moe, m.dtype_bytes, m.hidden
    k, i_local = e.num_active_experts, e.expert_intermediate / tp
    routing = 4.0 * e.num_routed_experts        # top-k over fp32 router logits
    silu = b * 3.0 * (k + e.num_shared_experts) * i_local
    combine = b * (k + 1) * h                    # read the k expert outputs, write the sum
    kernels = 5                                  # top-k, align/sort, 2 SiLU, sum
    if fp8:                                      # routed experts' two input quantizations
        return routing + silu + combine + (h + k * i_local) * (b + 1), kernels + 2
    return routing + silu + combine, kernels


def _expert_ops(m: ModelSpec, tp: int, fp8: bool) -> ExpertOps:
    parts = [_gemm(x, m, tp, fp8) for x in expert_linears(m)]
    return ExpertOps(m.moe.num_routed_experts, m.moe.num_active_experts,
                     sum(g[0] for g in parts), sum(g[1] for g in parts),
                     sum(g[2] for g in parts), parts[0][3])


def _attention_ops(m: ModelSpec, tp: int, fp8: bool) -> tuple[AttentionOps, AttentionOps]:
    b, heads = m.dtype_bytes, m.num_heads // tp
    if m.mla is None:
        kv_dim = max(1, m.num_kv_heads // tp) * m.head_dim
        ops = AttentionOps(4.0 * heads * m.head_dim, 2.0 * kv_dim * b,
                           2.0 * heads * m.head_dim * b, None, False)
        return ops, ops
    a = m.mla
    kv_b = _gemm(kv_up_linear(m), m, tp, fp8)
    per_head = a.qk_head_dim + a.v_head_dim                   # 192 + 128
    prefill = AttentionOps(2.0 * heads * per_head, heads * per_head * b,
                           heads * per_head * b, kv_b, True)
    absorbed = a.latent_dim + a.kv_lora_rank                  # 576 + 512
    # bmm io per token: q_nope in, latent query out; latent output in, v out.
    bmm_io = heads * (a.qk_nope_head_dim + 2 * a.kv_lora_rank + a.v_head_dim) * b
    decode = AttentionOps(2.0 * heads * absorbed, a.latent_dim * b,
                          heads * absorbed * b, (kv_b[0], kv_b[1], bmm_io, kv_b[3]), False)
    return prefill, decode
