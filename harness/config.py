"""Run configuration: Hydra structured configs (the schema of `conf/`), also usable from
plain Python. Hydra's DictConfig is converted to these dataclasses at the edge
(`OmegaConf.to_object`), so nothing below bench.py sees Hydra."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.config import EngineConfig
from workloads.config import WorkloadConfig

EXECUTORS = ("sim", "torch")
SHARE_MODELS = ("roofline", "measured")
TPOT_DEFINITIONS = ("vllm", "per_output_token")
RATE_UNITS = ("gpu", "instance")


@dataclass
class ModelConfig:
    name: str = "llama3_8b"          # a key of sim.specs.MODELS
    checkpoint: str | None = None    # Hugging Face-format directory (torch executor)


@dataclass
class HardwareConfig:
    name: str = "a100_80g"           # a key of sim.specs.HARDWARE


@dataclass
class ExecutorConfig:
    name: str = "sim"                # sim | torch
    share_model: str = "roofline"    # sim: how step time grows as the compute share shrinks
    device: str = "cpu"              # torch
    dtype: str = "bfloat16"          # torch
    num_threads: int | None = None   # torch: None = all cores
    temperature: float = 0.0         # torch: 0 = greedy
    ignore_eos: bool = True          # torch: force output_len (benchmark semantics)
    kv_cache_bytes: int | None = None  # torch: KV budget; None = from hardware memory


@dataclass
class SLOConfig:
    name: str = "default"
    ttft_s: float = 0.5              # semi-PD code defaults (semipd.md section 3)
    tpot_s: float = 0.1
    tpot_definition: str = "vllm"    # vllm: (e2e-ttft)/(n-1); per_output_token: (e2e-ttft)/n


@dataclass
class RunConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    results_dir: str = "results"
    tag: str = ""                    # label of the study this run belongs to (e.g. fig12_llama3_8b_sharegpt)
    # What `workload.rate` is per: "gpu" (total = rate x GPUs, the semi-PD paper's
    # convention for TP1) or "instance" (rate x TP/PP groups: for multi-GPU instances,
    # where a per-physical-GPU rate would mean e.g. 32x the load for a TP8xPP4 405B).
    rate_unit: str = "gpu"
    progress: bool = True            # progress bar on long runs
    plots: bool = True
    check_integrity: bool = False    # check KV pools' invariants after every step (slow)
    # token_times.csv (every token's time, for per-request ITLs in exports): None = only
    # for real executors (a simulated run can be replayed exactly instead; ~2 MB/1000 req)
    save_token_times: bool | None = None

    def validate(self) -> None:
        self.engine.validate()
        _one_of("executor.name", self.executor.name, EXECUTORS)
        _one_of("rate_unit", self.rate_unit, RATE_UNITS)
        _one_of("executor.share_model", self.executor.share_model, SHARE_MODELS)
        _one_of("slo.tpot_definition", self.slo.tpot_definition, TPOT_DEFINITIONS)
        if self.slo.ttft_s <= 0 or self.slo.tpot_s <= 0:
            raise ValueError(f"slo.ttft_s and slo.tpot_s must be > 0; got {self.slo.ttft_s}, {self.slo.tpot_s}")


def _one_of(option: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{option} must be one of {', '.join(valid)}; got '{value}'")
