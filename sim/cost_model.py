"""Roofline cost model: predicts one worker step's duration from the plan's shape.

Per transformer layer on one TP rank (op constants: layer_ops.py, shapes: arch.py):
- linear layers, sharded over TP as vLLM/SGLang do: each
  max(flops / (peak x eff(m)), bytes / (bandwidth x eff_bw)) + kernel floor, with the
  weights read once per step (the whole batch shares one GEMM) and
  eff(m) = eff_max x m / (m + half_tokens) for m = the step's tokens; FP8 GEMMs use the
  FP8 peak with the same curve (an assumption, layer_ops.py);
- MoE routed experts (DeepSeekMoE) as one grouped GEMM: FLOPs of the k ACTIVE experts
  per token; weight bytes of the experts the batch TOUCHES, each read once per step:
  touched = E (1 - (1 - k/E)^m) under uniform routing (arch.expected_touched_experts);
  efficiency from the tokens each touched expert sees, m k / touched, so
  compute = flops_per_token_expert x (m k + half_tokens x touched) / (peak x eff_max).
  TP-MoE: every rank holds 1/tp of every expert (SGLang's default), so FLOPs and bytes
  are / tp and all ranks touch the same experts; expert parallelism is not modelled;
- attention, one kernel for the prefill seqs and one for the decode seqs: causal
  score+value FLOPs over each seq's real context, and the K/V bytes it reads (MLA:
  MHA path for prefill, absorbed path over the 576-element latent for decode);
- elementwise ops as bytes; 2 ring all-reduces of the hidden states (after attention
  and after the MLP) when tp > 1.
Once per step: embedding lookup (first stage), final norm, LM head for the sampling seqs
and sampler (last stage), a fixed host overhead.

Pipeline parallelism (pp > 1): layers split into stages by arch.pipeline_stages; the
stage boundary sends hidden states and residual (vLLM's IntermediateTensors) over
`pp_link_bytes_s` (default 25 GB/s: the semi-PD 405B setup's 200 Gbit/s between nodes).
- pp_overlap=False (default): ONE micro-batch per step, no interleaving: a step is the
  sum of the stages plus pp-1 sends -- the latency every seq of the step sees. Exact for
  an engine that runs one batch at a time; pessimistic for throughput when steps are
  compute-bound, as stages idle while others work.
- pp_overlap=True: throughput mode, as vLLM (pp virtual engines) and DistServe keep pp
  micro-batches in flight: a step costs the slowest stage (+ its send). Optimistic for
  latency (a seq really waits all stages) and, when steps are bandwidth-bound, for
  throughput too: real micro-batches are 1/pp of the batch but each still reads the
  stage's weights. The default is the sequential one because the simulator's scheduler
  runs one batch per worker and its per-seq latency must be right.
The efficiencies are HardwareSpec fields calibrated by benchmarks/calibrate_linear.py.
The share model (share_model.py) enters op by op; PP sends and host time are not scaled.

Speed matters (runs once per simulated step, ~20k steps per run): one pass over the
plan's seqs, plain float arithmetic, per-model constants precomputed in __init__.
"""
from __future__ import annotations

import dataclasses

from engines.plan import StepPlan
from sim.arch import expected_touched_experts, num_moe_layers, pipeline_stages
from sim.layer_ops import AttentionOps, Gemm, build_layer_ops
from sim.share_model import MeasuredShare, ShareModel, get_share_model
from sim.specs import HardwareSpec, ModelSpec

# Host time per step that no GPU share changes: scheduling, input preparation, sampler
# bookkeeping and output processing. An assumption, not calibrated (the profiles time
# GPU kernels only): ~1 ms is the order of a Python serving engine's per-step CPU work
# left after vLLM 0.6's overhead work (its 2024-09-05 performance blog found CPU-side
# work dominating Llama-3-8B steps on an H100 before it). Shows in small decode steps
# (8B batch 1 on A100: ~8 % of the step). Pass step_overhead_s to change it.
DEFAULT_STEP_OVERHEAD_S = 1.0e-3
# Between pipeline stages: the semi-PD 405B setup's 200 Gbit/s = 25 GB/s between nodes
# (arXiv 2504.19867, evaluation setup); latency: the order of one RDMA/NCCL send, an assumption.
INTER_NODE_BYTES_S = 25e9
INTER_NODE_LATENCY_S = 20e-6
_UNLIMITED = 1e9  # a resource fraction so large that the resource never limits
PP_TENSORS_PER_TOKEN = 2  # hidden_states and residual cross each stage boundary (vLLM)


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


_PER_TOKENS_CACHE = 65536  # entries (~10 MB at most): token counts x shares


class RooflineCostModel:
    """`step_time_s(plan, share)`: predicted duration of `plan` on one TP x PP group."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, tp: int = 1,
                 share_model: str | ShareModel = "roofline",
                 step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S, pp: int = 1,
                 pp_overlap: bool = False, pp_link_bytes_s: float = INTER_NODE_BYTES_S,
                 pp_link_latency_s: float = INTER_NODE_LATENCY_S) -> None:
        if tp < 1 or model.num_heads % tp:
            raise ValueError(f"tp={tp} must be >= 1 and divide num_heads={model.num_heads}")
        if tp > 1 and hardware.nvlink_bandwidth_bytes_s <= 0:
            raise ValueError(f"{hardware.name} has no GPU-GPU link; use tp=1")
        self.model, self.hardware, self.tp, self.pp = model, hardware, tp, pp
        self.pp_overlap = pp_overlap
        self.share_model = get_share_model(share_model)
        self.step_overhead_s = step_overhead_s
        sat = getattr(self.share_model, "saturation_share", None)
        self._saturation_share = sat or hardware.bandwidth_saturation_share
        self._measured = isinstance(self.share_model, MeasuredShare)
        self._ops = build_layer_ops(model, hardware, tp)
        first_moe = model.num_layers - num_moe_layers(model)
        # (dense layers, MoE layers) per stage; MoE layers are the last ones.
        self._stages = tuple((max(0, min(b, first_moe) - a), max(0, b - max(a, first_moe)))
                             for a, b in pipeline_stages(model.num_layers, pp))
        self._init_step_constants(model, tp)
        self._send_bytes_per_token = PP_TENSORS_PER_TOKEN * model.hidden * model.dtype_bytes
        self._pp_link = (pp_link_bytes_s, pp_link_latency_s)
        self._ideal: RooflineCostModel | None = None
        # (tokens, compute fraction, bandwidth fraction) -> (rates, dense layer s, MoE layer s,
        # embedding s): steps repeat token counts (a chunked step fills its budget), so the
        # GEMM and elementwise part of a step is looked up, not recomputed (same floats).
        self._per_tokens: dict[tuple[int, float, float], tuple] = {}

    def _init_step_constants(self, m: ModelSpec, tp: int) -> None:
        b = m.dtype_bytes
        # LM head (vocab-parallel, kept in the activation dtype even in FP8 checkpoints).
        self._lm_head = (2.0 * m.hidden * m.vocab / tp, m.hidden * m.vocab / tp * b,
                         (m.hidden + m.vocab / tp) * b)
        # Per token: embedding lookup (r+w) on the first stage, final norm on the last.
        self._embed_bytes_per_token = b * 2 * m.hidden
        self._final_bytes_per_token = b * 4 * m.hidden
        self._sampler_bytes_per_seq = 3 * 4 * m.vocab / tp  # sampler reads fp32 logits ~3x
        self._logits_bytes_per_seq = b * m.vocab / tp
        self._all_reduce_bytes_per_token = m.hidden * b

    def step_time_s(self, plan: StepPlan, share: float) -> float:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if self._measured:
            shared, prefill, decode, p_frac, comm = self._gpu_parts_s(plan, 1.0, 1.0)
            sm = self.share_model
            return (self.step_overhead_s + comm
                    + (shared * p_frac + prefill) * sm.prefill_slowdown(share)
                    + (shared * (1.0 - p_frac) + decode) * sm.decode_slowdown(share))
        bw_frac = self.share_model.bandwidth_fraction(share, self._saturation_share)
        shared, prefill, decode, _, comm = self._gpu_parts_s(plan, share, bw_frac)
        return self.step_overhead_s + comm + shared + prefill + decode

    def resource_demands_s(self, plan: StepPlan) -> tuple[float, float]:
        """(compute_s, memory_s): the step's GPU time on the whole device if only compute
        (resp. only HBM bandwidth) limited it. What the step asks of each resource, used
        to model two workers contending for one GPU (semipd/engine.py)."""
        ideal = self._ideal_model()
        compute = ideal._gpu_parts_s(plan, 1.0, _UNLIMITED)
        memory = ideal._gpu_parts_s(plan, _UNLIMITED, 1.0)
        return sum(compute[:3]), sum(memory[:3])

    def _ideal_model(self) -> "RooflineCostModel":
        """The same model without the small-batch GEMM penalty and kernel floors: a small
        GEMM is slow because it leaves SMs idle (too few tiles), not because it uses them,
        so resource USE counts FLOPs at full efficiency and bytes at achievable bandwidth."""
        if self._ideal is None:
            hw = dataclasses.replace(self.hardware, compute_efficiency_half_tokens=0.0, kernel_floor_s=0.0)
            self._ideal = RooflineCostModel(self.model, hw, self.tp, self.share_model, 0.0, self.pp,
                                            self.pp_overlap, *self._pp_link)
        return self._ideal

    def _gpu_parts_s(self, plan: StepPlan, compute_frac: float, bw_frac: float
                     ) -> tuple[float, float, float, float, float]:
        """(token-proportional, prefill-attention, decode-attention) GPU seconds, the
        prefill fraction of the step's tokens, and the pipeline sends' seconds."""
        shape = plan.shape  # the scheduler's sums over the seqs
        p_pairs, p_kv, p_tok = shape.prefill_pairs, shape.prefill_kv_tokens, shape.prefill_tokens
        d_pairs, d_kv, d_tok = shape.decode_pairs, shape.decode_kv_tokens, shape.decode_tokens
        num_samples = shape.num_samples
        m = p_tok + d_tok
        if m == 0:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        ops = self._ops
        key = (m, compute_frac, bw_frac)
        per_tokens = self._per_tokens.get(key)
        if per_tokens is None:  # a function of the token count and share alone: computed once
            if len(self._per_tokens) >= _PER_TOKENS_CACHE:
                self._per_tokens.clear()
            r = self._rates(compute_frac, bw_frac)
            common = self._common_layer_s(m, r)
            dense = common + self._mlp_s(m, ops.dense_gemms, ops.dense_elementwise, r)
            moe = (common + self._moe_mlp_s(m, r)) if ops.experts else 0.0
            per_tokens = self._per_tokens[key] = (r, dense, moe, self._embed_bytes_per_token * m / r[3])
        r, dense, moe, embed = per_tokens
        pa = self._attention_s(p_pairs, p_kv, p_tok, ops.prefill_attention, r)
        da = self._attention_s(d_pairs, d_kv, d_tok, ops.decode_attention, r)
        once = (embed, self._head_s(m, num_samples, r))
        send = 0.0
        if self.pp > 1:
            link_bytes_s, link_latency_s = self._pp_link
            send = link_latency_s + self._send_bytes_per_token * m / link_bytes_s
        parts = self._combine_stages(dense, moe, pa, da, once, send)
        return parts[0], parts[1], parts[2], p_tok / m, parts[3]

    def _combine_stages(self, dense: float, moe: float, pa: float, da: float,
                        once: tuple[float, float], send: float
                        ) -> tuple[float, float, float, float]:
        """(shared, prefill, decode, sends) of the step: all stages in sequence, or the
        slowest stage (pp_overlap)."""
        last = len(self._stages) - 1
        if not self.pp_overlap or last == 0:
            nd = sum(s[0] for s in self._stages)
            nm = sum(s[1] for s in self._stages)
            n = nd + nm
            return nd * dense + nm * moe + once[0] + once[1], n * pa, n * da, last * send
        best, best_total = (0.0, 0.0, 0.0, 0.0), -1.0
        for i, (nd, nm) in enumerate(self._stages):
            n = nd + nm
            shared = nd * dense + nm * moe + (once[0] if i == 0 else 0.0)
            shared += once[1] if i == last else 0.0
            stage = (shared, n * pa, n * da, send if i < last else 0.0)
            total = sum(stage)
            if total > best_total:
                best, best_total = stage, total
        return best

    def _rates(self, compute_frac: float, bw_frac: float) -> tuple[float, ...]:
        """(GEMM flop/s bf16, GEMM flop/s fp8, GEMM bytes/s, elementwise bytes/s,
        attention flop/s, attention bytes/s) at this share."""
        hw = self.hardware
        bytes_s = hw.hbm_bandwidth_bytes_s * bw_frac
        return (hw.peak_flops_s * compute_frac * hw.compute_efficiency_max,
                hw.peak_tflops_fp8 * 1e12 * compute_frac * hw.compute_efficiency_max,
                bytes_s * hw.bandwidth_efficiency,
                bytes_s * hw.elementwise_bandwidth_efficiency,
                hw.peak_flops_s * compute_frac * hw.attention_compute_efficiency,
                bytes_s * hw.bandwidth_efficiency)

    def _gemms_s(self, m: float, gemms: tuple[Gemm, ...], r: tuple[float, ...]) -> float:
        half, floor = self.hardware.compute_efficiency_half_tokens, self.hardware.kernel_floor_s
        t = 0.0
        for flops_per_token, weight_bytes, io_bytes, fp8 in gemms:
            t += _gemm_s(m, flops_per_token, weight_bytes, io_bytes, r[1] if fp8 else r[0],
                         r[2], half, floor)
        return t

    def _elementwise_s(self, m: int, ew: tuple[float, int], r: tuple[float, ...]) -> float:
        return ew[0] * m / r[3] + ew[1] * self.hardware.kernel_floor_s

    def _common_layer_s(self, m: int, r: tuple[float, ...]) -> float:
        """Attention projections, elementwise ops and both all-reduces of one layer."""
        t = self._gemms_s(m, self._ops.common_gemms, r)
        t += self._elementwise_s(m, self._ops.common_elementwise, r)
        return t + 2.0 * ring_all_reduce_s(self._all_reduce_bytes_per_token * m, self.tp,
                                           self.hardware)

    def _mlp_s(self, m: int, gemms: tuple[Gemm, ...], ew: tuple[float, int],
               r: tuple[float, ...]) -> float:
        return self._gemms_s(m, gemms, r) + self._elementwise_s(m, ew, r)

    def _moe_mlp_s(self, m: int, r: tuple[float, ...]) -> float:
        ops, hw = self._ops, self.hardware
        x = ops.experts
        t = self._mlp_s(m, ops.moe_gemms, ops.moe_elementwise, r)
        touched = expected_touched_experts(m, x.num_active, x.num_experts)
        token_experts = m * x.num_active
        flops_s = r[1] if x.fp8 else r[0]
        compute = (x.flops_per_token_expert
                   * (token_experts + hw.compute_efficiency_half_tokens * touched) / flops_s)
        memory = (touched * x.weight_bytes_per_expert
                  + token_experts * x.io_bytes_per_token_expert) / r[2]
        return t + (compute if compute > memory else memory) + 2 * hw.kernel_floor_s

    def _head_s(self, m: int, num_samples: int, r: tuple[float, ...]) -> float:
        hw = self.hardware
        t = self._final_bytes_per_token * m / r[3]
        if num_samples:
            t += _gemm_s(num_samples, *self._lm_head, r[0], r[2],
                         hw.compute_efficiency_half_tokens, hw.kernel_floor_s)
            t += self._sampler_bytes_per_seq * num_samples / r[3]
            # vLLM gathers the vocab-sharded logits onto one rank: one more collective.
            # (priced as an all-reduce of the shard: an upper bound, and small).
            t += ring_all_reduce_s(self._logits_bytes_per_seq * num_samples, self.tp, hw)
        return t

    def _attention_s(self, pairs: int, kv_tokens: int, q_tokens: int, a: AttentionOps,
                     r: tuple[float, ...]) -> float:
        if q_tokens == 0:
            return 0.0
        hw = self.hardware
        t = 0.0
        if a.kv_up is not None:  # MLA: kv_b on attended tokens (prefill) / per query (decode)
            t = self._gemms_s(kv_tokens if a.kv_up_on_kv_tokens else q_tokens, (a.kv_up,), r)
        compute = pairs * a.flops_per_pair / r[4]
        memory = (kv_tokens * a.kv_bytes_per_kv_token + q_tokens * a.q_bytes_per_q_token) / r[5]
        return t + (compute if compute > memory else memory) + hw.kernel_floor_s
