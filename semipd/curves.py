"""The semi-PD code's measured A100 scaling curves (semipd.md section 3, DynamicPartitioner),
in percent, as the controllers use them. Each is the factor by which a phase is slower at
`share_pct` than at 100 % (raw fits: about 1 at 100). The prefill and decode curves live in
sim/share_model.py (the `measured` share model uses them too); waiting is only used here.
"""
from __future__ import annotations

from sim import share_model


def scale_tpot(share_pct: float) -> float:
    return share_model.scale_tpot(share_pct / 100.0)


def scale_latency(share_pct: float) -> float:
    """Prefill compute latency."""
    return share_model.scale_latency(share_pct / 100.0)


def scale_waiting(share_pct: float) -> float:
    """Queueing before prefill: 1.4046 inv^2 - 3.1594 inv + 2.8735, inv = 100 / share_pct."""
    inv = 100.0 / share_pct
    return 1.4046465674985547 * inv * inv - 3.15935463280878 * inv + 2.8734660485396604
