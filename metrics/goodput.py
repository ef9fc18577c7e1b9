"""Goodput in the DistServe / semi-PD sense: the highest per-GPU request rate at which SLO
attainment stays >= a target (90 % in the paper), found by sweeping rates and
interpolating the crossing; plus a sweep + bisection search over a rate range.

Pure functions: `evaluate(rate) -> attainment` is supplied by the caller (a simulated
run, a real run, or a synthetic curve in tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from engines.errors import UserError


@dataclass(frozen=True)
class Goodput:
    """`rate` is the interpolated crossing; `bound` says whether it is exact ('crossing'),
    a lower bound (every rate passed: 'at_least') or an upper bound (none passed: 'below')."""

    rate: float
    bound: str
    points: tuple[tuple[float, float], ...] = field(default=())


def goodput_from_curve(rates: Sequence[float], attainments: Sequence[float], target: float = 0.9) -> Goodput:
    """Crossing of an attainment curve (points sorted by rate internally). The first rate
    that misses the target ends the search, so a noisy pass at a higher rate is ignored."""
    pts = sorted((float(r), float(a)) for r, a in zip(rates, attainments))
    if not pts:
        raise ValueError("goodput: no (rate, attainment) points")
    for j, (rate, att) in enumerate(pts):
        if att < target:
            if j == 0:
                return Goodput(rate, "below", tuple(pts))
            r0, a0 = pts[j - 1]
            frac = (a0 - target) / (a0 - att) if a0 != att else 0.0
            return Goodput(r0 + frac * (rate - r0), "crossing", tuple(pts))
    return Goodput(pts[-1][0], "at_least", tuple(pts))


def search_goodput(evaluate: Callable[[float], float], lo: float, hi: float, *, target: float = 0.9,
                   num_grid: int = 5, num_bisect: int = 4,
                   evaluate_many: Callable[[list[float]], list[float]] | None = None) -> Goodput:
    """Sweep `num_grid` rates over [lo, hi], then bisect the bracket around the first miss
    `num_bisect` times; the answer interpolates the final bracket. `evaluate_many`, if
    given, evaluates the grid's rates together (one sweep that a launcher runs in parallel)."""
    if not 0 < lo < hi or num_grid < 2:
        raise UserError(f"goodput search needs 0 < lo < hi and num_grid >= 2; got lo={lo}, hi={hi}, "
                         f"num_grid={num_grid}")
    seen: dict[float, float] = {}

    def att(rate: float) -> float:
        if rate not in seen:
            seen[rate] = evaluate(rate)
        return seen[rate]

    step = (hi - lo) / (num_grid - 1)
    grid = [lo + i * step for i in range(num_grid)]
    if evaluate_many is not None:
        seen.update(zip(grid, evaluate_many(grid)))
    first = goodput_from_curve(grid, [att(r) for r in grid], target)
    if first.bound != "crossing":
        return Goodput(first.rate, first.bound, tuple(sorted(seen.items())))
    below = max(r for r in grid if r < first.rate + 1e-12 and att(r) >= target)
    above = min(r for r in grid if r > below and att(r) < target)
    for _ in range(num_bisect):
        mid = 0.5 * (below + above)
        if att(mid) >= target:
            below = mid
        else:
            above = mid
    final = goodput_from_curve([below, above], [att(below), att(above)], target)
    return Goodput(final.rate, "crossing", tuple(sorted(seen.items())))
