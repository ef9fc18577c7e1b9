"""Profiled cost model: step times predicted from measured steps of the real executor
(`executor.cost_model=profiled executor.profile=<csv>`, a profile written by
`python -m engines.torch.profiler`).

A step's time is split into parts, each a function of one feature of the plan:

    t = L(m) + H(s) + a_p * pairs_p + c_p * keys_p + a_d * keys_d

- L(m): everything that grows with the step's new tokens m (linear layers, norms, RoPE,
  KV writes, the per-step host work): piecewise linear between the profiled token
  counts (the prefill chunks at context 0 of the profile);
- H(s): what grows with the sequences that sample a token (LM head, sampler, per-decode
  attention set-up): piecewise linear between the profiled decode batch sizes, H(0) = 0;
- attention: prefill chunks cost a_p per (query, key) pair (causal: a chunk of n tokens
  over c of context has n c + n (n + 1) / 2) and c_p per key read; decodes a_d per key.
The parts are fitted jointly to the prefill and decode rows (least squares on relative
error, coefficients kept non-negative); the mixed rows are left out and reported as the
fit's test (`fit_report`). Outside the profiled token and batch range L and H are scaled
from their last measured point by the roofline's growth (sim/cost_model.py), with a log
line the first time.

Shares (semi-PD on a CPU: a share is a number of cores, semipd/partition.py): the fit of
the profile rows run on that many threads; without such rows, the full-share fit scaled
by the roofline share model, logged. Semi-PD's workers let their OpenMP threads sleep
between parallel regions (their cores may overlap), which makes small steps up to twice
as slow: their cost model reads the profile's `omp_wait=passive` rows, the others' the
`active` ones.

Run rows (`kind=run`, written by `harness.fidelity`'s profile rounds): the steps of a short
real run, each with the time its driver recorded (plan to handled result). A real run's
steps take longer than the same shapes timed back to back on an idle worker: the driver's
scheduling, new token counts (oneDNN builds a primitive per new GEMM row count), KV blocks
scattered over the pool (benchmarks/first_time_shapes.py, replay_steps.py, kv_layout.py).
The grid does not time these; the run rows measure them together, as Vidur's CPU-overhead
profiles do for vLLM's host work. Every prediction is multiplied by a run factor, the median
over a group of run rows of measured / predicted (`run_factor`), from the most specific group
with MIN_RUN_ROWS rows: by kind of step (prefill only, mixed: a prefill chunk and decodes,
decode only) and thread count (a disaggregated run's instances each run on one core of two
and slow each other down through the shared cache and memory, sim/contention_check.py),
falling back to all thread counts. A step after idle (IDLE_GAP_S or more after its worker's
previous step, or its first) takes the factor of the run rows after idle where there are
enough: on one machine such prefills ran 1.14x their prediction against 1.03x for the busy
ones, and at light load one slow prefill lets the next prompts join the following step
(README, "Light-load TTFT"); on another the two factors were the same. A model reads the run
rows of its own OpenMP wait policy where there are any: semi-PD's passive workers those of a
semi-PD calibration run with the measured contention divided out (harness/fidelity_profile.py
run_rows), whose steps took 0.93-1.09x the passive grid where unified's took 1.06-1.30x the
active one (the profile of the README's latest fidelity report).
The run rows are not in the fit.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from engines.errors import ConfigError
from engines.plan import ScheduledSeq, StepPlan
from semipd.partition import num_cores_for_share
from sim.cost_model import RooflineCostModel
from sim.specs import HardwareSpec, ModelSpec

log = logging.getLogger(__name__)
FORMAT = "semipd-bench-profile/1"
# A row's step shape and set-up (what identifies it), then its time.
SHAPE_COLUMNS = ("kind", "omp_wait", "threads", "prefill_seqs", "prefill_tokens", "prefill_context", "decode_seqs",
                 "decode_context", "num_samples", "idle_before_s")
_COLUMNS = SHAPE_COLUMNS + ("median_s",)
# Fewer run rows of a kind than this: no factor for it (1.0).
MIN_RUN_ROWS = 5
# A step that starts this long or longer after its worker's previous step ended (or is its
# first) runs "after idle": a busy worker's steps follow each other within ~3 ms (the
# driver's handling), an idle one waits for a request (in the real runs 0.2 s or more).
IDLE_GAP_S = 0.05
STEP_KINDS = ("prefill", "mixed", "decode")
ALL, IDLE, BUSY = "all", "idle", "busy"  # run factor groups: every thread count; after idle or not


def step_kind(prefill_tokens: int, decode_seqs: int) -> str:
    """prefill (prefill chunks only), mixed (a chunk and decodes) or decode (decodes only)."""
    return ("mixed" if decode_seqs else "prefill") if prefill_tokens else "decode"


@dataclasses.dataclass(frozen=True)
class Fit:
    """One thread count's fitted parts."""

    threads: int
    token_knots: tuple[int, ...]
    token_s: tuple[float, ...]       # L at the knots
    sample_knots: tuple[int, ...]
    sample_s: tuple[float, ...]      # H at the knots (H(0) = 0)
    prefill_pair_s: float
    prefill_key_s: float
    decode_key_s: float
    max_context: int


def read_profile(path: str | Path) -> tuple[dict[str, str], pd.DataFrame]:
    """(header fields, rows) of a profile CSV; ConfigError naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("executor.profile", "a profile CSV (python -m engines.torch.profiler)", str(path))
    meta = {}
    with p.open() as f:
        for line in f:
            if not line.startswith("#"):
                break
            key, _, value = line[1:].strip().partition(":")
            meta[key.strip()] = value.strip()
    if meta.get("format") != FORMAT:
        raise ConfigError("executor.profile", f"a file in format {FORMAT} (its '# format:' line)",
                          f"{path} (format {meta.get('format')!r})")
    rows = pd.read_csv(p, comment="#")
    if "idle_before_s" not in rows.columns:  # profiles written before run rows carried it: steps back to back
        rows["idle_before_s"] = 0.0
    missing = [c for c in _COLUMNS if c not in rows.columns]
    if missing:
        raise ConfigError("executor.profile", f"columns {', '.join(_COLUMNS)}", f"{path} (missing {missing})")
    if rows.empty or not (rows["median_s"] > 0).all():
        raise ConfigError("executor.profile", "rows with positive median_s", str(path))
    return meta, rows


def _hats(x: np.ndarray, knots: tuple[int, ...], zero_at_origin: bool) -> np.ndarray:
    """Piecewise-linear basis: column k is 1 at knots[k], 0 at the other knots (and at 0
    when zero_at_origin), linear in between; flat beyond the last knot's neighbours."""
    pts = ((0,) if zero_at_origin else ()) + knots
    cols = []
    for k in range(len(knots)):
        values = np.zeros(len(pts))
        values[k + (1 if zero_at_origin else 0)] = 1.0
        cols.append(np.interp(x, pts, values))
    return np.stack(cols, axis=1)


def _features(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    n, c = rows["prefill_tokens"].to_numpy(float), rows["prefill_context"].to_numpy(float)
    b, cd = rows["decode_seqs"].to_numpy(float), rows["decode_context"].to_numpy(float)
    return {"m": n + b, "s": rows["num_samples"].to_numpy(float),
            "pairs_p": n * c + n * (n + 1) / 2, "keys_p": np.where(n > 0, c + n, 0.0), "keys_d": b * (cd + 1)}


def fit_rows(rows: pd.DataFrame, threads: int) -> Fit:
    """Fit one thread count's prefill and decode rows (mixed rows are not used)."""
    train = rows[rows["kind"].isin(["prefill", "decode"])]
    prefill0 = train[(train["kind"] == "prefill") & (train["prefill_context"] == 0)]
    token_knots = tuple(sorted(set(prefill0["prefill_tokens"].astype(int))))
    sample_knots = tuple(sorted(set(train.loc[train["num_samples"] > 0, "num_samples"].astype(int))))
    if len(token_knots) < 2 or not sample_knots:
        raise ValueError(f"threads={threads}: the profile needs prefill rows at context 0 with 2+ token "
                         "counts and decode rows")
    f = _features(train)
    y = train["median_s"].to_numpy(float)
    blocks = [_hats(f["m"], token_knots, False), _hats(f["s"], sample_knots, True),
              f["pairs_p"][:, None], f["keys_p"][:, None], f["keys_d"][:, None]]
    x = np.concatenate(blocks, axis=1)
    coef = _nonnegative_lstsq(x / y[:, None], np.ones_like(y))
    nt, ns = len(token_knots), len(sample_knots)
    return Fit(threads, token_knots, tuple(coef[:nt]), sample_knots, tuple(coef[nt:nt + ns]),
               float(coef[nt + ns]), float(coef[nt + ns + 1]), float(coef[nt + ns + 2]),
               int(max((rows["prefill_context"] + rows["prefill_tokens"]).max(), rows["decode_context"].max() + 1)))


def _nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min |a x - b| with x >= 0, by dropping the most negative coefficient and refitting
    (the few columns here make this exact enough; every part of a step time is >= 0)."""
    active = list(range(a.shape[1]))
    while True:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x = np.zeros(a.shape[1])
            x[active] = sol
            return x
        active.pop(int(np.argmin(sol)))


class ProfiledCostModel:
    """`step_time_s(plan, share)` from a profile; `resource_demands_s` as the roofline's
    split of the step into compute and memory time, scaled to the profiled time."""

    reads_idle = True  # step_time_s takes how long the worker sat idle (sim/executor.py)

    def __init__(self, profile: str | Path, model: ModelSpec, hardware: HardwareSpec,
                 share_model: str = "roofline", omp_wait: str = "active", devices: int = 1,
                 scale: float = 1.0) -> None:
        meta, rows = read_profile(profile)
        for field, wanted in (("model", model.name), ("hardware", hardware.name)):
            if meta.get(field) != wanted:
                raise ConfigError("executor.profile", f"a profile of {field} {wanted} (its '# {field}:' line)",
                                  f"{profile} ({field} {meta.get(field)!r})")
        run_rows, grid_rows = rows[rows["kind"] == "run"], rows[rows["kind"] != "run"]
        rows = grid_rows[grid_rows["omp_wait"] == omp_wait]
        if rows.empty:
            raise ConfigError("executor.profile", f"rows with omp_wait={omp_wait} (semi-PD's workers wait "
                              "passively, the others actively: profile with omp_wait=active,passive)", str(profile))
        self.profile, self.meta, self.omp_wait = str(profile), meta, omp_wait
        self.fits = {int(t): fit_rows(g, int(t)) for t, g in rows.groupby("threads")}
        # The real runtime splits the machine's cores between its devices (instances):
        # a device of a 2-device design (disaggregated 1P1D) is one core of two.
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        # Every predicted step time x scale: how much slower (> 1) the machine runs now than
        # when profiled, measured on anchor steps (harness/fidelity.py); 1 = as profiled.
        self.scale = scale
        self.max_threads = max(1, max(self.fits) // devices)
        self.rows = rows
        self.roofline = RooflineCostModel(model, hardware, share_model=share_model)
        self._warned: set[str] = set()
        # Run rows of the model's own wait policy where there are any (semi-PD's passive
        # workers: a semi-PD calibration run's steps, harness/fidelity.py), else all of them.
        own = run_rows[run_rows["omp_wait"] == omp_wait]
        self.run_rows = own if len(own) else run_rows
        self.run_factors, self.factors = self._run_factors(self.run_rows, grid_rows)

    # ----- prediction ---------------------------------------------------------------------
    def step_time_s(self, plan: StepPlan, share: float, idle_before_s: float = 0.0) -> float:
        """The step's predicted time; `idle_before_s`: how long its worker sat idle before
        it (math.inf for its first step)."""
        return self.scale * self.run_factor(plan, share, idle_before_s) * self._step_time_s(plan, share)

    def run_factor(self, plan: StepPlan, share: float, idle_before_s: float = 0.0) -> float:
        """The run factor of this step, from the most specific group of run rows that has
        MIN_RUN_ROWS of them. A step after idle (idle_before_s >= IDLE_GAP_S) first tries
        the after-idle rows of its thread count and kind, then of its kind. Then every step
        tries the busy rows (not after idle) of its thread count and kind, of its kind, and
        last all rows of its kind (1.0 without run rows)."""
        kind = step_kind(plan.num_prefill_tokens, plan.num_decode_tokens)
        threads = self._threads(share)
        keys = ((threads, kind, IDLE), (ALL, kind, IDLE)) if idle_before_s >= IDLE_GAP_S else ()
        for key in keys + ((threads, kind, BUSY), (ALL, kind, BUSY)):
            factor = self.factors.get(key)
            if factor is not None:
                return factor
        return self.run_factors[kind]

    def _run_factors(self, run_rows: pd.DataFrame, grid_rows: pd.DataFrame
                     ) -> tuple[dict[str, float], dict[tuple, float]]:
        """Per group of run rows with at least MIN_RUN_ROWS of them, keyed (threads or ALL,
        kind, IDLE or BUSY), the median of measured / predicted by the fit of the
        grid rows with the run's own thread count and OpenMP wait policy (so a passive
        model's factors are an active one's); and per kind over all its rows (1.0 with fewer)."""
        ratios: dict[tuple, list[float]] = {}
        for (policy, threads), group in run_rows.groupby(["omp_wait", "threads"]):
            same = grid_rows[(grid_rows["omp_wait"] == policy) & (grid_rows["threads"] == threads)]
            if same.empty:
                continue
            fit = fit_rows(same, int(threads))
            for _, r in group.iterrows():
                ratio = r["median_s"] / self._predict(fit, row_plan(r))
                kind = step_kind(r["prefill_tokens"], r["decode_seqs"])
                ratios.setdefault((kind,), []).append(ratio)
                state = IDLE if r["idle_before_s"] >= IDLE_GAP_S else BUSY
                for t in (int(threads), ALL):
                    ratios.setdefault((t, kind, state), []).append(ratio)
        factors = {key: float(np.median(v)) for key, v in ratios.items() if len(v) >= MIN_RUN_ROWS}
        per_kind = {kind: factors.pop((kind,), 1.0) for kind in STEP_KINDS}
        parts = [f"{k} {per_kind[k]:.3f} ({len(ratios.get((k,), ()))})"
                 + (f" after idle {factors[(ALL, k, IDLE)]:.3f} ({len(ratios[(ALL, k, IDLE)])})"
                    if (ALL, k, IDLE) in factors else "") for k in STEP_KINDS]
        log.info("profiled cost model: %s run factors (from how many run rows): %s; %d groups by thread "
                 "count and idle", self.profile, ", ".join(parts), len(factors))
        return per_kind, factors

    def grid_step_time_s(self, plan: StepPlan, share: float) -> float:
        """The grid's prediction alone: no run factor, no scale (a step timed as the profiler
        times one, back to back on an idle worker)."""
        return self._step_time_s(plan, share)

    def _step_time_s(self, plan: StepPlan, share: float) -> float:
        threads = self._threads(share)
        fit = self.fits.get(threads)
        if fit is None:  # no rows at that many threads: the full fit, scaled as the roofline scales
            self._note("share", f"{self.profile} has no rows at {threads} threads (share {share:.2f}); "
                                "scaling the full-share profile by the roofline share model")
            full = self.fits[self.max_threads]
            return self._predict(full, plan) * (self.roofline.step_time_s(plan, share)
                                                / self.roofline.step_time_s(plan, 1.0))
        return self._predict(fit, plan)

    def _threads(self, share: float) -> int:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        return num_cores_for_share(100.0 * share, self.max_threads)

    def resource_demands_s(self, plan: StepPlan) -> tuple[float, float]:
        compute, memory = self.roofline.resource_demands_s(plan)
        total = self.step_time_s(plan, 1.0)
        scale = total / max(compute, memory, 1e-12)
        return compute * scale, memory * scale

    def _predict(self, fit: Fit, plan: StepPlan) -> float:
        m = s = pairs_p = keys_p = keys_d = 0
        longest = 0
        for q in plan.seqs:
            new, ctx = q.num_new_tokens, q.num_context_tokens
            m += new
            longest = max(longest, ctx + new)
            if q.samples:
                s += 1
            if q.is_prefill:
                pairs_p += new * ctx + new * (new + 1) // 2
                keys_p += ctx + new
            else:
                keys_d += ctx + new
        if m == 0:
            return 0.0
        if longest > fit.max_context:
            self._note("context", f"a sequence of {longest} tokens is past {self.profile}'s longest "
                                  f"({fit.max_context}): attention extrapolated linearly")
        return (self._part(m, fit.token_knots, fit.token_s, "tokens", self._roof_tokens)
                + self._part(s, fit.sample_knots, fit.sample_s, "sampling sequences", self._roof_samples)
                + fit.prefill_pair_s * pairs_p + fit.prefill_key_s * keys_p + fit.decode_key_s * keys_d)

    def _part(self, x: int, knots, values, what: str, roof) -> float:
        if x == 0:
            return 0.0
        if x <= knots[-1]:
            return float(np.interp(x, knots, values)) if x >= knots[0] else values[0] * roof(x) / roof(knots[0])
        self._note(what, f"{x} {what} is past {self.profile}'s largest ({knots[-1]}): "
                         "scaled from it by the roofline's growth")
        return values[-1] * roof(x) / roof(knots[-1])

    def _roof_tokens(self, m: int) -> float:
        return self.roofline._gpu_parts_s(shape_plan(m), 1.0, 1.0)[0]

    def _roof_samples(self, s: int) -> float:
        r = self.roofline._rates(1.0, 1.0)
        return self.roofline._head_s(s, s, r)

    def _note(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("profiled cost model: %s", message)

    # ----- how well the profile is fitted ------------------------------------------------
    def fit_report(self) -> pd.DataFrame:
        """Every profile row with its prediction (the fit alone, no run factor) and relative
        error; `used_in_fit` is False for the mixed rows (the test of additivity) and the run
        rows."""
        out = []
        for _, r in pd.concat([self.rows, self.run_rows]).iterrows():
            fit = self.fits.get(int(r["threads"]))
            if fit is None:
                continue
            plan = row_plan(r)
            pred = self._predict(fit, plan)
            out.append({**r.to_dict(), "predicted_s": pred, "rel_error": pred / r["median_s"] - 1.0,
                        "used_in_fit": r["kind"] in ("prefill", "decode")})
        return pd.DataFrame(out)


def shape_plan(prefill_tokens: int = 0, prefill_context: int = 0, decode_seqs: int = 0,
               decode_context: int = 0, prefill_samples: bool = False) -> StepPlan:
    """The profiler's step shape as a plan: `decode_seqs` decodes over `decode_context`
    tokens each and one prefill chunk of `prefill_tokens` over `prefill_context`, which
    samples only if `prefill_samples` (the profiler's chunks do not, engines/torch/profiler.py;
    a run row's last chunk of a prompt does)."""
    seqs = [ScheduledSeq(i, decode_context, 1, True, False, ()) for i in range(decode_seqs)]
    if prefill_tokens:
        seqs.append(ScheduledSeq(decode_seqs, prefill_context, prefill_tokens, prefill_samples, True, ()))
    return StepPlan("shape", tuple(seqs), prefill_tokens, decode_seqs)


def row_plan(r) -> StepPlan:
    """A profile row's step as a plan."""
    return shape_plan(int(r["prefill_tokens"]), int(r["prefill_context"]), int(r["decode_seqs"]),
                      int(r["decode_context"]), prefill_samples=int(r["num_samples"]) > int(r["decode_seqs"]))


def median_abs_error(report: pd.DataFrame, used_in_fit: bool) -> float:
    part = report[report["used_in_fit"] == used_in_fit]
    return float(part["rel_error"].abs().median()) if len(part) else math.nan
