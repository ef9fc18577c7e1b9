"""Run configuration: Hydra structured configs (the schema of `conf/`), also usable from
plain Python. Hydra's DictConfig is converted to these dataclasses at the edge
(`OmegaConf.to_object`), so nothing below bench.py sees Hydra."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from engines.config import EngineConfig
from engines.errors import ConfigError, check_choice, check_int, check_number
from sim.share_model import SHARE_MODELS
from sim.specs import Hardware, ModelSpec, hardware_from_fields, load_hardware, load_model, model_label
from workloads.config import WorkloadConfig

EXECUTORS = ("sim", "torch", "http")
HTTP_APIS = ("completions", "chat")
COST_MODELS = ("roofline", "profiled")
TPOT_DEFINITIONS = ("vllm", "per_output_token")
RATE_UNITS = ("gpu", "instance")
# The torch executor's dtypes (engines/torch/runtime.py; a test keeps the two equal, as
# this module must not import torch) and devices: torch.device strings it supports.
ATTENTION_BACKENDS = ("auto", "kernel", "torch", "padded")
RUNTIMES = ("processes", "inprocess")
SHARE_SWITCHES = ("inplace", "standby")
TORCH_DTYPES = ("bfloat16", "float32", "float16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


# conf/model/*.yaml: `name: ${model_name:${.config},<bundled name>}`, so a model given by
# model.config=PATH is named after its directory (sim.specs.model_label).
OmegaConf.register_new_resolver("model_name", model_label, replace=True)


@dataclass
class ModelConfig:
    name: str = "llama3_8b"          # a bundled model (models/<name>), or the label of `config`
    # A Hugging Face config.json or a model directory holding one (sim/hf_config.py); None:
    # the bundled models/<name>/config.json.
    config: str | None = None
    # Cap on the context (None: config.json's max_position_embeddings, or the bundled
    # entry's cap: DeepSeek's model cards serve less than their YaRN-scaled limit).
    max_context_tokens: int | None = None
    checkpoint: str | None = None    # Hugging Face-format directory (torch executor)

    def spec(self) -> ModelSpec:
        """The model as the simulator describes it: from `config`; without one, from the
        checkpoint's config.json if there is one (the model a real run serves), else the
        bundled models/<name>."""
        config = self.config
        if config is None and self.checkpoint and (Path(self.checkpoint) / "config.json").is_file():
            config = self.checkpoint
        return load_model(self.name, config, self.max_context_tokens)


@dataclass
class HardwareConfig:
    """A GPU: conf/hardware/<name>.yaml, every sim.specs.HardwareSpec field (sim/specs.py
    hardware_from_fields checks which must be set and gives the rest defaults). All unset
    (a RunConfig made in Python): the named file."""

    name: str = "a100_80g"
    peak_tflops_bf16: float | None = None
    peak_tflops_fp8: float | None = None
    hbm_bytes: int | None = None
    hbm_bandwidth_bytes_s: float | None = None
    num_sms: int | None = None
    nvlink_bandwidth_bytes_s: float | None = None
    pcie_bandwidth_bytes_s: float | None = None
    interconnect_latency_s: float | None = None
    compute_efficiency_max: float | None = None
    compute_efficiency_half_tokens: float | None = None
    bandwidth_efficiency: float | None = None
    elementwise_bandwidth_efficiency: float | None = None
    kernel_floor_s: float | None = None
    link_efficiency: float | None = None
    attention_compute_efficiency: float | None = None
    bandwidth_saturation_share: float | None = None
    calibration_source: str | None = None


def hardware_of(cfg: HardwareConfig) -> Hardware:
    """The run's GPU: its fields as composed (a conf/hardware file and any overrides), or,
    when none is set (a RunConfig made in Python), conf/hardware/<name>.yaml."""
    values = dataclasses.asdict(cfg)
    if all(v is None for k, v in values.items() if k != "name"):
        return load_hardware(cfg.name)
    return hardware_from_fields(values, f"hardware={cfg.name}")


@dataclass
class ExecutorConfig:
    name: str = "sim"                # sim | torch
    share_model: str = "roofline"    # sim: how step time grows as the compute share shrinks
    # sim: roofline = predicted from the hardware spec (sim/cost_model.py); profiled = from
    # the measurements in `profile`: a CSV of the real executor's steps (sim/profiled.py;
    # written by `python -m engines.torch.profiler`), or Vidur-format GPU operator profiles
    # (sim/vidur_profile.py): a directory holding mlp.csv (+ attention.csv), .csv or .csv.xz,
    # or the path of that mlp.csv; rows per TP degree, so engine.tp > 1 works with them.
    cost_model: str = "roofline"
    profile: str | None = None
    # profiled: every step time x this, the machine's speed now against when it was profiled
    # (harness.fidelity measures it on anchor steps before each real run); 1 = as profiled.
    profile_scale: float = 1.0
    # sim, roofline: host time added to every step (scheduling, input preparation, sampling);
    # None = sim.cost_model.DEFAULT_STEP_OVERHEAD_S (1 ms). The paper report's capacity
    # diagnostic varies it; it is never fitted.
    step_overhead_s: float | None = None
    device: str = "cpu"              # torch
    dtype: str = "bfloat16"          # torch
    num_threads: int | None = None   # torch: None = all cores
    temperature: float = 0.0         # torch: 0 = greedy
    # torch: true = run every request to its output_len (vLLM's benchmarks); false = a
    # sampled EOS ends it (requests.csv: finish_reason=stop). No effect with sim (no tokens).
    ignore_eos: bool = True
    # KV budget per instance; None = from hardware memory (sim) or 1 GiB on a CPU (torch).
    # Set it on both sides of a sim-vs-real comparison so that both have the same pool.
    kv_cache_bytes: int | None = None
    # torch, CPU attention: auto = the C++ decode kernel where it builds, else torch ops;
    # kernel = require the kernel; torch = torch ops only; padded = the old padded path.
    attention: str = "auto"
    # torch: processes = every worker in its own process over shared weights and KV (any
    # design); inprocess = one unified worker computing inside the driver.
    runtime: str = "processes"
    # torch, CPU: oneDNN-packed copies of the linear weights (faster GEMMs, one private
    # copy per worker process); false = every worker computes on the shared weights only.
    pack_weights: bool = True
    # torch, semi-PD: how a worker takes a new compute share. inplace = re-bind the live
    # process's threads; standby = start a new process on the new cores and hand over at
    # an iteration boundary (the paper's). GPUs always use standby (MPS is per process).
    share_switch: str = "inplace"
    # http (harness/http_run.py): an OpenAI-compatible server at `url`, requests naming
    # `model` (None: the only one it lists) through the completions or chat API.
    url: str | None = None
    model: str | None = None
    api: str = "completions"
    max_concurrency: int | None = None  # http: requests in flight at most (None: no cap)
    request_timeout_s: float = 600.0    # http: a request taking longer is recorded as failed
    return_token_ids: bool = True       # http: ask for each chunk's token ids
    label: str | None = None            # http: engine_label; None = http:<model>

    def validate(self) -> None:
        check_choice("executor.name", self.name, EXECUTORS)
        check_choice("executor.share_model", self.share_model, tuple(SHARE_MODELS))
        check_choice("executor.cost_model", self.cost_model, COST_MODELS)
        check_number("executor.profile_scale", self.profile_scale, 0.0, lo_open=True)
        if self.step_overhead_s is not None:
            check_number("executor.step_overhead_s", self.step_overhead_s, 0.0)
            if self.name != "sim" or self.cost_model != "roofline":
                raise ConfigError("executor.step_overhead_s", "null unless executor=sim with cost_model=roofline "
                                  "(a profile or a real engine measures its own host time)", self.step_overhead_s)
        if self.cost_model == "profiled" and not self.profile:
            raise ConfigError("executor.profile", "the path of a profile with executor.cost_model=profiled "
                              "(a CSV that python -m engines.torch.profiler model=... writes, or a directory "
                              "of Vidur GPU profiles holding mlp.csv)", self.profile)
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ConfigError("executor.device", "cpu, cuda or cuda:<index>", self.device)
        check_choice("executor.dtype", self.dtype, TORCH_DTYPES)
        check_int("executor.num_threads", self.num_threads, 1, optional=True)
        check_number("executor.temperature", self.temperature, 0.0)
        check_int("executor.kv_cache_bytes", self.kv_cache_bytes, 1, optional=True)
        check_choice("executor.attention", self.attention, ATTENTION_BACKENDS)
        check_choice("executor.runtime", self.runtime, RUNTIMES)
        check_choice("executor.share_switch", self.share_switch, SHARE_SWITCHES)
        check_choice("executor.api", self.api, HTTP_APIS)
        check_int("executor.max_concurrency", self.max_concurrency, 1, optional=True)
        check_number("executor.request_timeout_s", self.request_timeout_s, 0.0, lo_open=True)
        if self.name == "http" and (not isinstance(self.url, str)
                                    or not re.fullmatch(r"https?://[^/\s]+(/\S*)?", self.url)):
            raise ConfigError("executor.url", "the server's base URL, e.g. http://127.0.0.1:8000", self.url)


@dataclass
class SLOConfig:
    name: str = "default"
    ttft_s: float = 0.5              # semi-PD code defaults (TTFT_SLO, TPOT_SLO in Semi-PD's distserve/single_stage_engine.py)
    tpot_s: float = 0.1
    tpot_definition: str = "vllm"    # vllm: (e2e-ttft)/(n-1); per_output_token: (e2e-ttft)/n
    scale: float = 1.0               # both targets x scale: DistServe's SLO-scale sweeps (slo.scale=0.5,1,2)

    def validate(self) -> None:
        # nan would pass a `<= 0` test and make every request miss (attainment 0 %).
        check_number("slo.ttft_s", self.ttft_s, 0.0, lo_open=True)
        check_number("slo.tpot_s", self.tpot_s, 0.0, lo_open=True)
        check_number("slo.scale", self.scale, 0.0, lo_open=True)
        check_choice("slo.tpot_definition", self.tpot_definition, TPOT_DEFINITIONS)

    @property
    def ttft_target_s(self) -> float:
        return self.ttft_s * self.scale

    @property
    def tpot_target_s(self) -> float:
        return self.tpot_s * self.scale


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
    # token_times.csv: every output token's time, which per-request ITLs need (e.g. the
    # vLLM export, metrics/export_vllm.py). None = real executors only: it is ~2 MB per 1000
    # ShareGPT requests, too much for every point of a simulated sweep.
    save_token_times: bool | None = None
    # executor=sim, plots=false: a directory where runs that differ only in what the
    # simulation never reads (tag, an SLO no controller reads) share one simulation, the
    # later ones copying the first one's files (harness/sim_cache.py). paper.suite sets it.
    sim_cache_dir: str | None = None

    def validate(self) -> None:
        """Raise ConfigError naming the first option outside its allowed range. The
        workload is validated when it is built (workloads.config.validate_config)."""
        self.engine.validate()
        self.executor.validate()
        self.slo.validate()
        check_choice("rate_unit", self.rate_unit, RATE_UNITS)
        if self.sim_cache_dir is not None and (self.executor.name != "sim" or self.plots):
            raise ConfigError("sim_cache_dir", "null unless executor=sim with plots=false (a reused run "
                              "keeps no token gaps to plot, and a real run is never reused)", self.sim_cache_dir)
        if self.executor.name == "sim":
            self._validate_sim_specs()
        if self.executor.name == "http" and self.engine.design == "cluster":
            raise ConfigError("engine", "a single design with executor=http (the server is the engine)", "cluster")

    def _validate_sim_specs(self) -> None:
        """The simulator's model and hardware exist and the parallel layout splits the model
        as vLLM allows (whole attention heads per GPU, at least one layer per stage)."""
        model, hw, tp, pp = self.model.spec(), hardware_of(self.hardware).spec, self.engine.tp, self.engine.pp
        if model.num_heads % tp:
            raise ConfigError("engine.tp", f"a divisor of {model.name}'s {model.num_heads} attention heads", tp)
        kv = model.num_kv_heads
        # GQA: each GPU holds whole KV heads; past num_kv_heads they are replicated, which
        # needs tp to be a multiple of them (vLLM's LlamaAttention, vllm-project/vllm
        # vllm/model_executor/models/llama.py). MLA's latent KV is not split by heads.
        if model.mla is None and (kv % tp if tp <= kv else tp % kv):
            raise ConfigError("engine.tp", f"a divisor or a multiple of {model.name}'s {kv} KV heads", tp)
        if hw.nvlink_bandwidth_bytes_s <= 0:  # no GPU-GPU link: no TP, no KV transfer over it
            if tp > 1:
                raise ConfigError("engine.tp", f"1 on {hw.name}, which has no GPU-GPU link", tp)
            designs = [p.design for p in self.engine.parts] if self.engine.design == "cluster" else [self.engine.design]
            if "disagg" in designs and self.engine.kv_link == "nvlink":
                raise ConfigError("engine.kv_link", f"pcie or network on {hw.name}, which has no GPU-GPU link",
                                  self.engine.kv_link)
        if pp > model.num_layers:
            raise ConfigError("engine.pp", f"<= {model.name}'s {model.num_layers} layers", pp)
