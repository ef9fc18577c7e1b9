"""Run one configuration end to end: workload -> engine -> loop -> results directory."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from pathlib import Path

import numpy as np

from engines.disagg import DisaggEngine
from engines.engine import Engine, finalize_unfinished
from engines.errors import WorkerError
from engines.plan import StepRecord
from engines.request import Request
from engines.wallclock import WallClockLoop
from harness.build import build_engine
from harness import sim_cache
from harness.config import RunConfig, hardware_of
from harness.versions import versions
from semipd.engine import SemiPDEngine
from metrics.definitions import compute_request_metrics
from metrics.results import atomic_write_text, token_times_table, write_run_dir, write_summary
from metrics.summary import json_safe, slo_summary, summarize
from metrics.table import Table
from sim.loop import VirtualLoop
from workloads.config import build_workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the summary (as in summary.json), every request (finished,
    rejected and unfinished, with token times), the worker steps, and where the files are."""

    summary: dict
    requests: list[Request]
    steps: list[StepRecord]
    run_dir: Path

    @property
    def token_times_s(self) -> dict[int, list[float]]:
        """Each request's output-token times (seconds), by request id."""
        return {r.id: r.token_times_s for r in self.requests}


def run(cfg: RunConfig, run_dir: Path, *, config_yaml: str = "") -> RunResult:
    """Run `cfg`, write the run directory (the result-file contract) and return what it produced."""
    cfg.validate()
    hardware = hardware_of(cfg.hardware)
    if cfg.executor.name == "sim" and hardware.uncalibrated:
        log.warning("hardware %s: no calibrated %s; running with the defaults (sim/specs.py DEFAULT_EFFICIENCIES, "
                    "the A100 calibration)", cfg.hardware.name, ", ".join(hardware.uncalibrated))
    if cfg.executor.name == "http":  # an external server is the engine
        from harness.http_run import run_http
        return run_http(cfg, Path(run_dir), config_yaml or _yaml(cfg))
    if cfg.sim_cache_dir is not None:  # executor=sim (validated)
        entry = sim_cache.lookup(cfg.sim_cache_dir, sim_cache.key(cfg))
        if entry is not None:
            return _reuse(cfg, entry, Path(run_dir), config_yaml)
    loop = VirtualLoop() if cfg.executor.name == "sim" else WallClockLoop()
    engine = build_engine(cfg, loop)
    try:
        return _run(cfg, engine, loop, Path(run_dir), config_yaml)
    finally:
        engine.close()  # worker processes of a real run: stopped and reaped, also on errors and Ctrl-C


def _run(cfg: RunConfig, engine: Engine, loop, run_dir: Path, config_yaml: str) -> RunResult:
    workload = build_workload(cfg.workload, num_gpus=_rate_units(cfg, engine))
    log.info("workload: %s", workload.source_used)
    requests = [Request.from_spec(s) for s in workload.specs]
    if cfg.executor.name != "sim":
        give_token_ids(requests, engine.vocab_size, cfg.workload.seed)
    _set_stop_tokens(cfg, engine, requests)
    for req in requests:
        loop.at(req.arrival_s, partial(engine.submit, req))
    if _lazy_decodes_apply(cfg, engine):
        for worker in engine.workers:
            worker.scheduler.enable_lazy_decodes()
    failure: BaseException | None = None
    with _progress(cfg, len(requests), engine):
        try:
            end_s = loop.run(on_event=_integrity_checker(engine) if cfg.check_integrity else None)
        except (WorkerError, KeyboardInterrupt) as err:  # keep what finished, then fail
            failure, end_s = err, loop.now_s
    for worker in engine.workers:  # lazy decodes lag in their fields until synced
        worker.scheduler.sync()
    num_unfinished = finalize_unfinished(requests, end_s)
    steps = sorted((r for w in engine.workers for r in w.records), key=attrgetter("start_s", "worker"))
    summary = _summary(cfg, engine, workload, requests, num_unfinished)
    if failure is not None:
        summary["failure"] = f"{type(failure).__name__}: {failure}"
    extras = _extra_tables(engine)
    save_times = cfg.save_token_times if cfg.save_token_times is not None else cfg.executor.name != "sim"
    if save_times:
        extras["token_times"] = token_times_table(requests)
    write_run_dir(run_dir, config_yaml=config_yaml or _yaml(cfg), requests=requests, steps=steps,
                  summary=summary, extra_csvs=extras)
    if failure is not None:
        raise failure
    if cfg.sim_cache_dir is not None:
        metrics = compute_request_metrics(requests, summary["tpot_definition"])
        sim_cache.store(cfg.sim_cache_dir, sim_cache.key(cfg), run_dir, summary, metrics)
    if cfg.plots:  # seaborn and matplotlib load only here: ~0.4 s of a short run's start-up
        from metrics.plots import plot_run, run_frames
        from metrics.timeline_plot import plot_timelines
        plot_run(run_frames(summary, requests, steps), run_dir / "latency.png")
        partition = extras["partition"].to_frame() if "partition" in extras else None
        plot_timelines(extras["kv_usage"].to_frame(), partition, run_dir / "timeline.png",
                       title=f"{summary['engine_label']} | {cfg.model.name} | {cfg.workload.rate} req/s/GPU")
    return RunResult(summary, requests, steps, run_dir)


def _reuse(cfg: RunConfig, entry: sim_cache.Entry, run_dir: Path, config_yaml: str) -> RunResult:
    """A run whose simulation an earlier one of the study did (harness/sim_cache.py): its
    files, this run's config, tag, SLO attainment and versions. RunResult.requests and .steps
    are empty: the run directory holds them."""
    sim_cache.copy_results(entry, run_dir)
    summary = dict(entry.summary)
    summary["tag"] = cfg.tag
    summary |= json_safe(slo_summary(entry.metrics, cfg.slo.ttft_target_s, cfg.slo.tpot_target_s,
                                     summary["duration_s"]))
    summary["versions"] = versions()
    atomic_write_text(run_dir / "config.yaml", config_yaml or _yaml(cfg))
    write_summary(run_dir, summary)
    log.info("simulation reused from %s", entry.run_dir)
    return RunResult(summary, [], [], run_dir)


def _lazy_decodes_apply(cfg: RunConfig, engine: Engine) -> bool:
    """Simulated steady decodes advance as one cohort (engines/lazy_decodes.py; same results,
    O(steps) instead of O(tokens)) when every executor reads only the plan's sums. Not
    with check_integrity: its checker inspects every seq of every step."""
    return (cfg.executor.name == "sim" and not cfg.check_integrity
            and all(getattr(w.executor, "plan_shape_only", False) for w in engine.workers))


def _set_stop_tokens(cfg: RunConfig, engine: Engine, requests: list[Request]) -> None:
    """With executor.ignore_eos=false a sampled EOS ends a request (vLLM's default for a
    server; its throughput benchmark sets ignore_eos so output lengths follow the workload)."""
    if cfg.executor.ignore_eos:
        return
    eos = frozenset(getattr(engine, "eos_token_ids", ()))
    if cfg.executor.name == "sim":
        log.warning("executor.ignore_eos=false has no effect with executor=sim: the simulator "
                    "samples no tokens, so every request runs to its output_len")
    elif not eos:
        log.warning("executor.ignore_eos=false but the checkpoint's config.json has no eos_token_id: "
                    "every request runs to its output_len")
    for req in requests:
        req.stop_token_ids = eos


def _extra_tables(engine: Engine) -> dict[str, Table]:
    sizes = {p.name: p.num_blocks for p in engine.pools}
    out = {"kv_usage": Table(("time_s", "pool", "used_blocks", "used_fraction"),
                             [(t, pool, used, used / sizes[pool]) for t, pool, used in engine.kv.series])}
    transfers = [t for p in getattr(engine, "parts", [engine]) if isinstance(p, DisaggEngine) for t in p.transfers]
    if transfers:  # one row per P -> D KV transfer: bytes and time per request
        out["kv_transfers"] = Table(tuple(f.name for f in dataclasses.fields(transfers[0])),
                                    [dataclasses.astuple(t) for t in transfers])
    semipd = [p for p in getattr(engine, "parts", [engine]) if isinstance(p, SemiPDEngine)]
    if semipd:  # every semi-PD group of a run switches together; the first one stands for all
        out["partition"] = Table(("time_s", "device", "x_pct", "y_pct"), semipd[0].timeline)
    return out


def _shape(eng) -> str:
    """Compact instance layout, e.g. 1P1D, 2xU (unified), 1xS (semi-PD), 1P3D+4xS."""
    def one(design: str, n: int, p: int, d: int) -> str:
        return f"{p}P{d}D" if design == "disagg" else f"{n}x{'S' if design == 'semipd' else 'U'}"
    if eng.design == "cluster":
        return "+".join(one(x.design, x.num_instances, x.num_prefill, x.num_decode) for x in eng.parts)
    return one(eng.design, eng.num_instances, eng.num_prefill, eng.num_decode)


def give_token_ids(requests: list[Request], vocab_size: int, seed: int) -> None:
    """A real model needs prompt ids: keep the workload's (if it kept them and they fit the
    vocabulary), else draw seeded random ids, so sampled tokens are fed back as in a server."""
    rng = np.random.default_rng(seed)
    for req in requests:
        if req.token_ids is None or (req.token_ids and max(req.token_ids) >= vocab_size):
            req.token_ids = rng.integers(0, vocab_size, req.prompt_len).tolist()


def _rate_units(cfg: RunConfig, engine: Engine) -> int:
    """How many units `workload.rate` is multiplied by (see RunConfig.rate_unit)."""
    if cfg.rate_unit == "gpu":
        return engine.num_gpus
    return engine.num_gpus // (cfg.engine.tp * cfg.engine.pp)


def _summary(cfg: RunConfig, engine: Engine, workload, requests: list[Request], num_unfinished: int) -> dict:
    summary = {
        "engine": engine.name, "engine_label": cfg.engine.label, "design": cfg.engine.design, "executor": cfg.executor.name,
        "model": cfg.model.name, "hardware": cfg.hardware.name, "workload": cfg.workload.name,
        "workload_source": workload.source_used, "num_gpus": engine.num_gpus,
        "rate_per_gpu": cfg.workload.rate, "rate_unit": cfg.rate_unit,
        "num_rate_units": _rate_units(cfg, engine), "total_rate": workload.total_rate, "tag": cfg.tag,
    }
    summary |= summarize(requests, slo_ttft_s=cfg.slo.ttft_target_s, slo_tpot_s=cfg.slo.tpot_target_s,
                         tpot_definition=cfg.slo.tpot_definition)
    summary["num_unfinished"] = num_unfinished
    summary["num_preemptions"] = sum(r.num_preemptions for r in requests)
    summary["engine_shape"] = _shape(cfg.engine)
    if cfg.executor.name == "sim":
        hardware = hardware_of(cfg.hardware)
        summary |= {"cost_model": cfg.executor.cost_model, "profile": cfg.executor.profile,
                    "model_config": cfg.model.config, "hardware_calibration": hardware.calibration_source,
                    "hardware_uncalibrated": list(hardware.uncalibrated)}
    else:
        summary |= {"device": cfg.executor.device, "dtype": cfg.executor.dtype,
                    "ignore_eos": cfg.executor.ignore_eos,
                    "attention": getattr(engine.workers[0].executor, "attention_name", None),
                    "checkpoint": cfg.model.checkpoint or f"checkpoints/{cfg.model.name}",
                    "driver_max_lateness_s": getattr(engine.loop, "max_lateness_s", None)}
        if engine.runtime is not None:
            summary |= engine.runtime.summary()
    summary["num_weight_copies"] = engine.num_weight_copies
    summary["kv_pools"] = engine.kv.summary()
    for i, part in enumerate(getattr(engine, "parts", [engine])):
        prefix = f"part{i}_" if part is not engine else ""
        if isinstance(part, DisaggEngine):
            summary |= {prefix + k: v for k, v in part.transfer_stats().items()}
        if isinstance(part, SemiPDEngine):
            summary[prefix + "controller"] = cfg.engine.semipd.controller
            summary[prefix + "final_shares_pct"] = list(part.shares_pct)
            summary[prefix + "num_share_switches"] = part.num_share_switches  # decisions, not rows
    summary["versions"] = versions()
    return summary


class _progress:
    """A tqdm bar over finished requests; silent for short runs (tqdm's delay)."""

    def __init__(self, cfg: RunConfig, total: int, engine: Engine) -> None:
        self.enabled, self.total, self.engine = cfg.progress, total, engine

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="req", desc=self.engine.name, delay=2.0, leave=False,
                             disable=None)  # None: quiet when stderr is not a terminal (CI logs)
            self.engine.on_request_done = lambda _req: self.bar.update(1)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.close()
            self.engine.on_request_done = None


def _integrity_checker(engine: Engine):
    def check() -> None:
        for pool in engine.pools:
            pool.check_integrity(engine.live_block_tables(pool))
    return check


def _yaml(cfg: RunConfig) -> str:
    from omegaconf import OmegaConf
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

