"""Hardware and model specifications for the simulator's cost model.

Datasheet numbers are from the vendors' datasheets and the models' published
`config.json` (restated in the project's reference notes); efficiency fields are
calibrated against the Vidur operator profiles (microsoft/vidur, MIT) by
`benchmarks/calibrate_linear.py`. Nothing here reads files at run time.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """One accelerator. Peaks are dense (no sparsity); efficiencies are fractions of them."""

    name: str
    peak_tflops_bf16: float
    peak_tflops_fp8: float            # 0 when the device has no fp8 tensor cores
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
    """A dense Llama-family decoder (GQA attention, SwiGLU MLP, RMSNorm, RoPE)."""

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

    def params_per_layer(self) -> int:
        q_o = 2 * self.hidden * self.num_heads * self.head_dim
        k_v = 2 * self.hidden * self.num_kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        return q_o + k_v + mlp + 2 * self.hidden  # + two RMSNorm weight vectors

    def num_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.num_layers * self.params_per_layer() + embeddings + self.hidden

    def weight_bytes(self) -> int:
        return self.num_params() * self.dtype_bytes

    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers (the whole model, before any TP split)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


MODELS: dict[str, ModelSpec] = {
    # Meta-Llama-3-8B / -70B and Llama-3.1-405B config.json (untied embeddings).
    "llama3_8b": ModelSpec("llama3_8b", 32, 4096, 32, 8, 128, 14336, 128256, False, 2, 8192),
    "llama3_70b": ModelSpec("llama3_70b", 80, 8192, 64, 8, 128, 28672, 128256, False, 2, 8192),
    "llama31_405b": ModelSpec("llama31_405b", 126, 16384, 128, 8, 128, 53248, 128256, False,
                              2, 131072),
    # Toy shapes for CPU runs of the real torch executor, with Llama-3's vocabulary so
    # the real tokenizer works. tiny: ~33M params, almost all of it the embedding.
    "tiny_llama": ModelSpec("tiny_llama", 4, 256, 4, 2, 64, 512, 128256, True, 2, 2048),
    # small: ~100M params. With a 128256 vocab the tied embedding alone is 65.7M at
    # hidden 512, so a wider model (e.g. hidden 768 -> 98.5M embedding + 75M layers =
    # 174M) overshoots; 10 layers of 512 (8 heads x 64, 2 KV heads as Llama-3's 4:1
    # GQA, MLP 3.5x hidden) add 34M for 99.8M in total.
    "small_llama": ModelSpec("small_llama", 10, 512, 8, 2, 64, 1792, 128256, True, 2, 2048),
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
