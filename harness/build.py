"""Build an engine from a RunConfig: model and hardware specs, KV capacity, executors."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Callable

from engines.cluster import ClusterEngine
from engines.config import EngineConfig
from engines.disagg import KVLink, build_disagg
from engines.engine import Engine
from engines.errors import ConfigError
from engines.loop import Loop
from engines.plan import Executor
from engines.unified import build_unified
from harness.config import RunConfig, hardware_of
from semipd.controller import SLO
from semipd.engine import build_semipd
from sim.cost_model import DEFAULT_STEP_OVERHEAD_S, RooflineCostModel
from sim.executor import SimExecutor
from sim.memory import estimate_activation_reserve_bytes, kv_bytes_per_block_per_gpu, kv_capacity_blocks
from sim.specs import HardwareSpec

log = logging.getLogger(__name__)

# One direction, per GPU. PCIe: the GPU file's pcie_bandwidth_bytes_s (conf/hardware); between
# nodes the semi-PD 405B setup has 200 Gbit/s = 25 GB/s (arXiv 2504.19867, evaluation setup).
_NETWORK_BYTES_S = 25e9
_PCIE_LATENCY_S = 10e-6
_NETWORK_LATENCY_S = 20e-6


def kv_link(name: str, hw: HardwareSpec) -> KVLink:
    if name == "nvlink":
        return KVLink("nvlink", hw.nvlink_bandwidth_bytes_s * hw.link_efficiency, hw.interconnect_latency_s)
    if name == "pcie":
        return KVLink("pcie", hw.pcie_bandwidth_bytes_s, _PCIE_LATENCY_S)
    return KVLink("network", _NETWORK_BYTES_S, _NETWORK_LATENCY_S)


def make_executor_factory(cfg: RunConfig) -> Callable[[], Executor]:
    model, hw = cfg.model.spec(), hardware_of(cfg.hardware).spec
    eng = cfg.engine
    # The cost model is stateless: every worker can share one.
    if cfg.executor.cost_model == "profiled":
        if _is_vidur_profile(cfg.executor.profile):
            # GPU operator profiles have rows per TP degree (sim/vidur_profile.py checks the
            # run's TP has some); pipeline stages are not modelled from them.
            if eng.pp != 1:
                raise ConfigError("engine.pp", f"1 with a Vidur profile (executor.profile={cfg.executor.profile}: "
                                  "pipeline stages need the roofline)", eng.pp)
        else:
            for option, value in (("engine.tp", eng.tp), ("engine.pp", eng.pp)):
                if value != 1:
                    raise ConfigError(option, "1 with executor.cost_model=profiled and a CPU profile (it times "
                                      "one device; parallel layouts need the roofline or a Vidur GPU profile)",
                                      value)
        # semi-PD's real workers wait passively (engines/torch/runtime.py): their profile rows.
        # On a CPU the real runtime gives each device (instance) an equal slice of the cores.
        devices = eng.num_prefill + eng.num_decode if eng.design == "disagg" else eng.num_instances
        cost = _profiled_cost_model(cfg.executor.profile, model, hw, cfg.executor.share_model,
                                    "passive" if eng.design == "semipd" else "active", devices,
                                    cfg.executor.profile_scale, tp=eng.tp, block_size=eng.block_size_tokens)
    else:
        overhead_s = cfg.executor.step_overhead_s
        cost = RooflineCostModel(model, hw, tp=eng.tp, share_model=cfg.executor.share_model, pp=eng.pp,
                                 step_overhead_s=DEFAULT_STEP_OVERHEAD_S if overhead_s is None else overhead_s)
    return lambda: SimExecutor(cost)


def _is_vidur_profile(profile: str) -> bool:
    # The rule of sim.vidur_profile.is_vidur_profile, without importing pandas here.
    return os.path.isdir(profile) or os.path.basename(profile) in ("mlp.csv", "mlp.csv.xz")


def _profiled_cost_model(profile: str, model, hw, share_model: str, omp_wait: str, devices: int, scale: float,
                         tp: int = 1, block_size: int | None = None):
    """A directory or an mlp.csv(.xz): Vidur GPU operator profiles (sim/vidur_profile.py);
    any other file: a CPU profile of the real executor (sim/profiled.py)."""
    if _is_vidur_profile(profile):
        from sim.vidur_profile import VidurProfileCostModel  # pandas only when asked for
        return VidurProfileCostModel(profile, model, hw, tp=tp, share_model=share_model, scale=scale,
                                     block_size=block_size)
    from sim.profiled import ProfiledCostModel  # pandas + numpy only when asked for
    return ProfiledCostModel(profile, model, hw, share_model=share_model, omp_wait=omp_wait, devices=devices,
                             scale=scale)


def build_engine(cfg: RunConfig, loop: Loop) -> Engine:
    if cfg.executor.name == "torch":
        return _build_torch(cfg, loop)
    return _build_sim(cfg, loop)


def _build_torch(cfg: RunConfig, loop: Loop) -> Engine:
    """The real model. executor.runtime=processes (default): every worker in its own
    process over shared weights and KV (engines/torch/runtime.py), any design;
    inprocess: one unified worker computing inside the driver."""
    eng, ex = cfg.engine, cfg.executor
    for option, value, wanted in (("engine.tp", eng.tp, 1), ("engine.pp", eng.pp, 1)):
        if value != wanted:
            raise ConfigError(option, f"{wanted} with executor=torch (tensor and pipeline parallel "
                              "layouts are simulated only: use executor=sim)", value)
    if eng.design == "cluster":
        raise ConfigError("engine.design", "unified, semipd or disagg with executor=torch (mixed clusters "
                          "are simulated only: use executor=sim)", eng.design)
    if ex.runtime == "inprocess" and (eng.design, eng.num_instances) != ("unified", 1):
        raise ConfigError("executor.runtime", "processes for semi-PD or several instances (inprocess "
                          "runs one unified worker inside the driver)", ex.runtime)
    from engines.torch import runtime  # torch is imported only for real runs
    setup = runtime.prepare(cfg.model.name, cfg.model.checkpoint, device=ex.device, dtype=ex.dtype,
                            block_size=eng.block_size_tokens, kv_cache_bytes=ex.kv_cache_bytes,
                            gpu_memory_utilization=eng.gpu_memory_utilization)
    common = dict(loop=loop, num_kv_blocks=setup.num_blocks, max_model_len=setup.config.max_context_tokens)
    if ex.runtime == "inprocess":
        executor = runtime.make_executor(setup, block_size=eng.block_size_tokens, temperature=ex.temperature,
                                         seed=cfg.workload.seed, num_threads=ex.num_threads,
                                         attention=ex.attention)
        engine = build_unified(eng, make_executor=lambda: executor, **common)
    else:
        engine = _build_on_processes(cfg, setup, runtime, common)
    engine.vocab_size = setup.config.vocab_size
    engine.eos_token_ids = setup.config.eos_token_ids  # stop ids unless executor.ignore_eos
    return engine


def _build_on_processes(cfg: RunConfig, setup, runtime, common: dict) -> Engine:
    """Compose the design as in simulation, then give each worker a worker process: the
    engine (schedulers, pools, controller) stays in the driver."""
    eng, ex = cfg.engine, cfg.executor
    procs = runtime.ProcessRuntime(setup, block_size=eng.block_size_tokens, temperature=ex.temperature,
                                   seed=cfg.workload.seed, attention=ex.attention,
                                   cores=sorted(os.sched_getaffinity(0))[:ex.num_threads or None],
                                   pack_weights=ex.pack_weights, share_switch=ex.share_switch,
                                   mps=eng.design == "semipd", shares_cores=eng.design == "semipd")
    no_executor_yet = lambda: None  # noqa: E731 - replaced by a worker process below
    if eng.design == "unified":
        engine = build_unified(eng, make_executor=no_executor_yet, num_instances=eng.num_instances, **common)
    elif eng.design == "disagg":  # the link is a label: the transport copies for real
        if eng.preemption == "swap":  # DistServe's default, and disagg.yaml's
            note = ("engine.preemption=swap runs as recompute with executor=torch: swapping KV to host "
                    "memory is simulated only (on a CPU the pool already is host memory)")
            log.warning(note)
            procs.notes.append(note)
            eng = dataclasses.replace(eng, preemption="recompute")
        per_token = setup.config.kv_bytes_per_token(setup.dtype.itemsize)
        engine = build_disagg(eng, make_executor=no_executor_yet, link=KVLink("shared_memory", math.inf, 0.0),
                              kv_bytes_per_token_per_gpu=per_token, **common)
    else:  # a real switch costs what it costs: no simulated start-up delay on top
        real = dataclasses.replace(eng, semipd=dataclasses.replace(eng.semipd, switch_delay_s=0.0))
        engine = build_semipd(real, slo=SLO(cfg.slo.ttft_target_s, cfg.slo.tpot_target_s), make_executor=no_executor_yet,
                              **common)
    engine.runtime = procs
    try:
        num_instances = len({w.device for w in engine.workers})
        for w in engine.workers:
            w.executor = procs.start(w.name, role=w.scheduler.role, share_pct=round(w.share * 100, 6),
                                     instance=w.device, num_instances=num_instances)
        if eng.design == "disagg":
            engine.transport = procs.start_transport(
                engine.loop, {w.scheduler.pool.name: w.device for w in engine.workers})
        procs.wait_ready()
    except BaseException:
        procs.close()
        raise
    return engine


def _build_sim(cfg: RunConfig, loop: Loop) -> Engine:
    if cfg.engine.design != "cluster":
        return _build_one(cfg, cfg.engine, loop)
    parts = []
    for i, part in enumerate(cfg.engine.parts):
        sub = dataclasses.replace(cfg.engine, name=f"{cfg.engine.name}.{i}{part.design}", design=part.design,
                                  num_instances=part.num_instances, num_prefill=part.num_prefill,
                                  num_decode=part.num_decode, parts=[])
        parts.append(_build_one(cfg, sub, loop))
    return ClusterEngine(cfg.engine.name, parts)


def sim_reads_slo(cfg: RunConfig) -> bool:
    """Whether simulating `cfg` depends on its SLO: only a semi-PD SLO-aware controller
    reads it (build_semipd's `slo` below); every other use is in the summary, after the run.
    A cluster's parts share `cfg.engine.semipd`. Checked per engine by tests/test_sim_cache.py."""
    designs = [p.design for p in cfg.engine.parts] if cfg.engine.design == "cluster" else [cfg.engine.design]
    return "semipd" in designs and cfg.engine.semipd.controller != "static"


def _build_one(cfg: RunConfig, eng: EngineConfig, loop: Loop) -> Engine:
    model, hw = cfg.model.spec(), hardware_of(cfg.hardware).spec
    # semi-PD: one weight copy, but each of the two workers needs its own activations.
    workers_per_gpu = 2 if eng.design == "semipd" else 1
    pp = eng.pp
    reserve = workers_per_gpu * estimate_activation_reserve_bytes(model, eng.tp)
    num_blocks = kv_capacity_blocks(model, hw, tp=eng.tp, gpu_memory_utilization=eng.gpu_memory_utilization,
                                    activation_reserve_bytes=reserve, block_size_tokens=eng.block_size_tokens,
                                    pp=pp)
    if cfg.executor.kv_cache_bytes:  # a fixed KV budget, as the real executor takes one (sim-vs-real runs)
        num_blocks = cfg.executor.kv_cache_bytes // kv_bytes_per_block_per_gpu(model, eng.tp, eng.block_size_tokens, pp)
        if num_blocks < 1:
            raise ConfigError("executor.kv_cache_bytes", f"at least one KV block of {cfg.model.name} "
                              f"({kv_bytes_per_block_per_gpu(model, eng.tp, eng.block_size_tokens, pp)} bytes)",
                              cfg.executor.kv_cache_bytes)
    common = dict(loop=loop, make_executor=make_executor_factory(cfg), num_kv_blocks=num_blocks,
                  max_model_len=model.max_context_tokens)
    if eng.design == "unified":
        return build_unified(eng, num_instances=eng.num_instances, **common)
    if eng.design == "disagg":
        per_token = kv_bytes_per_block_per_gpu(model, eng.tp, 1, pp)
        # Swap preemption copies KV between a decode GPU and host memory over PCIe.
        return build_disagg(eng, link=kv_link(eng.kv_link, hw), kv_bytes_per_token_per_gpu=per_token,
                            host_link=kv_link("pcie", hw), **common)
    return build_semipd(eng, slo=SLO(cfg.slo.ttft_target_s, cfg.slo.tpot_target_s), **common)
