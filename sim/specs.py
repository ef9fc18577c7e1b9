"""Hardware and model specifications for the simulator's cost model.

Datasheet numbers are from the vendors' datasheets and the models' published
`config.json` (restated in the project's reference notes); efficiency fields are
calibrated against the Vidur operator profiles (microsoft/vidur, MIT) by
`benchmarks/calibrate_linear.py`. Nothing here reads files at run time.
"""
from __future__ import annotations

from dataclasses import dataclass

from sim.arch import (MLASpec, MoESpec, layer_linears, layer_params, norm_params_per_layer,
                      num_moe_layers)

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """One accelerator. Peaks are dense (no sparsity); efficiencies are fractions of them."""

    name: str
    peak_tflops_bf16: float
    peak_tflops_fp8: float            # 0 when the device has no fp8 tensor cores; used by
                                      # FP8-weight models (sim/layer_ops.py)
    hbm_bytes: int                    # total device memory as the driver reports it
    hbm_bandwidth_bytes_s: float
    num_sms: int
    nvlink_bandwidth_bytes_s: float   # per direction, per GPU
    interconnect_latency_s: float     # fixed cost of one all-reduce (launch + sync)
    # Calibrated (see module docstring): GEMM efficiency eff(m) = max * m / (m + half_tokens)
    compute_efficiency_max: float
    compute_efficiency_half_tokens: float
    bandwidth_efficiency: float       # weight/KV streaming kernels (GEMV, paged attention)
    elementwise_bandwidth_efficiency: float  # norms, rope, SiLU-and-mul
    kernel_floor_s: float             # per-kernel fixed time (launch tail, sync), additive
    link_efficiency: float            # achieved ring bus bandwidth / link bandwidth
    # Assumed, not calibrated (the profiles hold no attention kernels): FlashAttention-2
    # forward reaches ~50-70 % of A100 peak and ~35 % of H100 peak (Dao 2023, Fig. 5-7).
    attention_compute_efficiency: float
    # Share of the SMs at which streaming kernels stop gaining bandwidth (share_model.py).
    bandwidth_saturation_share: float

    @property
    def peak_flops_s(self) -> float:
        return self.peak_tflops_bf16 * 1e12


# Fitted by benchmarks/calibrate_linear.py on the Vidur profiles (compute/a100/*/mlp.csv:
# A100-80GB, Llama-2-7b/70b + CodeLlama-34b, TP 1-8, 1-4096 tokens; GEMM median |err|
# 4.9 % at >= 64 tokens, TP1+TP4) and network/a100_pairwise_nvlink/all_reduce.csv
# (NVLink-bridged pair, NCCL through torch.distributed: the 44 us latency is NCCL's, an
# upper bound for vLLM's custom all-reduce on NVSwitch boxes).
_A100_FIT = dict(
    compute_efficiency_max=0.751,
    compute_efficiency_half_tokens=89.8,
    bandwidth_efficiency=0.809,
    elementwise_bandwidth_efficiency=0.506,
    kernel_floor_s=6.51e-6,
    link_efficiency=0.708,
    interconnect_latency_s=44.2e-6,
)
# Same script, compute/h100 and network/h100_pairwise_nvlink (median |err| 6.6 %).
# Vidur does not name the card variant; fractions are of H100 SXM datasheet peaks.
# 0.97 of 3.35 TB/s (read-mostly GEMV) is above the ~3.0 TB/s a real H100 SXM copy
# reaches (read + write), so bandwidth-bound H100/H200 steps may be ~5-10 % optimistic.
# H200 is the same GH100 die with faster HBM3e; a large copy reaches ~0.9 of peak on
# both (3.0/3.35 and 4.3/4.8 TB/s), so the H100 fractions are reused.
_H100_FIT = dict(
    compute_efficiency_max=0.755,
    compute_efficiency_half_tokens=171.0,
    bandwidth_efficiency=0.97,
    elementwise_bandwidth_efficiency=0.616,
    kernel_floor_s=6.63e-6,
    link_efficiency=0.663,
    interconnect_latency_s=17.2e-6,
)

# SM share that saturates HBM for streaming kernels (share_model.py): 0.5 on A100,
# checked against semi-PD's measured A100 curves by benchmarks/share_model_check.py.
# H100/H200: a guess, not measured: they need more bytes/s per SM at peak (25 and 36
# vs 19 GB/s) but have a faster per-SM memory path, so a bit more than half.
_SAT_A100 = 0.5
_SAT_H100 = 0.6

HARDWARE: dict[str, HardwareSpec] = {
    # Memory sizes are the totals the driver reports (nvidia-smi / cudaMemGetInfo),
    # which is what vLLM's gpu_memory_utilization multiplies.
    "a100_40g": HardwareSpec("a100_40g", 312.0, 0.0, 40960 * MIB, 1.555e12, 108, 300e9,
                             attention_compute_efficiency=0.5,
                             bandwidth_saturation_share=_SAT_A100, **_A100_FIT),
    "a100_80g": HardwareSpec("a100_80g", 312.0, 0.0, 81920 * MIB, 2.039e12, 108, 300e9,
                             attention_compute_efficiency=0.5,
                             bandwidth_saturation_share=_SAT_A100, **_A100_FIT),
    # A800: an A100 with NVLink cut to 400 GB/s total (200 each way).
    "a800_80g": HardwareSpec("a800_80g", 312.0, 0.0, 81920 * MIB, 2.039e12, 108, 200e9,
                             attention_compute_efficiency=0.5,
                             bandwidth_saturation_share=_SAT_A100, **_A100_FIT),
    "h100_80g": HardwareSpec("h100_80g", 989.0, 1979.0, 81559 * MIB, 3.35e12, 132, 450e9,
                             attention_compute_efficiency=0.35,
                             bandwidth_saturation_share=_SAT_H100, **_H100_FIT),
    "h200_141g": HardwareSpec("h200_141g", 989.0, 1979.0, 143771 * MIB, 4.8e12, 132, 450e9,
                              attention_compute_efficiency=0.35,
                              bandwidth_saturation_share=_SAT_H100, **_H100_FIT),
    # ROUGH numbers for this repo's 2-core x86 CI box, used only to give the torch
    # executor's CPU runs a cost-model counterpart: 2 cores x 2 AVX2 FMA units x 8 fp32
    # lanes x 2 flop x ~2.5 GHz = 0.16 TFLOP/s (no native bf16); ~20 GB/s DRAM;
    # "SMs" = cores; no GPU link. Efficiencies are guesses, not calibrated.
    "cpu": HardwareSpec("cpu", 0.16, 0.0, 16 * GIB, 20e9, 2, 0.0,
                        interconnect_latency_s=0.0, compute_efficiency_max=0.5,
                        compute_efficiency_half_tokens=8.0, bandwidth_efficiency=0.5,
                        elementwise_bandwidth_efficiency=0.3, kernel_floor_s=20e-6,
                        link_efficiency=1.0, attention_compute_efficiency=0.3,
                        bandwidth_saturation_share=1.0),
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder: dense Llama-family (GQA attention, SwiGLU MLP, RMSNorm, RoPE) by default;
    the optional fields describe DeepSeek's MLA attention and MoE layers (sim/arch.py).

    `dtype_bytes` is the activation and KV-cache dtype; `weight_dtype_bytes` (None: the
    same) the dtype of the quantized linear weights (DeepSeek-V3's FP8 checkpoint: 1 byte,
    with embeddings, LM head, norms and router in bf16). For MLA models `num_kv_heads` and
    `head_dim` restate config.json (heads, qk_nope + qk_rope) but the MLA dims are used;
    `intermediate` is the dense MLP width (of the first `moe.num_dense_layers` layers)."""

    name: str
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int                 # MLP hidden size (gate and up each this wide)
    vocab: int
    tied_embeddings: bool
    dtype_bytes: int
    max_context_tokens: int
    rope_theta: float = 500000.0      # Llama-3 config.json
    rms_norm_eps: float = 1e-5
    weight_dtype_bytes: int | None = None
    mla: MLASpec | None = None        # None: GQA attention
    moe: MoESpec | None = None        # None: every layer has the dense MLP

    @property
    def attention(self) -> str:
        """'gqa' or 'mla'."""
        return "gqa" if self.mla is None else "mla"

    @property
    def weight_bytes_per_param(self) -> int:
        return self.dtype_bytes if self.weight_dtype_bytes is None else self.weight_dtype_bytes

    def params_per_layer(self) -> int:
        """One layer with the dense MLP (every layer of a dense model)."""
        return int(layer_params(self, moe_layer=False))

    def _embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def _sum_layers(self, num_experts: float | None) -> float:
        n_moe = num_moe_layers(self)
        dense = (self.num_layers - n_moe) * layer_params(self, False)
        return dense + (n_moe * layer_params(self, True, num_experts) if n_moe else 0)

    def num_params(self) -> int:
        return int(self._sum_layers(None)) + self._embedding_params() + self.hidden

    def active_params(self) -> int:
        """Parameters a token's forward multiplies: top-k routed + shared experts and all
        else but the input embedding (a row lookup). This convention gives 2.45B for
        V2-Lite and 36.6B for V3 against the published 2.4B and 37B."""
        k = self.moe.num_active_experts if self.moe else None
        lm_head = self.vocab * self.hidden
        return int(self._sum_layers(k)) + lm_head + self.hidden

    def weight_bytes(self) -> int:
        return int(stage_weight_bytes(self, 0, self.num_layers, True, True, tp=1))

    def kv_bytes_per_token(self) -> int:
        """KV cache of one token over all layers (the whole model, before any TP split):
        GQA: K and V of every KV head; MLA: one latent of kv_lora_rank + qk_rope_head_dim."""
        if self.mla is not None:
            return self.num_layers * self.mla.latent_dim * self.dtype_bytes
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


def stage_weight_bytes(m: ModelSpec, first_layer: int, end_layer: int, has_embedding: bool,
                       has_lm_head: bool, tp: int) -> float:
    """Weight bytes one GPU holds for layers [first_layer, end_layer) at tensor-parallel
    degree tp: sharded matrices / tp, replicated ones whole; vocab-parallel embedding and
    LM head / tp; norms (replicated, in the activation dtype) whole."""
    n_dense = max(0, min(end_layer, m.num_layers - num_moe_layers(m)) - first_layer)
    n_moe = end_layer - first_layer - n_dense
    b, wb = m.dtype_bytes, m.weight_bytes_per_param
    total = 0.0
    for count, moe in ((n_dense, False), (n_moe, True)):
        if count:
            per_layer = sum(x.params * (wb if x.quantized else b) / (1 if x.shard == "rep" else tp)
                            for x in layer_linears(m, moe))
            total += count * (per_layer + norm_params_per_layer(m) * b)
    vocab_shard = m.vocab * m.hidden * b / tp
    if has_embedding:
        total += vocab_shard
    if has_lm_head:
        total += m.hidden * b + (0 if m.tied_embeddings and has_embedding else vocab_shard)
    return total


MODELS: dict[str, ModelSpec] = {
    # Meta-Llama-3-8B / -70B and Llama-3.1-405B config.json (untied embeddings).
    "llama3_8b": ModelSpec("llama3_8b", 32, 4096, 32, 8, 128, 14336, 128256, False, 2, 8192),
    "llama3_70b": ModelSpec("llama3_70b", 80, 8192, 64, 8, 128, 28672, 128256, False, 2, 8192),
    "llama31_405b": ModelSpec("llama31_405b", 126, 16384, 128, 8, 128, 53248, 128256, False,
                              2, 131072),
    # Toy shapes for CPU runs of the real torch executor, with Llama-3's vocabulary so
    # the real tokenizer works (engines/torch/sizes.py builds their checkpoints from these).
    # tiny: 68.0M params, 65.7M of them the untied embedding and LM head (as Llama-3 8B).
    "tiny_llama": ModelSpec("tiny_llama", 4, 256, 4, 2, 64, 512, 128256, False, 2, 2048),
    # small: ~100M params. With a 128256 vocab the tied embedding alone is 65.7M at
    # hidden 512, so a wider model (e.g. hidden 768 -> 98.5M embedding + 75M layers =
    # 174M) overshoots; 10 layers of 512 (8 heads x 64, 2 KV heads as Llama-3's 4:1
    # GQA, MLP 3.5x hidden) add 34M for 99.8M in total.
    "small_llama": ModelSpec("small_llama", 10, 512, 8, 2, 64, 1792, 128256, True, 2, 2048),
    # deepseek-ai/DeepSeek-V2-Lite config.json: 27 layers, hidden 2048, 16 heads, MLA with
    # q_lora_rank null, kv_lora_rank 512, rope 64 / nope 128 / v 128; 64 routed experts,
    # 6 per token, 2 shared, moe_intermediate_size 1408, first_k_dense_replace 1 with
    # intermediate_size 10944; vocab 102400, untied; rope_theta 10000, rms_norm_eps 1e-6.
    # Context: 32k per the model card (config.json's max_position_embeddings 163840 is
    # the YaRN-scaled limit, factor 40 x 4096). 15.7B total / 2.4B active (V2 paper, Tab.).
    "deepseek_v2_lite": ModelSpec(
        "deepseek_v2_lite", 27, 2048, 16, 16, 192, 10944, 102400, False, 2, 32768,
        rope_theta=10000.0, rms_norm_eps=1e-6,
        mla=MLASpec(q_lora_rank=0, kv_lora_rank=512, qk_nope_head_dim=128,
                    qk_rope_head_dim=64, v_head_dim=128),
        moe=MoESpec(num_routed_experts=64, num_active_experts=6, num_shared_experts=2,
                    expert_intermediate=1408, num_dense_layers=1)),
    # deepseek-ai/DeepSeek-V3 config.json: 61 layers, hidden 7168, 128 heads, MLA with
    # q_lora_rank 1536; 256 routed experts, 8 per token, 1 shared, moe_intermediate_size
    # 2048, first_k_dense_replace 3 with intermediate_size 18432; vocab 129280. FP8
    # (e4m3, 128x128 block scales, ~0.02 % extra bytes, ignored) linear weights, bf16
    # activations and KV. 671B total / 37B active, excluding the 14B multi-token-
    # prediction module (V3 report, arXiv:2412.19437), which serving without speculative
    # decoding does not load. Context 128k (model card).
    "deepseek_v3": ModelSpec(
        "deepseek_v3", 61, 7168, 128, 128, 192, 18432, 129280, False, 2, 131072,
        rope_theta=10000.0, rms_norm_eps=1e-6, weight_dtype_bytes=1,
        mla=MLASpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                    qk_rope_head_dim=64, v_head_dim=128),
        moe=MoESpec(num_routed_experts=256, num_active_experts=8, num_shared_experts=1,
                    expert_intermediate=2048, num_dense_layers=3)),
}


def _lookup(registry: dict, kind: str, name: str):
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; valid names: {valid}") from None


def get_hardware(name: str) -> HardwareSpec:
    return _lookup(HARDWARE, "hardware", name)


def get_model(name: str) -> ModelSpec:
    return _lookup(MODELS, "model", name)
