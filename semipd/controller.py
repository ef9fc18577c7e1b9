"""Partition controllers: decide the (x, y) SM shares of the prefill and decode workers.

- `static`: never moves.
- `slo_code`: the `DynamicPartitioner.replan` decision of the code behind the semi-PD paper's
  Llama results (GitHub infinigence/Semi-PD, branch `distserve_base`,
  distserve/single_stage_engine.py), reproduced decision for decision (tests/
  test_semipd_slo_code_equivalence.py drives it and a transcription of the original through
  the same randomized windows). The window it reads is semipd/window.py.
- `slo_paper`: ours, after Algorithm 1 of the paper (arXiv 2504.19867) with the
  Eq. 4 latency model fitted online by least squares; until `min_fit_points` distinct shares
  were observed it predicts with the measured curves instead.
Controllers are pure: `decide(stats, x, y) -> Decision`; the engine applies it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from engines.config import SemiPDConfig
from semipd.curves import scale_latency, scale_tpot, scale_waiting
from semipd.window import WindowStats

Shares = tuple[float, float]


@dataclass(frozen=True)
class SLO:
    ttft_s: float
    tpot_s: float


@dataclass(frozen=True)
class Decision:
    """New shares and which workers are replaced. The original replaces a worker whenever it
    re-plans that side, even when the search lands on the current share (e.g. its first step
    down is predicted to miss), and drops window samples while a prefill-side switch runs."""

    x_pct: float
    y_pct: float
    restart_prefill: bool = False
    restart_decode: bool = False

    @property
    def shares(self) -> Shares:
        return self.x_pct, self.y_pct


class StaticController:
    name = "static"

    def decide(self, stats: WindowStats, x: float, y: float) -> Decision:
        return Decision(x, y)


def predict_tpot(stats: WindowStats, y: float, y_new: float) -> float:
    return scale_tpot(y_new) / scale_tpot(y) * stats.tpot_s


def predict_ttft(stats: WindowStats, x: float, x_new: float) -> float:
    return (scale_waiting(x_new) / scale_waiting(x) * stats.waiting_s
            + scale_latency(x_new) / scale_latency(x) * stats.prefill_s)


class SloCodeController:
    """The original's rules (step 2 %, at most 3 steps, floor 80 %, margin 1.1 by default):
    - TTFT ok iff there were no TTFT samples or P90 TTFT <= SLO; TPOT ok iff
      margin * P90 TPOT <= SLO (the margin is in this test only, not in the predictions);
    - both fail and NEITHER share is 100: both to 100; both fail otherwise: no change;
    - TPOT fails: raise y while y < 100 (stop at the first step predicted to meet the SLO,
      cap 100); at y = 100 lower x while TTFT is predicted to hold (floor; a first step
      predicted to miss steps back up, which at the floor lands ABOVE the current x);
    - TTFT fails: the mirror image; both ok: no change.
    """

    name = "slo_code"

    def __init__(self, cfg: SemiPDConfig, slo: SLO) -> None:
        self.cfg, self.slo = cfg, slo

    def decide(self, stats: WindowStats, x: float, y: float) -> Decision:
        ttft_ok = stats.num_ttft_samples == 0 or stats.ttft_s <= self.slo.ttft_s
        tpot_ok = stats.tpot_s * self.cfg.tpot_margin <= self.slo.tpot_s
        tpot_meets = lambda v: predict_tpot(stats, y, v) <= self.slo.tpot_s  # noqa: E731
        ttft_meets = lambda v: predict_ttft(stats, x, v) <= self.slo.ttft_s  # noqa: E731
        if not ttft_ok and not tpot_ok:
            if x != 100 and y != 100:
                return Decision(100.0, 100.0, True, True)
            return Decision(x, y)
        if not tpot_ok:
            if y < 100:
                return Decision(x, self._raise(y, tpot_meets), restart_decode=True)
            return Decision(self._lower(x, ttft_meets), y, restart_prefill=True)
        if not ttft_ok:
            if x < 100:
                return Decision(self._raise(x, ttft_meets), y, restart_prefill=True)
            return Decision(x, self._lower(y, tpot_meets), restart_decode=True)
        return Decision(x, y)

    def _raise(self, share: float, meets: Callable[[float], bool]) -> float:
        """Shortest step up: at most max_steps, cap 100, stop at the first predicted to meet."""
        for _ in range(self.cfg.max_steps):
            share = min(100.0, share + self.cfg.step_pct)
            if meets(share) or share == 100:
                break
        return share

    def _lower(self, share: float, still_meets: Callable[[float], bool]) -> float:
        """Longest step down: at most max_steps, floor; a step predicted to miss is undone."""
        for _ in range(self.cfg.max_steps):
            share = max(self.cfg.floor_pct, share - self.cfg.step_pct)
            if not still_meets(share):
                return share + self.cfg.step_pct
            if share == self.cfg.floor_pct:
                break
        return share


class SloPaperController:
    """Ours, after Algorithm 1: raise the violated phase's share step by step while the model
    still predicts a miss; once it is at 100, lower the OTHER share instead, step by step, while
    the other phase's SLO is still predicted to hold and not below the floor."""

    name = "slo_paper"

    def __init__(self, cfg: SemiPDConfig, slo: SLO) -> None:
        self.cfg, self.slo = cfg, slo
        self.ttft_points: list[tuple[float, float, float]] = []  # (x, lambda, ttft)
        self.tpot_points: list[tuple[float, float]] = []         # (y, tpot)

    def decide(self, stats: WindowStats, x: float, y: float) -> Decision:
        lam = 100.0 * stats.arrival_rate * stats.mean_prefill_s * x / 100.0  # l_100 = l_x * x/100 (Eq. 1)
        if stats.num_ttft_samples:
            self.ttft_points.append((x, lam, stats.ttft_s))
        self.tpot_points.append((y, stats.tpot_s))
        ttft_bad = stats.num_ttft_samples > 0 and stats.ttft_s > self.slo.ttft_s
        tpot_bad = stats.tpot_s > self.slo.tpot_s
        ttft_ok = lambda v: self.predict_ttft(stats, x, v, lam) <= self.slo.ttft_s  # noqa: E731
        tpot_ok = lambda v: self.predict_tpot(stats, y, v) <= self.slo.tpot_s  # noqa: E731
        if ttft_bad and not tpot_bad:
            x_new, y_new = self._move(x, y, ttft_ok, tpot_ok)
        elif tpot_bad and not ttft_bad:
            y_new, x_new = self._move(y, x, tpot_ok, ttft_ok)
        else:
            return Decision(x, y)  # both fine, or both violated: keep
        return Decision(x_new, y_new, x_new != x, y_new != y)

    def _move(self, mine: float, other: float, mine_ok: Callable[[float], bool],
              other_ok: Callable[[float], bool]) -> Shares:
        for _ in range(self.cfg.max_steps):
            if mine < 100.0:
                mine = min(100.0, mine + self.cfg.step_pct)
                if mine_ok(mine):
                    break
                continue
            lowered = max(self.cfg.floor_pct, other - self.cfg.step_pct)
            if lowered == other or not other_ok(lowered):
                break
            other = lowered
        return mine, other

    def predict_ttft(self, stats: WindowStats, x: float, x_new: float, lam: float) -> float:
        """Eq. 4: a1 / (x - lambda) + b1, with lambda from the observed rate and prefill time."""
        pts = [(1.0 / (px - pl), t) for px, pl, t in self.ttft_points if px > pl]
        if len({p[0] for p in pts}) < self.cfg.min_fit_points:
            return predict_ttft(stats, x, x_new)
        a1, b1 = _linear_fit(pts)
        return float("inf") if x_new <= lam else a1 / (x_new - lam) + b1

    def predict_tpot(self, stats: WindowStats, y: float, y_new: float) -> float:
        """Eq. 4: a2 / y + b2."""
        pts = [(1.0 / py, t) for py, t in self.tpot_points]
        if len({p[0] for p in pts}) < self.cfg.min_fit_points:
            return predict_tpot(stats, y, y_new)
        a2, b2 = _linear_fit(pts)
        return a2 / y_new + b2


def _linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares t = a * u + b."""
    u = np.array([p[0] for p in points])
    t = np.array([p[1] for p in points])
    a, b = np.polyfit(u, t, 1)
    return float(a), float(b)


def make_controller(cfg: SemiPDConfig, slo: SLO):
    if cfg.controller == "static":
        return StaticController()
    if cfg.controller == "slo_code":
        return SloCodeController(cfg, slo)
    if cfg.controller == "slo_paper":
        return SloPaperController(cfg, slo)
    raise ValueError(f"engine.semipd.controller must be static, slo_paper or slo_code; got '{cfg.controller}'")
