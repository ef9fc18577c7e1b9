"""Profile the real executor's step time over a grid of step shapes, for the simulator's
profiled cost model (sim/profiled.py, `executor.cost_model=profiled`).

    python -m engines.torch.profiler model=small_llama [hardware=cpu] [threads=2,1]
        [omp_wait=active,passive] [dtype=bfloat16] [repeats=5] [rounds=1] [seed=0]
        [out=results/profiles/cpu_small_llama.csv]
    python -m engines.torch.profiler model=small_llama contention=1   # concurrent steps

Runs the model's checkpoint (made with random weights when missing) on a worker process
started as real runs start them (engines/torch/runtime.py: packed weights, the calibrated
attention path, fused ops), timing each step as a real run's driver does (submit to
result), over:
- prefill: one chunk of n new tokens over c tokens of context, not sampling (a chunk in
  the middle of a prompt), n in 1..2048, c in {0, 512, 1024};
- decode: b sequences of one token over c tokens of context each, all sampling;
- mixed: decodes and a prefill chunk in one step (the fit leaves these out, so they
  test the model: sim/profiled.py reports their error);
once per thread count in `threads`, on a worker pinned to that many cores (as a semi-PD
worker with that share is), and once per OpenMP wait policy (`omp_wait`: active threads
as unified and disaggregated workers run, passive as semi-PD's). Each row: the median of
`repeats` timed steps after two warm-up steps, per round: `rounds` passes over the grid,
each in a shuffled order on fresh workers (against the machine's drift). The CSV starts with `#` lines naming the machine, the software
versions, the model and the executor set-up; sim/profiled.py checks them against the run.

contention=1 measures instead how a prefill step and a decode step slow each other down
when semi-PD's two workers run them at once (`run_contention`); sim/contention_check.py
sets the measurement beside what the simulator's contention models predict.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from engines.plan import ScheduledSeq, StepPlan

FORMAT = "semipd-bench-profile/1"
# Prefill chunks at context 0 at every decode batch size too, so the fit can tell the
# per-token cost (linear layers) from the per-sampled-sequence cost (LM head, sampler).
# Small batches are measured one by one: oneDNN's GEMMs for 1-12 rows are not monotone in
# the row count (small_llama decode at 512 keys, 2 threads: 11.4, 12.9, 12.1, 11.3, 11.0,
# 12.1 ms for batch 1-6), so interpolating between 1 and 4 would miss a 15 % bump at 2.
DECODE_BATCHES = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
PREFILL_TOKENS = DECODE_BATCHES + (256, 512, 1024, 2048)
PREFILL_CONTEXT_TOKENS = (16, 64, 256, 1024)  # at the nonzero contexts
PREFILL_CONTEXTS = (0, 512, 1024)
DECODE_CONTEXTS = (128, 1024)
MIXED = ((16, 512, 256, 0), (32, 128, 64, 256), (64, 1024, 16, 0), (4, 1024, 1024, 0))  # (b, c, n, c_prefill)
BLOCK_SIZE = 16
WARM_UP_STEPS = 2
# idle_before_s: how long the worker sat idle before the step; 0 for the grid (steps back to
# back), the gap for a real run's steps (harness/fidelity.py run rows).
COLUMNS = ("kind", "omp_wait", "threads", "prefill_seqs", "prefill_tokens", "prefill_context", "decode_seqs",
           "decode_context", "num_samples", "median_s", "min_s", "max_s", "repeats", "idle_before_s")
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str             # prefill | decode | mixed
    prefill_tokens: int   # new tokens of the one prefill chunk (0: none)
    prefill_context: int  # its context
    decode_seqs: int
    decode_context: int   # context of each decode (its new token is one more)

    @property
    def num_samples(self) -> int:
        return self.decode_seqs  # the prefill chunk is a middle chunk: it does not sample

    def max_tokens_per_seq(self) -> int:
        return max(self.prefill_tokens + self.prefill_context, self.decode_context + 1)


def grid(max_context: int) -> list[Shape]:
    """The step shapes, those that fit the model's context."""
    shapes = [Shape("prefill", n, c, 0, 0) for c in PREFILL_CONTEXTS
              for n in (PREFILL_TOKENS if c == 0 else PREFILL_CONTEXT_TOKENS)]
    shapes += [Shape("decode", 0, 0, b, c) for c in DECODE_CONTEXTS for b in DECODE_BATCHES]
    shapes += [Shape("mixed", n, cp, b, c) for b, c, n, cp in MIXED]
    return [s for s in shapes if s.max_tokens_per_seq() <= max_context]


def plan_for(shape: Shape, first_block: int = 0) -> tuple[StepPlan, int]:
    """The step plan of `shape` over fresh blocks from `first_block` on, and the number of
    blocks it uses."""
    seqs, next_block = [], first_block

    def blocks(tokens: int) -> tuple[int, ...]:
        nonlocal next_block
        n = -(-tokens // BLOCK_SIZE)
        next_block += n
        return tuple(range(next_block - n, next_block))

    for r in range(shape.decode_seqs):
        c = shape.decode_context
        seqs.append(ScheduledSeq(r, c, 1, True, False, blocks(c + 1), ((r * 7919 + c) % 128000,)))
    if shape.prefill_tokens:
        n, c = shape.prefill_tokens, shape.prefill_context
        seqs.append(ScheduledSeq(shape.decode_seqs, c, n, False, True, blocks(c + n),
                                 tuple((i * 31 + 7) % 128000 for i in range(n))))
    plan = StepPlan("profile", tuple(seqs), shape.prefill_tokens, shape.decode_seqs)
    return plan, next_block - first_block


def step_times(ex, plan: StepPlan, repeats: int, worker_clock: bool = False) -> list[float]:
    """Seconds of `repeats` steps of `plan` on a worker process after WARM_UP_STEPS (allocator,
    oneDNN primitives, KV pages): wall time from submit to result, as the driver of a real
    run sees a step (pipe included), or with `worker_clock` the worker's own
    (StepResult.duration_s)."""
    times = []
    for i in range(WARM_UP_STEPS + repeats):
        start = time.perf_counter()
        ex.submit(plan, 1.0)
        result = ex.collect()
        if i >= WARM_UP_STEPS:
            times.append(result.duration_s if worker_clock else time.perf_counter() - start)
    return times


def time_shape(ex, shape: Shape, repeats: int) -> list[float]:
    """Wall seconds of `repeats` steps of `shape` (step_times)."""
    return step_times(ex, plan_for(shape)[0], repeats)


def _prepare(model: str, checkpoint: str | None, dtype: str):
    from engines.torch import runtime
    return runtime.prepare(model, checkpoint, device="cpu", dtype=dtype, block_size=BLOCK_SIZE,
                           kv_cache_bytes=None, gpu_memory_utilization=0.9)


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == (platform.processor() or platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
                break
    except OSError:
        pass
    return f"{model}; {len(os.sched_getaffinity(0))} cores; {flags or 'no avx2'}"


def header(model_name: str, hardware: str, config, attention: str, dtype: str, cores: list[int]) -> list[str]:
    from engines.torch import cpu_kernels
    from harness.versions import versions
    v = versions()
    ops = "fused" if cpu_kernels.load() is None else "torch"
    return [f"# format: {FORMAT}",
            f"# model: {model_name}",
            f"# model_config: layers={config.num_hidden_layers} hidden={config.hidden_size} "
            f"heads={config.num_attention_heads} kv_heads={config.num_key_value_heads} "
            f"head_dim={config.head_dim} intermediate={config.intermediate_size} vocab={config.vocab_size}",
            f"# hardware: {hardware}",
            f"# machine: {machine_description()}",
            f"# cores: {len(cores)}",
            "# versions: " + " ".join(f"{k}={val}" for k, val in sorted(v.items())),
            f"# executor: torch runtime=processes dtype={dtype} attention={attention} ops={ops} "
            f"packed=True block_size={BLOCK_SIZE}",
            f"# created: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"]


def run(model: str = "small_llama", hardware: str = "cpu", threads: str = "2,1", dtype: str = "bfloat16",
        repeats: int = 5, out: str | None = None, checkpoint: str | None = None, omp_wait: str = "active,passive",
        rounds: int = 1, seed: int = 0, log=print) -> Path:
    """Profile on worker processes as a real run starts them (engines/torch/runtime.py): the
    worker for `t` threads runs on t cores, as a semi-PD worker with that share would. Once
    per OpenMP wait policy in `omp_wait`: `active` (spinning threads, unified and
    disaggregated workers) and `passive` (sleeping threads, semi-PD's workers, whose cores
    may overlap): the same step can take up to twice as long on a passive worker.

    The grid is measured `rounds` times, each round on fresh workers and in its own shuffled
    order (seeded by `seed` and the round), and a row is the median of all its timed steps:
    this machine's speed drifts by 10-20 % over minutes, and a fixed order would bias one
    kind of step (the last measured) against the others."""
    from engines.torch import runtime
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(_DTYPES)}")
    cores = sorted(os.sched_getaffinity(0))
    try:
        counts = [int(t) for t in str(threads).split(",")]
    except ValueError:
        counts = [0]
    if any(t < 1 or t > len(cores) for t in counts):
        raise ValueError(f"threads={threads}: comma-separated counts, each 1..{len(cores)} (this process's cores)")
    policies = str(omp_wait).split(",")
    if not policies or any(p not in ("active", "passive") for p in policies):
        raise ValueError(f"omp_wait={omp_wait}: comma-separated, each active or passive")
    if hardware != "cpu":
        raise ValueError(f"hardware={hardware!r}: this profiler runs the CPU executor; profile GPUs with "
                         "Vidur's profiler")
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats={repeats}, rounds={rounds}: each must be >= 1")
    setup = _prepare(model, checkpoint, dtype)
    shapes = grid(setup.config.max_context_tokens)
    needed = max(plan_for(s)[1] for s in shapes)
    if needed > setup.num_blocks:
        raise ValueError(f"the grid needs {needed} KV blocks; the default pool has {setup.num_blocks}")
    out_path = Path(out or f"results/profiles/{hardware}_{model}.csv")
    samples: dict[tuple[str, int, Shape], list[float]] = {}
    head = None
    for r in range(rounds):
        order = random.Random(seed * 1000 + r).sample(shapes, len(shapes))
        for policy in policies:
            with runtime.ProcessRuntime(setup, block_size=BLOCK_SIZE, temperature=0.0, seed=0, cores=cores,
                                        shares_cores=policy == "passive") as rt:
                for t in counts:
                    ex = rt.start(f"profile_{policy}_{t}_threads_r{r}", role="unified",
                                  share_pct=100.0 * t / len(cores), instance=0, num_instances=1)
                    ex.wait_ready()
                    head = head or header(model, hardware, setup.config, ex.attention_name, dtype, cores)
                    for i, shape in enumerate(order):
                        times = time_shape(ex, shape, repeats)
                        samples.setdefault((policy, t, shape), []).extend(times)
                        log(f"  round {r + 1}/{rounds} {policy} threads={t} [{i + 1}/{len(shapes)}] "
                            f"{shape.kind:7s} prefill {shape.prefill_tokens:5d}@{shape.prefill_context:<5d} "
                            f"decode {shape.decode_seqs:4d}@{shape.decode_context:<5d} "
                            f"{1e3 * statistics.median(times):9.2f} ms")
    rows = [(shape.kind, policy, t, int(shape.prefill_tokens > 0), shape.prefill_tokens, shape.prefill_context,
             shape.decode_seqs, shape.decode_context, shape.num_samples, statistics.median(ts), min(ts), max(ts),
             len(ts), 0.0)
            for policy in policies for t in counts for shape in shapes for ts in [samples[(policy, t, shape)]]]
    write_csv(out_path, head + [f"# rounds: {rounds} (shuffled, seed {seed})"], COLUMNS, rows)
    return out_path


def write_csv(path: Path, header_lines: list[str], columns: tuple[str, ...], rows: list[tuple]) -> None:
    """A profile CSV: its `#` lines, the column names, one line per row (floats to 6 digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = header_lines + [",".join(columns)] + [",".join(f"{x:.6g}" if isinstance(x, float) else str(x)
                                                           for x in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


# Anchor steps: re-timed before each real run of a sim-vs-real comparison to measure how
# much faster or slower the machine runs than when it was profiled (a shared VM drifts:
# the same small_llama decode step measured minutes apart differed by 10-20 % here).
ANCHORS = (Shape("decode", 0, 0, 4, 512), Shape("decode", 0, 0, 16, 512), Shape("decode", 0, 0, 64, 128),
           Shape("prefill", 256, 0, 0, 0))


def time_anchors(model: str = "small_llama", dtype: str = "bfloat16", repeats: int = 5,
                 checkpoint: str | None = None) -> list[tuple[Shape, float]]:
    """(shape, median wall seconds) of each anchor step on a fresh active worker on all cores."""
    from engines.torch import runtime
    cores = sorted(os.sched_getaffinity(0))
    setup = _prepare(model, checkpoint, dtype)
    with runtime.ProcessRuntime(setup, block_size=BLOCK_SIZE, temperature=0.0, seed=0, cores=cores) as rt:
        ex = rt.start("anchors", role="unified", share_pct=100.0, instance=0, num_instances=1)
        ex.wait_ready()
        return [(shape, statistics.median(time_shape(ex, shape, repeats))) for shape in ANCHORS]


# Concurrent steps (semi-PD's two workers on one machine): (prefill tokens at context 0,
# decode batch, decode context). Both workers step back to back while measured together.
CONCURRENT_PAIRS = ((512, 16, 512), (1024, 64, 1024), (2048, 4, 256))
LAYOUTS = (("overlap", 100, 100), ("disjoint", 50, 50))  # (name, prefill %, decode %)
CONTENTION_COLUMNS = ("layout", "prefill_share_pct", "decode_share_pct", "prefill_tokens", "decode_seqs",
                      "decode_context", "prefill_solo_s", "prefill_together_s", "decode_solo_s",
                      "decode_together_s", "decode_steps_together", "repeats")


def _together(pre, dec, prefill_plan, decode_plan, min_steps: int) -> tuple[list[float], list[float]]:
    """Both workers stepping back to back until each has finished `min_steps` + 1 steps:
    the durations of each one's steps after its first, every one of them run while the
    other worker was busy too (its last step, still running, is collected and dropped)."""
    from multiprocessing.connection import wait
    plans, times = {pre: prefill_plan, dec: decode_plan}, {pre: [], dec: []}
    by_source = {pre.ready_source: pre, dec.ready_source: dec}
    for ex, plan in plans.items():
        ex.submit(plan, 1.0)
    while min(len(t) for t in times.values()) < min_steps + 1:
        for source in wait(list(by_source)):
            ex = by_source[source]
            times[ex].append(ex.collect().duration_s)
            ex.submit(plans[ex], 1.0)
    for ex in plans:
        ex.collect()
    return times[pre][1:], times[dec][1:]


def run_contention(model: str = "small_llama", hardware: str = "cpu", dtype: str = "bfloat16", repeats: int = 5,
                   out: str | None = None, checkpoint: str | None = None, log=print) -> Path:
    """Slowdown of a prefill step and a decode step running at once on two worker processes
    over one weight copy and KV pool, as semi-PD runs them: on overlapping cores (shares
    100 + 100) and on disjoint ones (50 + 50), against each alone on the same worker. Times
    are the workers' own (StepResult.duration_s). Writes a CSV (CONTENTION_COLUMNS)."""
    from engines.torch import runtime
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise ValueError("the contention check needs 2+ cores (disjoint layouts)")
    if hardware != "cpu":
        raise ValueError(f"hardware={hardware!r}: this profiler runs the CPU executor")
    setup = _prepare(model, checkpoint, dtype)
    rows = []
    with runtime.ProcessRuntime(setup, block_size=BLOCK_SIZE, temperature=0.0, seed=0, cores=cores,
                                shares_cores=True) as rt:
        for layout, x, y in LAYOUTS:
            pre = rt.start(f"prefill_{layout}", role="prefill", share_pct=x, instance=0, num_instances=1)
            dec = rt.start(f"decode_{layout}", role="decode", share_pct=y, instance=0, num_instances=1)
            pre.wait_ready()
            dec.wait_ready()
            for n, b, c in CONCURRENT_PAIRS:
                p_plan, used = plan_for(Shape("prefill", n, 0, 0, 0))
                d_plan, _ = plan_for(Shape("decode", 0, 0, b, c), first_block=used)
                p_solo = statistics.median(step_times(pre, p_plan, repeats, worker_clock=True))
                d_solo = statistics.median(step_times(dec, d_plan, repeats, worker_clock=True))
                p_times, d_times = _together(pre, dec, p_plan, d_plan, repeats)
                rows.append((layout, x, y, n, b, c, p_solo, statistics.median(p_times), d_solo,
                             statistics.median(d_times), len(d_times), repeats))
                log(f"  {layout:8s} ({x},{y}) prefill {n}: {1e3 * p_solo:.1f} -> {1e3 * rows[-1][7]:.1f} ms; "
                    f"decode {b}@{c}: {1e3 * d_solo:.1f} -> {1e3 * rows[-1][9]:.1f} ms")
    out_path = Path(out or f"results/profiles/{hardware}_{model}_contention.csv")
    write_csv(out_path, [f"# format: {FORMAT}-contention", f"# model: {model}", f"# hardware: {hardware}",
                         f"# machine: {machine_description()}"], CONTENTION_COLUMNS, rows)
    return out_path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    known = {"model", "hardware", "threads", "dtype", "repeats", "out", "checkpoint", "contention", "omp_wait",
             "rounds", "seed"}
    kwargs = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in known:
            print(f"profiler: bad argument {a!r}: expected key=value with key in {sorted(known)}", file=sys.stderr)
            return 2
        if key in ("repeats", "rounds", "seed"):
            try:
                value = int(value)
            except ValueError:
                print(f"profiler: {key}={value!r}: expected an integer", file=sys.stderr)
                return 2
        kwargs[key] = value
    contention = kwargs.pop("contention", "0")
    if contention not in ("0", "1"):
        print(f"profiler: contention={contention!r}: expected 0 or 1", file=sys.stderr)
        return 2
    try:
        if contention == "1":
            kwargs.pop("threads", None)
            kwargs.pop("omp_wait", None)
            kwargs.pop("rounds", None)
            kwargs.pop("seed", None)
            path = run_contention(**kwargs)
        else:
            path = run(**kwargs)
    except ValueError as err:
        print(f"profiler: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
