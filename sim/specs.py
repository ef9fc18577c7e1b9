"""Hardware and model specifications for the simulator's cost model, read from files.

- A GPU is `conf/hardware/<name>.yaml` (`hardware=<name>`): datasheet numbers and the
  efficiencies calibrated against the Vidur operator profiles (microsoft/vidur, MIT) by
  `benchmarks/calibrate_linear.py`, with their source. A GPU whose file has no calibrated
  efficiencies runs with DEFAULT_EFFICIENCIES, and the run names them (`uncalibrated`).
- A model is a Hugging Face config.json (sim/hf_config.py): a bundled one,
  `models/<name>/config.json` selected by `conf/model/<name>.yaml` (`model=<name>`), or
  any local one (`model.config=PATH`).
"""
from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engines.errors import ConfigError
from sim.arch import (MLASpec, MoESpec, bias_params_per_layer, layer_linears, layer_params,
                      norm_params_per_layer, num_moe_layers)

GIB = 1024**3
MIB = 1024**2
REPO_DIR = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_DIR / "models"            # bundled config.json files, one directory per model
MODEL_CONF_DIR = REPO_DIR / "conf" / "model"
HARDWARE_DIR = REPO_DIR / "conf" / "hardware"


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
    pcie_bandwidth_bytes_s: float = 25e9  # per direction: KV transfers and swaps over PCIe

    @property
    def peak_flops_s(self) -> float:
        return self.peak_tflops_bf16 * 1e12


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
    qkv_bias: bool = False            # q, k, v projections with bias (Qwen2; Llama attention_bias)
    o_bias: bool = False              # o projection with bias (Llama, Qwen3 attention_bias)
    qk_norm: bool = False             # RMSNorm of each query and key head (Qwen3)
    # Mistral's attention window; the context is capped at it (sim/hf_config.py), so None
    # and a window give the same attention.
    sliding_window: int | None = None

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

    def active_params(self, count_embedding: bool = False) -> int:
        """Parameters a token's forward multiplies: top-k routed + shared experts and all
        else but the input embedding (a row lookup), or with it (`count_embedding`, as
        Mistral and Qwen count their MoE models' active parameters). Without it this
        gives 2.45B for DeepSeek-V2-Lite and 36.6B for V3 against the published 2.4B and 37B."""
        k = self.moe.num_active_experts if self.moe else None
        lm_head = self.vocab * self.hidden
        embedding = lm_head if count_embedding else 0
        return int(self._sum_layers(k)) + lm_head + self.hidden + embedding

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
            # Biases counted whole (replicated): a few thousand parameters per layer.
            total += count * (per_layer + (norm_params_per_layer(m) + bias_params_per_layer(m)) * b)
    vocab_shard = m.vocab * m.hidden * b / tp
    if has_embedding:
        total += vocab_shard
    if has_lm_head:
        total += m.hidden * b + (0 if m.tied_embeddings and has_embedding else vocab_shard)
    return total




# ----- hardware from conf/hardware/*.yaml ---------------------------------------------------
# Datasheet numbers every GPU file must give; the rest have defaults.
HARDWARE_REQUIRED = ("peak_tflops_bf16", "hbm_bytes", "hbm_bandwidth_bytes_s", "num_sms", "nvlink_bandwidth_bytes_s")
HARDWARE_OPTIONAL = {"peak_tflops_fp8": 0.0, "pcie_bandwidth_bytes_s": 25e9}  # no FP8 units; PCIe 4.0 x16
# Calibrated numbers a GPU file may leave out: then these, the A100 calibration
# (conf/hardware/a100_80g.yaml), and the run lists them as uncalibrated.
DEFAULT_EFFICIENCIES = dict(
    compute_efficiency_max=0.751, compute_efficiency_half_tokens=89.8, bandwidth_efficiency=0.809,
    elementwise_bandwidth_efficiency=0.506, kernel_floor_s=6.51e-6, link_efficiency=0.708,
    interconnect_latency_s=44.2e-6, attention_compute_efficiency=0.5, bandwidth_saturation_share=0.5)
_HARDWARE_TYPES = typing.get_type_hints(HardwareSpec)
_HARDWARE_KEYS = {f.name for f in fields(HardwareSpec)} | {"calibration_source"}


@dataclass(frozen=True, slots=True)
class Hardware:
    """A GPU as its file gives it: the spec, the fields that took defaults, the source."""

    spec: HardwareSpec
    uncalibrated: tuple[str, ...]
    calibration_source: str | None


def hardware_from_fields(values: Mapping[str, Any], source: str) -> Hardware:
    """A HardwareSpec from a GPU file's fields (None or absent: missing). Errors name the
    file (`source`) and the field."""
    unknown = sorted(set(values) - _HARDWARE_KEYS)
    if unknown:
        raise ConfigError(f"{source}: hardware fields", f"among {', '.join(sorted(_HARDWARE_KEYS))}", unknown)
    given = {k: v for k, v in values.items() if v is not None}
    out: dict[str, Any] = {"name": given.get("name")}
    if not isinstance(out["name"], str) or not out["name"]:
        raise ConfigError(f"{source}: hardware.name", "a non-empty name", out["name"])
    for key in HARDWARE_REQUIRED:
        if key not in given:
            raise ConfigError(f"{source}: hardware.{key}", "set (a datasheet number every GPU file gives)", None)
    defaults = {**HARDWARE_OPTIONAL, **DEFAULT_EFFICIENCIES}
    for key, default in defaults.items():
        out[key] = given.get(key, default)
    for key in HARDWARE_REQUIRED:
        out[key] = given[key]
    for key in (*HARDWARE_REQUIRED, *defaults):
        value, kind = out[key], _HARDWARE_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or (kind is int and not isinstance(value, int)):
            raise ConfigError(f"{source}: hardware.{key}", "a non-negative " + ("integer" if kind is int else "number"),
                              value)
        out[key] = int(value) if kind is int else float(value)
    for key in ("peak_tflops_bf16", "hbm_bytes", "hbm_bandwidth_bytes_s", "num_sms", "compute_efficiency_max",
                "bandwidth_efficiency", "elementwise_bandwidth_efficiency", "link_efficiency",
                "attention_compute_efficiency", "bandwidth_saturation_share"):
        if out[key] <= 0:
            raise ConfigError(f"{source}: hardware.{key}", "positive", out[key])
    uncalibrated = tuple(k for k in DEFAULT_EFFICIENCIES if k not in given)
    return Hardware(HardwareSpec(**out), uncalibrated, given.get("calibration_source"))


def hardware_names() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def load_hardware(name: str) -> Hardware:
    """conf/hardware/<name>.yaml."""
    from omegaconf import OmegaConf
    path = HARDWARE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("hardware.name", f"one of {', '.join(hardware_names())} (files in {HARDWARE_DIR})", name)
    return hardware_from_fields(OmegaConf.to_container(OmegaConf.load(path)), str(path))


def get_hardware(name: str) -> HardwareSpec:
    return load_hardware(name).spec


# ----- models from Hugging Face config.json files -------------------------------------------
def model_names() -> list[str]:
    """The bundled models: a conf/model/<name>.yaml with a models/<name>/config.json."""
    return sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml") if (MODELS_DIR / p.stem / "config.json").is_file())


@functools.lru_cache(maxsize=None)
def _bundled_max_context(name: str) -> int | None:
    from omegaconf import OmegaConf
    path = MODEL_CONF_DIR / f"{name}.yaml"
    return OmegaConf.load(path).get("max_context_tokens") if path.is_file() else None


def load_model(name: str, config: str | None = None, max_context_tokens: int | None = None) -> ModelSpec:
    """The model `name` from `config` (a config.json or a model directory; None: the bundled
    models/<name>), its context capped at `max_context_tokens` if given (None: the
    bundled entry's cap, conf/model/<name>.yaml, if any)."""
    from sim.hf_config import config_path
    if config is None:
        if name not in model_names():
            raise ConfigError("model.name", f"one of the bundled models ({', '.join(model_names())}), or "
                              "model.config=PATH (a Hugging Face config.json or model directory)", name)
        config = str(MODELS_DIR / name)
        if max_context_tokens is None:
            max_context_tokens = _bundled_max_context(name)
    path = config_path(config)
    try:  # read again when the file changes (a checkpoint written during the process)
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None  # read_config names the missing file
    return _load_model(name, str(path), version, max_context_tokens)


@functools.lru_cache(maxsize=None)
def _load_model(name: str, path: str, _version, max_context_tokens: int | None) -> ModelSpec:
    from sim.hf_config import ModelConfigError, read_config, spec_fields
    out = spec_fields(read_config(path), path)
    if max_context_tokens is not None:
        if isinstance(max_context_tokens, bool) or not isinstance(max_context_tokens, int) or max_context_tokens < 1:
            raise ConfigError("model.max_context_tokens", "a positive integer or null", max_context_tokens)
        if max_context_tokens > out["max_context_tokens"]:
            raise ModelConfigError(f"model.max_context_tokens={max_context_tokens} is above what {path} allows "
                                   f"({out['max_context_tokens']} tokens)")
        out["max_context_tokens"] = max_context_tokens
    return ModelSpec(name=name, **out)


def get_model(name: str) -> ModelSpec:
    """A bundled model (models/<name>/config.json)."""
    return load_model(name)


def model_label(config: str | None, default: str) -> str:
    """A model's name: `default` for a bundled one (config None), else the name of the
    model directory (`.../Qwen2.5-7B/config.json` and `.../Qwen2.5-7B` give Qwen2.5-7B)."""
    if config is None:
        return default
    path = Path(str(config)).expanduser()
    if path.name == "config.json":
        path = path.parent
    return path.resolve().name if path.name in ("", ".") else path.name
