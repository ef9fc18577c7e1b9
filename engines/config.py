"""Engine configuration (a Hydra structured config, also usable from plain Python)."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.scheduler import SchedulerConfig

DESIGNS = ("unified", "disagg", "semipd", "cluster")
CONTROLLERS = ("static", "slo_paper", "slo_code")
CONTENTION_MODELS = ("resources", "proportional")
KV_LINKS = ("nvlink", "pcie", "network")


@dataclass
class SemiPDConfig:
    """semi-PD shares and the partition controller (semipd.md sections 2-3)."""

    prefill_share_pct: float = 100.0   # x: MPS-style cap on the prefill worker's SMs
    decode_share_pct: float = 100.0    # y: x + y may exceed 100 (then they contend)
    controller: str = "slo_code"       # static | slo_paper | slo_code
    window_requests: int = 400         # finished requests per re-plan window
    percentile: float = 90.0           # pSLO
    tpot_margin: float = 1.1           # slo_code: TPOT ok iff margin * p_tpot <= SLO
    step_pct: float = 2.0
    max_steps: int = 3
    floor_pct: float = 80.0            # slo_code: never lower a share below this
    min_fit_points: int = 3            # slo_paper: distinct shares before trusting the Eq. 4 fit
    switch_delay_s: float = 0.5        # standby worker start-up (the code polls every 0.5 s)
    contention: str = "resources"      # resources | proportional (semipd/engine.py)


@dataclass
class ClusterPart:
    """One group of a heterogeneous cluster (design=cluster), e.g. 1P3D + 4 semi-PD GPUs.
    Every other setting comes from the enclosing engine config."""

    design: str = "disagg"             # unified | disagg | semipd
    num_instances: int = 1
    num_prefill: int = 1
    num_decode: int = 1


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
    parts: list[ClusterPart] = field(default_factory=list)  # design=cluster only

    def validate(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"engine.design must be one of {', '.join(DESIGNS)}; got '{self.design}'")
        if min(self.tp, self.pp, self.block_size_tokens, self.max_num_seqs) < 1:
            raise ValueError("engine.tp, engine.pp, engine.block_size_tokens and engine.max_num_seqs must be "
                             f">= 1; got {self.tp}, {self.pp}, {self.block_size_tokens}, {self.max_num_seqs}")
        if self.design == "cluster":
            if not self.parts or any(p.design not in DESIGNS[:3] for p in self.parts):
                raise ValueError("engine.design=cluster needs engine.parts, each with design unified, "
                                 f"disagg or semipd; got {[p.design for p in self.parts]}")
        if self.kv_link not in KV_LINKS:
            raise ValueError(f"engine.kv_link must be one of {', '.join(KV_LINKS)}; got '{self.kv_link}'")
        if self.semipd.controller not in CONTROLLERS:
            raise ValueError(f"engine.semipd.controller must be one of {', '.join(CONTROLLERS)}; "
                             f"got '{self.semipd.controller}'")
        if self.semipd.contention not in CONTENTION_MODELS:
            raise ValueError(f"engine.semipd.contention must be one of {', '.join(CONTENTION_MODELS)}; "
                             f"got '{self.semipd.contention}'")
        for key in ("prefill_share_pct", "decode_share_pct"):
            if not 0.0 < getattr(self.semipd, key) <= 100.0:
                raise ValueError(f"engine.semipd.{key} must be in (0, 100]; got {getattr(self.semipd, key)}")
        if min(self.num_instances, self.num_prefill, self.num_decode) < 1:
            raise ValueError("engine.num_instances, num_prefill and num_decode must be >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError("engine.gpu_memory_utilization must be in (0, 1]; "
                             f"got {self.gpu_memory_utilization}")

    def scheduler_config(self, max_model_len: int, *, chunked: bool | None = None) -> SchedulerConfig:
        chunked = self.chunked_prefill if chunked is None else chunked
        budget = self.max_num_batched_tokens
        if budget is None:
            budget = self.chunk_size_tokens if chunked else max_model_len
        return SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=self.max_num_seqs,
                               chunked_prefill=chunked)
