"""The `measured` contention model's factors: how much semi-PD's prefill and decode steps
slow down while the other worker steps too, read from a contention profile written by
`python -m engines.torch.profiler model=... contention=1` (its CSV columns: layout, the
two shares, each pair's solo and together times).

On a CPU two workers whose core sets overlap time-share those cores: neither GPU-style
model describes it (README, "Contention check": prefill measured ~2x where `resources`
predicts 1.5-2.0x and the simulated semi-PD prefill came out 1.39x). This model takes
the measurement itself: per layout (`overlap`: shares x + y > 100, the workers share
cores; `disjoint`: x + y <= 100) and role, the median over the profiled pairs of
together / solo. It has no dependence on the steps' shapes beyond that: the profile
measures three pairs, and their prefill factors agree within 4 % on overlapping cores.
"""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from engines.errors import ConfigError

OPTION = "engine.semipd.contention_profile"
_NEEDED = ("layout", "prefill_solo_s", "prefill_together_s", "decode_solo_s", "decode_together_s")


@dataclass(frozen=True)
class MeasuredContention:
    """Slowdown factors (together / solo) per layout: {layout: (prefill, decode)}."""

    factors: dict[str, tuple[float, float]]
    path: str

    def slowdowns(self, x_pct: float, y_pct: float) -> tuple[float, float]:
        layout = "overlap" if x_pct + y_pct > 100.0 + 1e-9 else "disjoint"
        if layout not in self.factors:
            raise ConfigError(OPTION, f"a contention profile with '{layout}' rows (shares {x_pct:g} + {y_pct:g})",
                              self.path)
        return self.factors[layout]


def read(path: str | Path | None) -> MeasuredContention:
    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise ConfigError(OPTION, "a contention profile CSV with engine.semipd.contention=measured "
                          "(python -m engines.torch.profiler model=... contention=1 writes one)", path)
    with p.open() as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    if not rows or any(c not in rows[0] for c in _NEEDED):
        raise ConfigError(OPTION, f"a CSV with columns {', '.join(_NEEDED)}", str(path))
    by_layout: dict[str, list[tuple[float, float]]] = {}
    try:
        for r in rows:
            pre = float(r["prefill_together_s"]) / float(r["prefill_solo_s"])
            dec = float(r["decode_together_s"]) / float(r["decode_solo_s"])
            if not (pre > 0 and dec > 0):
                raise ValueError("a factor <= 0")
            by_layout.setdefault(r["layout"], []).append((pre, dec))
    except (ValueError, ZeroDivisionError) as err:
        raise ConfigError(OPTION, "positive solo and together times in every row", f"{path} ({err})") from None
    factors = {layout: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v))
               for layout, v in by_layout.items()}
    return MeasuredContention(factors, str(path))
