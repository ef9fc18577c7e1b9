"""Roofline cost model: predicts one worker step's duration from the plan's shape.

Per transformer layer (all layers are identical, so one layer's time x num_layers):
- linear layers (QKV, O, gate/up, down), Megatron-sharded over TP: each
  max(flops / (peak x eff(m)), bytes / (bandwidth x eff_bw)) + kernel floor, with the
  weights read once per step (the whole batch shares one GEMM) and
  eff(m) = eff_max x m / (m + half_tokens) for m = the step's tokens;
- attention, one kernel for the prefill seqs and one for the decode seqs: causal
  score+value FLOPs over each seq's real context, and the K/V bytes it reads;
- elementwise ops (fused add+RMSNorm x2, RoPE, SiLU-and-mul, KV-cache write) as bytes;
- 2 ring all-reduces of the hidden states (after O and after down) when tp > 1.
Once per step: embedding lookup, LM head for the sampling seqs only, and a fixed host
overhead. The efficiencies are HardwareSpec fields calibrated by
benchmarks/calibrate_linear.py. The share model (share_model.py) enters op by op.

Speed matters (runs once per simulated step, ~20k steps per run): one pass over the
plan's seqs, plain float arithmetic, per-model constants precomputed in __init__.
"""
from __future__ import annotations

from engines.plan import StepPlan
from sim.share_model import MeasuredShare, ShareModel, get_share_model
from sim.specs import HardwareSpec, ModelSpec

# Host time per step that no GPU share changes: scheduling, input preparation, sampler
# bookkeeping and output processing. An assumption, not calibrated (the profiles time
# GPU kernels only): ~1 ms is the order of a Python serving engine's per-step CPU work
# left after vLLM 0.6's overhead work (its 2024-09-05 performance blog found CPU-side
# work dominating Llama-3-8B steps on an H100 before it). Shows in small decode steps
# (8B batch 1 on A100: ~8 % of the step). Pass step_overhead_s to change it.
DEFAULT_STEP_OVERHEAD_S = 1.0e-3


def linear_time_s(num_tokens: float, k_dim: float, n_dim: float, dtype_bytes: int,
                  hw: HardwareSpec, compute_fraction: float = 1.0,
                  bandwidth_fraction: float = 1.0) -> float:
    """Time of one [num_tokens x k] @ [k x n] GEMM (the formula the calibration checks)."""
    flops_s = hw.peak_flops_s * hw.compute_efficiency_max * compute_fraction
    bytes_s = hw.hbm_bandwidth_bytes_s * hw.bandwidth_efficiency * bandwidth_fraction
    return _gemm_s(num_tokens, 2.0 * k_dim * n_dim, k_dim * n_dim * dtype_bytes,
                   (k_dim + n_dim) * dtype_bytes, flops_s, bytes_s,
                   hw.compute_efficiency_half_tokens, hw.kernel_floor_s)


def _gemm_s(m: float, flops_per_token: float, weight_bytes: float, io_bytes_per_token: float,
            flops_s: float, bytes_s: float, half_tokens: float, floor_s: float) -> float:
    # flops / (peak x eff_max x m/(m+k)) simplifies to flops_per_token x (m+k) / (peak x eff_max)
    compute = flops_per_token * (m + half_tokens) / flops_s
    memory = (weight_bytes + io_bytes_per_token * m) / bytes_s
    return (compute if compute > memory else memory) + floor_s


def ring_all_reduce_s(num_bytes: float, tp: int, hw: HardwareSpec) -> float:
    """Ring all-reduce: each GPU sends and receives 2(tp-1)/tp of the message."""
    if tp <= 1:
        return 0.0
    link_s = hw.nvlink_bandwidth_bytes_s * hw.link_efficiency
    return hw.interconnect_latency_s + 2.0 * (tp - 1) / tp * num_bytes / link_s


class RooflineCostModel:
    """`step_time_s(plan, share)`: predicted duration of `plan` on one TP group."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, tp: int = 1,
                 share_model: str | ShareModel = "roofline",
                 step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S) -> None:
        if tp < 1 or model.num_heads % tp:
            raise ValueError(f"tp={tp} must be >= 1 and divide num_heads={model.num_heads}")
        if tp > 1 and hardware.nvlink_bandwidth_bytes_s <= 0:
            raise ValueError(f"{hardware.name} has no GPU-GPU link; use tp=1")
        self.model, self.hardware, self.tp = model, hardware, tp
        self.share_model = get_share_model(share_model)
        self.step_overhead_s = step_overhead_s
        sat = getattr(self.share_model, "saturation_share", None)
        self._saturation_share = sat or hardware.bandwidth_saturation_share
        self._measured = isinstance(self.share_model, MeasuredShare)
        self._init_shapes(model, tp)

    def _init_shapes(self, m: ModelSpec, tp: int) -> None:
        b = m.dtype_bytes
        heads = m.num_heads // tp
        kv_heads = max(1, m.num_kv_heads // tp)  # replicated when tp > num_kv_heads
        q_dim, kv_dim, mlp = heads * m.head_dim, kv_heads * m.head_dim, m.intermediate / tp
        # (k, n) of each sharded GEMM: QKV column-parallel, O row-parallel, gate+up fused
        # column-parallel, down row-parallel (Megatron-LM layout, as vLLM shards Llama).
        shapes = ((m.hidden, q_dim + 2 * kv_dim), (q_dim, m.hidden),
                  (m.hidden, 2 * mlp), (mlp, m.hidden))
        self._gemms = tuple((2.0 * k * n, k * n * b, (k + n) * b) for k, n in shapes)
        self._lm_head = (2.0 * m.hidden * m.vocab / tp, m.hidden * m.vocab / tp * b,
                         (m.hidden + m.vocab / tp) * b)
        self._attn_flops_per_pair = 4.0 * heads * m.head_dim  # QK^T and PV, 2 flop/MAC
        self._kv_bytes_per_token_layer = 2.0 * kv_dim * b
        self._q_o_bytes_per_token = 2.0 * q_dim * b
        # Per layer per token: 2 fused add+RMSNorm (read x, residual; write both), RoPE
        # in place on q and k, SiLU-and-mul (read 2I, write I), KV-cache write (r+w).
        self._elementwise_bytes_per_token = b * (8 * m.hidden + 2 * (q_dim + kv_dim)
                                                 + 3 * mlp + 4 * kv_dim)
        self._elementwise_kernels = 5
        # Once per step: embedding lookup (r+w) + final norm; sampler reads fp32 logits ~3x.
        self._step_bytes_per_token = b * 6 * m.hidden
        self._sampler_bytes_per_seq = 3 * 4 * m.vocab / tp
        self._logits_bytes_per_seq = b * m.vocab / tp
        self._all_reduce_bytes_per_token = m.hidden * b

    def step_time_s(self, plan: StepPlan, share: float) -> float:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if self._measured:
            shared, prefill, decode, p_frac = self._gpu_parts_s(plan, 1.0, 1.0)
            sm = self.share_model
            return (self.step_overhead_s
                    + (shared * p_frac + prefill) * sm.prefill_slowdown(share)
                    + (shared * (1.0 - p_frac) + decode) * sm.decode_slowdown(share))
        bw_frac = self.share_model.bandwidth_fraction(share, self._saturation_share)
        shared, prefill, decode, _ = self._gpu_parts_s(plan, share, bw_frac)
        return self.step_overhead_s + shared + prefill + decode

    def _gpu_parts_s(self, plan: StepPlan, compute_frac: float,
                     bw_frac: float) -> tuple[float, float, float, float]:
        """(token-proportional, prefill-attention, decode-attention) GPU seconds, and the
        prefill fraction of the step's tokens."""
        p_pairs = p_kv = p_tok = d_pairs = d_kv = d_tok = 0
        num_samples = 0
        for s in plan.seqs:  # the only per-seq work: integer sums
            new, ctx = s.num_new_tokens, s.num_context_tokens
            pairs = new * ctx + new * (new + 1) // 2  # causal: token i sees ctx + i + 1 keys
            if s.is_prefill:
                p_pairs += pairs
                p_kv += ctx + new
                p_tok += new
            else:
                d_pairs += pairs
                d_kv += ctx + new
                d_tok += new
            if s.samples:
                num_samples += 1
        num_tokens = p_tok + d_tok
        if num_tokens == 0:
            return 0.0, 0.0, 0.0, 0.0
        hw = self.hardware
        flops_s = hw.peak_flops_s * compute_frac
        bytes_s = hw.hbm_bandwidth_bytes_s * bw_frac
        layers = self.model.num_layers
        shared = layers * self._layer_shared_s(num_tokens, flops_s, bytes_s)
        shared += self._step_once_s(num_tokens, num_samples, flops_s, bytes_s)
        prefill = layers * self._attention_s(p_pairs, p_kv, p_tok, flops_s, bytes_s)
        decode = layers * self._attention_s(d_pairs, d_kv, d_tok, flops_s, bytes_s)
        return shared, prefill, decode, p_tok / num_tokens

    def _layer_shared_s(self, m: int, flops_s: float, bytes_s: float) -> float:
        hw = self.hardware
        gemm_flops_s = flops_s * hw.compute_efficiency_max
        gemm_bytes_s = bytes_s * hw.bandwidth_efficiency
        half, floor = hw.compute_efficiency_half_tokens, hw.kernel_floor_s
        t = 0.0
        for flops_per_token, weight_bytes, io_bytes in self._gemms:
            t += _gemm_s(m, flops_per_token, weight_bytes, io_bytes, gemm_flops_s,
                         gemm_bytes_s, half, floor)
        t += (self._elementwise_bytes_per_token * m
              / (bytes_s * hw.elementwise_bandwidth_efficiency)
              + self._elementwise_kernels * floor)
        return t + 2.0 * ring_all_reduce_s(self._all_reduce_bytes_per_token * m, self.tp, hw)

    def _step_once_s(self, m: int, num_samples: int, flops_s: float, bytes_s: float) -> float:
        hw = self.hardware
        t = self._step_bytes_per_token * m / (bytes_s * hw.elementwise_bandwidth_efficiency)
        if num_samples:
            t += _gemm_s(num_samples, *self._lm_head, flops_s * hw.compute_efficiency_max,
                         bytes_s * hw.bandwidth_efficiency,
                         hw.compute_efficiency_half_tokens, hw.kernel_floor_s)
            t += (self._sampler_bytes_per_seq * num_samples
                  / (bytes_s * hw.elementwise_bandwidth_efficiency))
            # vLLM gathers the vocab-sharded logits onto one rank: one more collective.
            # (priced as an all-reduce of the shard: an upper bound, and small).
            t += ring_all_reduce_s(self._logits_bytes_per_seq * num_samples, self.tp, hw)
        return t

    def _attention_s(self, pairs: int, kv_tokens: int, q_tokens: int,
                     flops_s: float, bytes_s: float) -> float:
        if q_tokens == 0:
            return 0.0
        hw = self.hardware
        compute = pairs * self._attn_flops_per_pair / (flops_s * hw.attention_compute_efficiency)
        memory = ((kv_tokens * self._kv_bytes_per_token_layer
                   + q_tokens * self._q_o_bytes_per_token)
                  / (bytes_s * hw.bandwidth_efficiency))
        return (compute if compute > memory else memory) + hw.kernel_floor_s
