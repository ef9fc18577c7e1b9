"""Random configurations for the soak (benchmarks/soak.py): one seed -> one SoakConfig ->
one engine, loop and workload, built in plain Python (no Hydra) and small enough that a
run takes milliseconds."""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from engines.cluster import ClusterEngine
from engines.config import ClusterPart, EngineConfig, SemiPDConfig, SGLangConfig
from engines.disagg import build_disagg
from engines.engine import Engine
from engines.plan import ScheduledSeq, StepPlan
from engines.request import Request
from engines.unified import build_unified
from harness.build import kv_link
from semipd.controller import SLO
from semipd.engine import build_semipd
from sim.cost_model import RooflineCostModel
from sim.executor import SimExecutor
from sim.loop import VirtualLoop
from sim.memory import kv_bytes_per_block_per_gpu
from sim.specs import get_hardware, get_model

DESIGNS = ("unified", "unified_chunked", "sglang", "disagg", "semipd", "cluster")
MODEL_HARDWARE = (("tiny_llama", "cpu"), ("tiny_llama", "a100_80g"), ("llama3_8b", "a100_80g"),
                  ("llama3_8b", "h100_80g"), ("deepseek_v2_lite", "h100_80g"))
LENGTHS = ("fixed", "uniform", "skewed", "bimodal")
ARRIVALS = ("poisson", "gamma", "bursts", "constant", "all_at_once")
# Lengths scale with the block size, so that a request spans at most ~64 blocks and a pool
# at most MAX_POOL_BLOCKS: the ownership check after every event is O(blocks).
MAX_PROMPT_TOKENS = 1500
MAX_OUTPUT_TOKENS = 200
MAX_REQUEST_BLOCKS = (40, 24)  # prompt, output
MAX_POOL_BLOCKS = 800


@dataclass(frozen=True)
class WorkloadDraw:
    num_requests: int
    lengths: str           # fixed | uniform | skewed | bimodal
    arrival: str           # poisson | gamma | bursts | constant | all_at_once
    offered_load: float    # arrival rate x one request's solo service time, per GPU
    burstiness: float      # gamma shape (< 1: bursty) or burst size


@dataclass(frozen=True)
class SoakConfig:
    seed: int
    design: str
    engine: EngineConfig
    model: str
    hardware: str
    share_model: str
    pool_factor: float     # KV blocks per pool / blocks of the largest request
    max_model_len: int | None  # None: the model's context
    slo_ttft_s: float
    slo_tpot_s: float
    workload: WorkloadDraw


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def draw_config(seed: int) -> SoakConfig:
    rng = random.Random(seed)
    design = rng.choice(DESIGNS)
    model, hardware = rng.choice(MODEL_HARDWARE)
    eng = _draw_engine(rng, design, multi_gpu=hardware != "cpu")  # a CPU has no GPU-GPU link
    r = rng.random()  # pools: some too small for the largest request, many barely one, some roomy
    pool_factor = rng.uniform(0.5, 1.0) if r < 0.15 else rng.uniform(1.0, 1.3) if r < 0.5 \
        else _log_uniform(rng, 1.3, 30.0)
    wl = WorkloadDraw(num_requests=rng.randint(5, 30), lengths=rng.choice(LENGTHS),
                      arrival=rng.choice(ARRIVALS), offered_load=_log_uniform(rng, 0.01, 100.0),
                      burstiness=rng.uniform(0.05, 0.5) if rng.random() < 0.5 else float(rng.randint(2, 12)))
    return SoakConfig(seed=seed, design=design, engine=eng, model=model, hardware=hardware,
                      share_model=rng.choice(("roofline", "measured")), pool_factor=round(pool_factor, 3),
                      max_model_len=rng.randint(64, 2048) if rng.random() < 0.2 else None,
                      slo_ttft_s=_log_uniform(rng, 0.01, 5.0), slo_tpot_s=_log_uniform(rng, 0.001, 0.5),
                      workload=wl)


def _draw_engine(rng: random.Random, design: str, *, multi_gpu: bool) -> EngineConfig:
    chunked = {"unified": False, "unified_chunked": True}.get(design, rng.random() < 0.5)
    unified = design in ("unified", "unified_chunked", "sglang")
    parts = []
    if design == "cluster":
        parts = [ClusterPart(design=rng.choice(("unified", "disagg", "semipd")), num_instances=rng.randint(1, 2),
                             num_prefill=rng.randint(1, 2), num_decode=rng.randint(1, 2))
                 for _ in range(rng.randint(2, 3))]
    sp = SemiPDConfig(
        prefill_share_pct=100.0 if rng.random() < 0.3 else round(rng.uniform(5, 100), 1),
        decode_share_pct=100.0 if rng.random() < 0.3 else round(rng.uniform(5, 100), 1),
        controller=rng.choice(("static", "slo_code", "slo_paper")), window_requests=rng.randint(1, 20),
        percentile=rng.choice((50.0, 90.0, 99.0)), tpot_margin=rng.uniform(1.0, 1.5),
        step_pct=rng.uniform(1.0, 10.0), max_steps=rng.randint(1, 5), floor_pct=rng.uniform(10.0, 100.0),
        min_fit_points=rng.randint(2, 4), switch_delay_s=0.0 if rng.random() < 0.3 else rng.uniform(0.0, 1.0),
        contention=rng.choice(("resources", "proportional")))
    eng = EngineConfig(
        name=f"soak_{design}", design="unified" if unified else design,
        policy="sglang" if design == "sglang" else "vllm",
        sglang=SGLangConfig(max_prefill_tokens=int(_log_uniform(rng, 16, 16384)),
                            enable_mixed_chunk=rng.random() < 0.5,
                            max_running_requests=None if rng.random() < 0.5 else rng.randint(1, 64)),
        preemption="swap" if design in ("disagg", "cluster") and rng.random() < 0.5 else "recompute",
        chunked_prefill=chunked,
        max_num_batched_tokens=None if rng.random() < 0.4 else int(_log_uniform(rng, 1, 4096)),
        chunk_size_tokens=int(_log_uniform(rng, 1, 8) if rng.random() < 0.05 else _log_uniform(rng, 8, 2048)),
        max_num_seqs=int(_log_uniform(rng, 1, 128)),
        block_size_tokens=rng.choice((1, 2, 4, 8, 16, 32)), tp=rng.choice((1, 1, 2)) if multi_gpu else 1,
        pp=2 if multi_gpu and rng.random() < 0.2 else 1, num_instances=rng.randint(1, 3),
        num_prefill=rng.randint(1, 3), num_decode=rng.randint(1, 3),
        kv_link=rng.choice(("nvlink", "pcie", "network") if multi_gpu else ("pcie", "network")), semipd=sp, parts=parts)
    eng.validate()
    return eng


# ----- workload ----------------------------------------------------------------------------
def _lengths(rng: random.Random, kind: str, n: int, hi: int) -> list[int]:
    if kind == "fixed":
        return [rng.randint(1, hi)] * n
    if kind == "uniform":
        return [rng.randint(1, hi) for _ in range(n)]
    if kind == "skewed":  # lognormal: most short, a heavy tail
        mu = math.log(rng.uniform(4, hi / 4))
        return [min(hi, max(1, int(rng.lognormvariate(mu, 1.2)))) for _ in range(n)]
    return [rng.randint(hi // 3, hi) if rng.random() < 0.1 else rng.randint(1, 32) for _ in range(n)]


def _arrivals(rng: random.Random, wl: WorkloadDraw, rate: float) -> list[float]:
    n, t, out = wl.num_requests, 0.0, []
    for i in range(n):
        if wl.arrival == "poisson":
            t += rng.expovariate(rate)
        elif wl.arrival == "gamma":  # shape < 1: clumps separated by long gaps, same mean rate
            shape = wl.burstiness if wl.burstiness < 1 else 0.2
            t += rng.gammavariate(shape, 1.0 / (shape * rate))
        elif wl.arrival == "bursts":  # groups arriving at one instant
            size = int(wl.burstiness) if wl.burstiness >= 1 else 4
            t += size / rate if i % size == 0 and i else 0.0
        elif wl.arrival == "constant":
            t += 1.0 / rate
        out.append(t)  # all_at_once: every request at t = 0
    return out


def _solo_service_s(cost: RooflineCostModel, prompt: float, output: float) -> float:
    """One request served alone: its prefill step plus its decode steps."""
    p = max(1, int(prompt))
    prefill = StepPlan("est", (ScheduledSeq(0, 0, p, True, True, ()),), p, 0)
    decode = StepPlan("est", (ScheduledSeq(0, p, 1, True, False, ()),), 0, 1)
    return cost.step_time_s(prefill, 1.0) + max(0.0, output - 1) * cost.step_time_s(decode, 1.0)


def make_requests(cfg: SoakConfig, cost: RooflineCostModel, num_gpus: int) -> list[Request]:
    rng = random.Random(cfg.seed * 7919 + 1)  # independent of the config draw's stream
    wl = cfg.workload
    bs = cfg.engine.block_size_tokens
    prompts = _lengths(rng, wl.lengths, wl.num_requests, min(MAX_PROMPT_TOKENS, MAX_REQUEST_BLOCKS[0] * bs))
    outputs = _lengths(rng, rng.choice(LENGTHS), wl.num_requests, min(MAX_OUTPUT_TOKENS, MAX_REQUEST_BLOCKS[1] * bs))
    solo_s = _solo_service_s(cost, sum(prompts) / len(prompts), sum(outputs) / len(outputs))
    times = _arrivals(rng, wl, wl.offered_load * num_gpus / solo_s)
    return [Request(id=i, arrival_s=t, prompt_len=p, output_len=o)
            for i, (t, p, o) in enumerate(zip(times, prompts, outputs))]


# ----- engine ------------------------------------------------------------------------------
def build(cfg: SoakConfig) -> tuple[Engine, VirtualLoop, list[Request]]:
    model, hw = get_model(cfg.model), get_hardware(cfg.hardware)
    eng = cfg.engine
    cost = RooflineCostModel(model, hw, tp=eng.tp, share_model=cfg.share_model, pp=eng.pp)
    max_model_len = cfg.max_model_len or model.max_context_tokens
    loop = VirtualLoop()
    # The workload's lengths fix the pool size, the pool does not change them: build the
    # requests against a one-GPU rate first, then scale by the engine's GPU count.
    probe = make_requests(cfg, cost, 1)
    largest = max(p.prompt_len + p.output_len for p in probe)
    need = -(-largest // eng.block_size_tokens)
    num_blocks = max(1, min(MAX_POOL_BLOCKS, math.ceil(need * cfg.pool_factor)))
    common = dict(loop=loop, make_executor=lambda: SimExecutor(cost), num_kv_blocks=num_blocks,
                  max_model_len=max_model_len)
    per_token = kv_bytes_per_block_per_gpu(model, eng.tp, 1, eng.pp)
    extra = dict(link=kv_link(eng.kv_link, hw), host_link=kv_link("pcie", hw),  # swap copies over PCIe
                 kv_bytes_per_token_per_gpu=per_token, slo=SLO(cfg.slo_ttft_s, cfg.slo_tpot_s))
    if eng.design == "cluster":
        parts = [_build_one(dataclasses.replace(eng, name=f"{eng.name}.{i}{p.design}", design=p.design,
                                                num_instances=p.num_instances, num_prefill=p.num_prefill,
                                                num_decode=p.num_decode, parts=[]), common, extra)
                 for i, p in enumerate(eng.parts)]
        engine: Engine = ClusterEngine(eng.name, parts)
    else:
        engine = _build_one(eng, common, extra)
    return engine, loop, make_requests(cfg, cost, engine.num_gpus)


def _build_one(eng: EngineConfig, common: dict, extra: dict) -> Engine:
    if eng.design == "unified":
        return build_unified(eng, num_instances=eng.num_instances, **common)
    if eng.design == "disagg":
        return build_disagg(eng, link=extra["link"], host_link=extra["host_link"],
                            kv_bytes_per_token_per_gpu=extra["kv_bytes_per_token_per_gpu"], **common)
    return build_semipd(eng, slo=extra["slo"], **common)
