"""The real-engine regression run: it measures, and the gate judges its ratios."""
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch_regress  # noqa: E402
from metrics.compare import RunEntry, RunKey, compare, flatten_metrics  # noqa: E402
from metrics.compare import DEFAULT_RULES  # noqa: E402


@pytest.fixture(scope="module")
def measured():
    return {**torch_regress.KEY, **torch_regress.measure(repeats=1)}


def entry(summary):
    return RunEntry(RunKey.of(summary, "test"), flatten_metrics(summary), "test", rules=DEFAULT_RULES["torch"])


def test_measurement_gives_positive_ratios(measured):
    for key in ("decode_step_ratio", "prefill_step_ratio", "throughput_ratio", "reference_dense_s"):
        assert measured[key] > 0
    # decode steps compute at least the dense GEMMs the reference times, plus attention etc.
    assert measured["decode_step_ratio"] > 0.5


def test_a_30_percent_slower_engine_fails_the_gate_and_names_the_metric(measured):
    slowed = dict(measured)
    slowed["decode_step_s"] *= 1.3
    slowed["decode_step_ratio"] *= 1.3
    slowed["throughput_ratio"] /= 1.3
    rows = {r.metric: r.verdict for r in compare([entry(slowed)], [entry(measured)])}
    assert rows["decode_step_ratio"] == "slower" and rows["throughput_ratio"] == "slower"
    assert rows["prefill_step_ratio"] == "ok" and rows["decode_step_s"] == "info"


def test_noise_below_the_threshold_passes(measured):
    noisy = dict(measured, decode_step_ratio=measured["decode_step_ratio"] * 1.1,
                 throughput_ratio=measured["throughput_ratio"] * 0.9)
    assert {r.verdict for r in compare([entry(noisy)], [entry(measured)])} <= {"ok", "info"}


def test_the_planted_slowdown_really_slows_the_steps():
    class Fixed:
        model = kv_cache = None

        def execute(self, plan, share=1.0):
            from engines.plan import StepResult
            return StepResult(0.05, (1,))

    slowed = torch_regress._Slowed(Fixed(), 0.3)
    t0 = time.perf_counter()
    result = slowed.execute(None)
    assert time.perf_counter() - t0 >= 0.015 - 1e-3  # slept 30 % of the step
    assert result.duration_s == pytest.approx(0.065) and result.sampled_token_ids == (1,)
