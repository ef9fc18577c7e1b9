"""Engine configuration (a Hydra structured config, also usable from plain Python)."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.errors import ConfigError, check_choice, check_int, check_number
from engines.scheduler import SchedulerConfig

DESIGNS = ("unified", "disagg", "semipd", "cluster")
CONTROLLERS = ("static", "slo_paper", "slo_code")
CONTENTION_MODELS = ("resources", "proportional", "measured")
KV_LINKS = ("nvlink", "pcie", "network")
POLICIES = ("vllm", "sglang")
PREEMPTION_MODES = ("recompute", "swap")


@dataclass
class SGLangConfig:
    """SGLang v0.4 server arguments used by `policy: sglang` (engines/policy_sglang.py)."""

    max_prefill_tokens: int = 16384    # --max-prefill-tokens default
    enable_mixed_chunk: bool = False   # --enable-mixed-chunk (off by default)
    max_running_requests: int | None = None  # None: SGLang's default from the KV pool size

    def validate(self, prefix: str = "engine.sglang") -> None:
        check_int(f"{prefix}.max_prefill_tokens", self.max_prefill_tokens, 1)
        check_int(f"{prefix}.max_running_requests", self.max_running_requests, 1, optional=True)


@dataclass
class SemiPDConfig:
    """semi-PD shares and the partition controller (arXiv 2504.19867: computation resource
    controller, SLO-aware dynamic partitioning)."""

    prefill_share_pct: float = 100.0   # x: MPS-style cap on the prefill worker's SMs
    decode_share_pct: float = 100.0    # y: x + y may exceed 100 (then they contend)
    controller: str = "slo_code"       # static | slo_paper | slo_code
    window_requests: int = 400         # finished requests per re-plan window
    percentile: float = 90.0           # pSLO
    tpot_margin: float = 1.1           # slo_code: TPOT ok iff margin * p_tpot <= SLO
    step_pct: float = 2.0
    max_steps: int = 3
    floor_pct: float = 80.0            # slo_code, slo_paper: never lower a share below this
    min_fit_points: int = 3            # slo_paper: distinct shares before trusting the Eq. 4 fit
    switch_delay_s: float = 0.5        # standby worker start-up (the code polls every 0.5 s)
    contention: str = "resources"      # resources | proportional | measured (semipd/engine.py)
    # measured: factors from a contention profile (python -m engines.torch.profiler contention=1)
    contention_profile: str | None = None

    def validate(self, prefix: str = "engine.semipd") -> None:
        check_choice(f"{prefix}.controller", self.controller, CONTROLLERS)
        check_choice(f"{prefix}.contention", self.contention, CONTENTION_MODELS)
        if self.contention == "measured" and not self.contention_profile:
            raise ConfigError(f"{prefix}.contention_profile", "the path of a contention profile with "
                              f"{prefix}.contention=measured (python -m engines.torch.profiler model=... "
                              "contention=1 writes one)", self.contention_profile)
        for key in ("prefill_share_pct", "decode_share_pct", "percentile", "step_pct", "floor_pct"):
            check_number(f"{prefix}.{key}", getattr(self, key), 0.0, 100.0, lo_open=True)
        check_int(f"{prefix}.window_requests", self.window_requests, 1)
        check_int(f"{prefix}.max_steps", self.max_steps, 1)
        check_int(f"{prefix}.min_fit_points", self.min_fit_points, 2)  # a line needs two points
        check_number(f"{prefix}.tpot_margin", self.tpot_margin, 0.0, lo_open=True)
        check_number(f"{prefix}.switch_delay_s", self.switch_delay_s, 0.0)


@dataclass
class ClusterPart:
    """One group of a heterogeneous cluster (design=cluster), e.g. 1P3D + 4 semi-PD GPUs.
    Every other setting comes from the enclosing engine config."""

    design: str = "disagg"             # unified | disagg | semipd
    num_instances: int = 1
    num_prefill: int = 1
    num_decode: int = 1

    def validate(self, prefix: str) -> None:
        check_choice(f"{prefix}.design", self.design, DESIGNS[:3])
        for key in ("num_instances", "num_prefill", "num_decode"):
            check_int(f"{prefix}.{key}", getattr(self, key), 1)


@dataclass
class EngineConfig:
    name: str = "unified"              # config name, used in run directory names
    label: str = "vLLM-D"              # display name in tables and plots
    design: str = "unified"            # unified | disagg | semipd
    chunked_prefill: bool = False
    # Token budget per step. None: the model's context length without chunking (every
    # prompt fits one step, as vLLM requires), `chunk_size_tokens` with chunking.
    max_num_batched_tokens: int | None = None
    chunk_size_tokens: int = 1024
    max_num_seqs: int = 512
    block_size_tokens: int = 16
    gpu_memory_utilization: float = 0.9
    tp: int = 1                        # tensor-parallel degree of every instance
    pp: int = 1                        # pipeline-parallel stages of every instance
    num_instances: int = 1             # unified / semipd: data-parallel replicas
    num_prefill: int = 1               # disagg: prefill instances
    num_decode: int = 1                # disagg: decode instances
    kv_link: str = "nvlink"            # disagg: P -> D link (nvlink | pcie | network)
    semipd: SemiPDConfig = field(default_factory=SemiPDConfig)
    # Scheduling policy of unified workers: vllm (prefill-first or chunked, as above) or
    # sglang (SGLang v0.4's separate prefill/decode batches; `chunk_size_tokens` is its
    # chunked_prefill_size).
    policy: str = "vllm"
    sglang: SGLangConfig = field(default_factory=SGLangConfig)
    # What a decode instance does when its KV runs out (disagg): recompute on a prefill
    # instance, or swap the KV to host memory over PCIe (DistServe's decode stage).
    preemption: str = "recompute"
    parts: list[ClusterPart] = field(default_factory=list)  # design=cluster only

    def validate(self) -> None:
        """Raise ConfigError naming the first option (engine.*) outside its allowed range."""
        check_choice("engine.design", self.design, DESIGNS)
        for key in ("tp", "pp", "block_size_tokens", "max_num_seqs", "chunk_size_tokens",
                    "num_instances", "num_prefill", "num_decode"):
            check_int(f"engine.{key}", getattr(self, key), 1)
        check_int("engine.max_num_batched_tokens", self.max_num_batched_tokens, 1, optional=True)
        check_number("engine.gpu_memory_utilization", self.gpu_memory_utilization, 0.0, 1.0, lo_open=True)
        check_choice("engine.kv_link", self.kv_link, KV_LINKS)
        check_choice("engine.policy", self.policy, POLICIES)
        if self.policy == "sglang" and self.design != "unified":
            raise ConfigError("engine.policy", f"vllm with engine.design={self.design} (sglang runs "
                              "design=unified only)", self.policy)
        check_choice("engine.preemption", self.preemption, PREEMPTION_MODES)
        if self.preemption == "swap" and self.design not in ("disagg", "cluster"):
            raise ConfigError("engine.preemption", f"recompute with engine.design={self.design} (swap "
                              "applies to disagg decode instances only)", self.preemption)
        self.sglang.validate()
        self.semipd.validate()
        if self.design == "cluster" and not self.parts:
            raise ConfigError("engine.parts", "a non-empty list of parts with engine.design=cluster", self.parts)
        for i, part in enumerate(self.parts):
            part.validate(f"engine.parts[{i}]")

    def scheduler_config(self, max_model_len: int, *, role: str = "mixed") -> SchedulerConfig:
        """The scheduler of one worker; `role` picks what applies to it (the SGLang policy
        to unified workers, swap preemption to decode workers)."""
        chunked = self.chunked_prefill
        sglang = self.policy == "sglang" and role == "mixed"
        budget = self.max_num_batched_tokens
        if budget is None:
            budget = self.chunk_size_tokens if chunked or sglang else max_model_len
        return SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=self.max_num_seqs,
                               chunked_prefill=chunked, policy="sglang" if sglang else "vllm",
                               max_prefill_tokens=self.sglang.max_prefill_tokens,
                               mixed_chunk=self.sglang.enable_mixed_chunk,
                               max_running_requests=self.sglang.max_running_requests,
                               max_model_len_tokens=max_model_len,
                               preemption=self.preemption if role == "decode" else "recompute")
