"""The semi-PD code's measured A100 scaling curves, exactly as its `DynamicPartitioner` uses
them (GitHub infinigence/Semi-PD, branch `distserve_base`, distserve/single_stage_engine.py,
`replan`'s nested `_scale_tpot`, `_scale_latency`, `_scale_waiting`).

Each is the factor by which a phase is slower at `share_pct` than at 100 %. With
inv = 100 / share_pct the fits are evaluated only below 100; at exactly 100 they return 1
(the raw fits give 1.025, 1.051 and 1.119 there, which would make leaving 100 look cheap).
`scale_waiting` is not monotonic below 100 (lowest, 1.097, near 89 %), in the original too;
at 100 it is 1, below every value in [80, 100). The expressions keep the original's
operation order so predictions match it bit for bit. sim/share_model.py holds the same
prefill and decode fits for the `measured` share model (tests/test_semipd_curves.py checks
they agree).
"""
from __future__ import annotations


def scale_tpot(share_pct: float) -> float:
    """Decode iteration time (TPOT)."""
    if share_pct == 100:
        return 1.0
    inv = 100 / share_pct
    return 0.6099164272415375 * inv + 0.41530605763705736


def scale_latency(share_pct: float) -> float:
    """Prefill compute latency."""
    if share_pct == 100:
        return 1.0
    inv = 100 / share_pct
    return 0.732435017003385 * inv + 0.3185253290850649


def scale_waiting(share_pct: float) -> float:
    """Queueing before prefill."""
    if share_pct == 100:
        return 1.0
    inv = 100 / share_pct
    return 1.4046465674985547 * inv ** 2 + -3.15935463280878 * inv + 2.8734660485396604
