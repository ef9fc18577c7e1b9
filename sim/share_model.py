"""How a step's time grows when its worker is capped to a share of the SMs.

semi-PD runs a prefill worker and a decode worker on one GPU, each capped by MPS to a
percentage of the SMs (arXiv 2504.19867, computation resource controller). Two models:

- `roofline` (default): applied op by op inside the cost model. Compute throughput is
  proportional to the SMs, so a compute-bound op's time scales as 1/share. Bandwidth
  is not: a fraction of the SMs already keeps enough loads in flight to saturate HBM,
  so the achievable bandwidth fraction is min(1, share / saturation_share).
  Choice of saturation_share (HardwareSpec.bandwidth_saturation_share): 0.5 on A100,
  where a streaming kernel needs ~19 GB/s per SM at full HBM bandwidth (2.04 TB/s /
  108 SMs), well below what one SM's load path can sustain, so about half the SMs
  keep HBM busy (the usual observation for streaming kernels on A100; an assumption,
  as no per-share bandwidth measurement is at hand). Why decode still slows at 80-90 %
  (semi-PD's measured curve, normalised to 1 at 100 %: 1.149x at 80 %): the calibrated
  GEMM curve eff(m) = eff_max m/(m+90) puts decode-sized batches near the ridge, so
  their GEMMs lose throughput with every SM removed, while KV reads do not.
  `benchmarks/share_model_check.py` prints the errors against the measured curves
  normalised to 1 at 100 %: at 80-100 % each value tried from 0.3 to 0.7 gives at most
  4.5 % (4.44 %, prefill 4x1024 at 80 %; `tests/test_sim_share_model.py`); with 0.5
  the decode curve is matched within 1.5 % down to a 50 % share and 8.2 % at 30 %.
  Prefill is over-predicted at low shares (+12.3 % at 50 %, +20.7 % at 30 %): only
  70 % of the normalised measured prefill curve scales as 1/share (0.732 / 1.051).
- `measured`: the fixed A100 scaling curves from semi-PD's DynamicPartitioner.replan
  (github.com/infinigence/Semi-PD, branch `distserve_base`,
  distserve/single_stage_engine.py), applied to the step's GPU time at share 1:
  `scale_latency` to the prefill part, `scale_tpot` to the decode part. A mixed step
  is split by the cost model into prefill and decode parts: each phase's attention
  goes to its phase, and the token-proportional ops (linear layers, norms, all-reduce,
  LM head) are split by the phase's fraction of the step's tokens. The per-step CPU
  overhead is not scaled in either model (it is host time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# semi-PD DynamicPartitioner curves, inv = 100 / share_percent = 1 / share.
_TPOT_A, _TPOT_B = 0.6099164272415375, 0.41530605763705736
_LAT_A, _LAT_B = 0.732435017003385, 0.3185253290850649


def scale_tpot(share: float) -> float:
    """semi-PD's measured decode (TPOT) scale factor at `share` (fraction), raw."""
    return _TPOT_A / share + _TPOT_B


def scale_latency(share: float) -> float:
    """semi-PD's measured prefill-compute scale factor at `share` (fraction), raw."""
    return _LAT_A / share + _LAT_B


# The raw curves are 1.025 and 1.051 at share 1 (fits, not exact); we divide by those
# so that a worker at share 1 runs exactly the share-1 cost.
_TPOT_1 = scale_tpot(1.0)
_LAT_1 = scale_latency(1.0)


def decode_slowdown(share: float) -> float:
    return scale_tpot(share) / _TPOT_1


def prefill_slowdown(share: float) -> float:
    return scale_latency(share) / _LAT_1


@dataclass(frozen=True, slots=True)
class RooflineShare:
    """Per-op share model: compute scales with SMs, bandwidth saturates (see module doc)."""

    saturation_share: float | None = None  # None: the hardware's calibrated value
    name: str = "roofline"

    def bandwidth_fraction(self, share: float, saturation_share: float) -> float:
        return min(1.0, share / saturation_share)


@dataclass(frozen=True, slots=True)
class MeasuredShare:
    """semi-PD's measured A100 curves applied per phase to the share-1 step time."""

    name: str = "measured"

    def prefill_slowdown(self, share: float) -> float:
        return prefill_slowdown(share)

    def decode_slowdown(self, share: float) -> float:
        return decode_slowdown(share)


ShareModel = Union[RooflineShare, MeasuredShare]
SHARE_MODELS: dict[str, ShareModel] = {"roofline": RooflineShare(), "measured": MeasuredShare()}


def get_share_model(name_or_model: str | ShareModel) -> ShareModel:
    if not isinstance(name_or_model, str):
        return name_or_model
    try:
        return SHARE_MODELS[name_or_model]
    except KeyError:
        valid = ", ".join(sorted(SHARE_MODELS))
        raise ValueError(f"unknown share model {name_or_model!r}; valid names: {valid}") from None
