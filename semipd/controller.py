"""Partition controllers: decide the (x, y) SM shares of the prefill and decode workers.

- `static`: never moves.
- `slo_code`: the DynamicPartitioner of the code behind the paper's Llama results
  (semipd.md section 3): P90 window, TPOT margin 1.1, 2 % steps, at most 3, floor 80 %,
  both failing -> (100, 100), predictions from the measured scaling curves.
- `slo_paper`: Algorithm 1 of the paper with the Eq. 4 latency model fitted online by
  least squares; until `min_fit_points` distinct shares were observed it predicts with
  the measured curves instead.
Controllers are pure: `decide(stats, x, y) -> (x, y)`; the engine applies the result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.config import SemiPDConfig
from semipd.curves import scale_latency, scale_tpot, scale_waiting
from semipd.window import WindowStats

Shares = tuple[float, float]


@dataclass(frozen=True)
class SLO:
    ttft_s: float
    tpot_s: float


class StaticController:
    name = "static"

    def decide(self, stats: WindowStats, x: float, y: float) -> Shares:
        return x, y


def predict_tpot(stats: WindowStats, y: float, y_new: float) -> float:
    return scale_tpot(y_new) / scale_tpot(y) * stats.tpot_s


def predict_ttft(stats: WindowStats, x: float, x_new: float) -> float:
    return (scale_waiting(x_new) / scale_waiting(x) * stats.waiting_s
            + scale_latency(x_new) / scale_latency(x) * stats.prefill_s)


class SloCodeController:
    name = "slo_code"

    def __init__(self, cfg: SemiPDConfig, slo: SLO) -> None:
        self.cfg, self.slo = cfg, slo

    def decide(self, stats: WindowStats, x: float, y: float) -> Shares:
        ttft_ok = stats.ttft_s <= self.slo.ttft_s
        tpot_ok = self.cfg.tpot_margin * stats.tpot_s <= self.slo.tpot_s
        if ttft_ok and tpot_ok:
            return x, y
        if not ttft_ok and not tpot_ok:
            return (100.0, 100.0)
        if not tpot_ok:
            if y < 100.0:  # give decode more
                return x, self._raise(y, lambda v: self.cfg.tpot_margin * predict_tpot(stats, y, v) <= self.slo.tpot_s)
            # decode already may use everything: take from prefill while TTFT still holds
            return self._lower(x, lambda v: predict_ttft(stats, x, v) <= self.slo.ttft_s), y
        if x < 100.0:
            return self._raise(x, lambda v: predict_ttft(stats, x, v) <= self.slo.ttft_s), y
        return x, self._lower(y, lambda v: self.cfg.tpot_margin * predict_tpot(stats, y, v) <= self.slo.tpot_s)

    def _raise(self, share: float, meets) -> float:
        """Up in steps (at most max_steps, cap 100); stop at the first step predicted to meet."""
        for _ in range(self.cfg.max_steps):
            share = min(100.0, share + self.cfg.step_pct)
            if meets(share) or share >= 100.0:
                break
        return share

    def _lower(self, share: float, still_meets) -> float:
        """Down in steps (at most max_steps, floor) while the other SLO is still predicted met."""
        for _ in range(self.cfg.max_steps):
            candidate = max(self.cfg.floor_pct, share - self.cfg.step_pct)
            if candidate == share or not still_meets(candidate):
                break
            share = candidate
        return share


class SloPaperController:
    """Algorithm 1: raise the violated phase's share step by step while the model still
    predicts a miss; if a raise would pass 100, lower the other share instead."""

    name = "slo_paper"

    def __init__(self, cfg: SemiPDConfig, slo: SLO) -> None:
        self.cfg, self.slo = cfg, slo
        self.ttft_points: list[tuple[float, float, float]] = []  # (x, lambda, ttft)
        self.tpot_points: list[tuple[float, float]] = []         # (y, tpot)

    def decide(self, stats: WindowStats, x: float, y: float) -> Shares:
        lam = 100.0 * stats.arrival_rate * stats.mean_prefill_s * x / 100.0  # l_100 = l_x * x/100 (Eq. 1)
        self.ttft_points.append((x, lam, stats.ttft_s))
        self.tpot_points.append((y, stats.tpot_s))
        ttft_bad = stats.ttft_s > self.slo.ttft_s
        tpot_bad = stats.tpot_s > self.slo.tpot_s
        if ttft_bad and not tpot_bad:
            return self._move(x, y, lambda v: self.predict_ttft(stats, x, v, lam) > self.slo.ttft_s)
        if tpot_bad and not ttft_bad:
            y_new, x_new = self._move(y, x, lambda v: self.predict_tpot(stats, y, v) > self.slo.tpot_s)
            return x_new, y_new
        return x, y  # both fine, or both violated: keep

    def _move(self, mine: float, other: float, still_bad) -> Shares:
        for _ in range(self.cfg.max_steps):
            if mine + self.cfg.step_pct <= 100.0:
                mine += self.cfg.step_pct
            else:
                mine, other = 100.0, max(self.cfg.step_pct, other - self.cfg.step_pct)
            if not still_bad(mine):
                break
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
