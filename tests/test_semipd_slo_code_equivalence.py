"""`slo_code` against a line-by-line transcription of the original DynamicPartitioner
(tests/reference_dynamic_partitioner.py): the same randomized windows must give identical
decisions - which side is re-planned and to which share - and identical window bookkeeping."""
import numpy as np
import pytest

from engines.config import SemiPDConfig
from semipd.controller import SLO, Decision, SloCodeController
from semipd.window import TtftSample, WindowCollector, ttft_index
from tests.reference_dynamic_partitioner import DynamicPartitioner, SwitchSemaphore

TTFT_SLO_S, TPOT_SLO_S = 0.3, 0.15
SHARES = [80.0, 81.0, 82.0, 84.0, 86.0, 88.0, 90.0, 92.5, 94.0, 96.0, 98.0, 99.0, 100.0]


def _window(rng: np.random.Generator) -> tuple[list[float], list[tuple[float, float, float]]]:
    """TPOT and (ttft, latency, waiting) samples around the SLOs, with ties and extremes."""
    n_tpot = int(rng.choice([400, 401, 455]))
    tpot = TPOT_SLO_S * rng.uniform(0.4, 1.4) * rng.lognormal(0.0, 0.25, n_tpot)
    n_ttft = int(rng.choice([0, 11, 12, 57, 399, 400, 431]))
    latency = TTFT_SLO_S * rng.uniform(0.05, 0.8) * rng.lognormal(0.0, 0.5, n_ttft)
    waiting = TTFT_SLO_S * rng.uniform(0.0, 1.2) * rng.exponential(1.0, n_ttft)
    if rng.random() < 0.2:  # coarse values: many equal TTFTs, the stable sort decides
        latency, waiting = np.round(latency, 2), np.round(waiting, 2)
    if rng.random() < 0.05:  # extreme but finite
        tpot = tpot * rng.choice([1e-6, 1e4])
        latency = latency * rng.choice([1e-6, 1e4])
    ttft = [(float(w + l), float(l), float(w)) for w, l in zip(waiting, latency)]
    return [float(t) for t in tpot], ttft


def _ours(cfg: SemiPDConfig, x: float, y: float, tpot, ttft) -> Decision:
    win = WindowCollector(cfg.window_requests, cfg.percentile)
    for t, lat, wait in ttft:
        win.add_ttft(TtftSample(t, lat, wait, 0.0), prefill_switching=False)
    for t in tpot:
        win.add_tpot(t, prefill_switching=False)
    stats = win.take(switching=False)
    return SloCodeController(cfg, SLO(TTFT_SLO_S, TPOT_SLO_S)).decide(stats, x, y)


def _reference(x: float, y: float, tpot, ttft) -> Decision:
    ref = DynamicPartitioner([], [], x, y, TTFT_SLO_S, TPOT_SLO_S)
    ref.update_prefill_status(SwitchSemaphore.REJECT)
    for sample in ttft:
        ref.update_prefill_info(sample)
    for t in tpot:
        ref.update_decode_info(t)
    if not ref.replan():
        return Decision(x, y)
    return Decision(ref.prefill_future_sm_percentile if ref.do_prefill_replan else x,
                    ref.decode_future_sm_percentile if ref.do_decode_replan else y,
                    ref.do_prefill_replan, ref.do_decode_replan)


def test_identical_decisions_on_2000_random_windows():
    rng = np.random.default_rng(20250419)
    cfg = SemiPDConfig()
    seen = {"keep": 0, "reset": 0, "raise_x": 0, "raise_y": 0, "lower_x": 0, "lower_y": 0, "same_share": 0}
    for i in range(2000):
        x, y = float(rng.choice(SHARES)), float(rng.choice(SHARES))
        if i % 10 == 0:
            x = y = 100.0
        tpot, ttft = _window(rng)
        ref, ours = _reference(x, y, tpot, ttft), _ours(cfg, x, y, tpot, ttft)
        assert ours == ref, f"window {i}: shares ({x}, {y}); original {ref}, ours {ours}"
        if not (ref.restart_prefill or ref.restart_decode):
            seen["keep"] += 1
        elif ref.restart_prefill and ref.restart_decode:
            seen["reset"] += 1
        else:
            side, old, new = ("x", x, ref.x_pct) if ref.restart_prefill else ("y", y, ref.y_pct)
            seen[("raise_" if new > old else "lower_") + side] += new != old
            seen["same_share"] += new == old
    # every branch of the original was exercised, so agreement is not vacuous
    assert min(seen.values()) >= 5, seen


@pytest.mark.parametrize("n", [11, 12, 57, 400])
def test_ttft_index_is_the_originals(n):
    assert ttft_index(n, 90.0) == int(n * 0.9 / 1 + 1)


def test_short_ttft_windows_clamp_where_the_original_fails():
    """Ours: with <= 10 TTFT samples the original's index is past the end (IndexError)."""
    assert ttft_index(10, 90.0) == 9 and int(10 * 0.9 + 1) == 10
    tpot, ttft = [0.1] * 400, [(0.1, 0.05, 0.05)] * 10
    with pytest.raises(IndexError):
        _reference(100.0, 100.0, tpot, ttft)
    assert _ours(SemiPDConfig(), 100.0, 100.0, tpot, ttft) == Decision(100.0, 100.0)


def test_identical_window_bookkeeping_over_a_stream_with_switches():
    """Samples arrive one by one; a decision's switch stays in flight for a random number of
    events. Both sides must drop samples during a prefill-side switch (not a decode-only
    one), refuse to re-plan while any switch runs, and decide identically."""
    rng = np.random.default_rng(7)
    cfg = SemiPDConfig()
    ref = DynamicPartitioner([], [], 100.0, 100.0, TTFT_SLO_S, TPOT_SLO_S)
    ref.update_prefill_status(SwitchSemaphore.REJECT)
    win, ctl = WindowCollector(cfg.window_requests, cfg.percentile), SloCodeController(cfg, SLO(TTFT_SLO_S, TPOT_SLO_S))
    x = y = 100.0
    pending: Decision | None = None
    events_left = 0
    num_decisions = num_dropped = 0
    ttft_level = tpot_level = 1.0
    for step in range(120_000):
        if step % 2000 == 0:  # the two latencies drift independently, so every branch comes up
            ttft_level, tpot_level = rng.uniform(0.6, 1.4, 2)
        prefill_switching = pending is not None and pending.restart_prefill
        if rng.random() < 0.5:
            lat = TTFT_SLO_S * 0.3 * ttft_level * rng.lognormal(0, 0.3)
            wait = TTFT_SLO_S * 0.25 * ttft_level * rng.exponential()
            ref.update_prefill_info((wait + lat, lat, wait))
            win.add_ttft(TtftSample(wait + lat, lat, wait, 0.0), prefill_switching)
        else:
            t = TPOT_SLO_S * 0.7 * tpot_level * rng.lognormal(0, 0.2)
            ref.update_decode_info(t)
            win.add_tpot(t, prefill_switching)
        num_dropped += prefill_switching
        assert (len(ref.tpot_window), len(ref.ttft_window)) == (len(win.tpot_s), len(win.ttft))
        replanned = ref.replan()
        stats = win.take(switching=pending is not None)
        assert (stats is not None) == (replanned is not False), f"event {step}"
        if stats is not None:
            ours = ctl.decide(stats, x, y)
            expect = Decision(ref.prefill_future_sm_percentile if ref.do_prefill_replan else x,
                              ref.decode_future_sm_percentile if ref.do_decode_replan else y,
                              ref.do_prefill_replan, ref.do_decode_replan) if replanned else Decision(x, y)
            assert ours == expect, f"event {step}: ({x}, {y})"
            num_decisions += 1
            if ours.restart_prefill or ours.restart_decode:
                pending, events_left = ours, int(rng.integers(1, 300))
        elif pending is not None:
            events_left -= 1
            if events_left == 0:
                ref.finish_switch(pending.restart_prefill, pending.restart_decode)
                x, y = pending.shares
                pending = None
    assert num_decisions >= 100 and num_dropped > 0
