"""benchmarks/fidelity_gate.py: limits per design and metric, bad limit files, the committed
settings, and one small gate whose planted simulator error fails it."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fidelity_gate as gate  # noqa: E402


def _table(err: float) -> pd.DataFrame:
    row = {f"err.{m}": 0.0 for m in gate.CHECKED}
    return pd.DataFrame([{"design": "a", **row}, {"design": "b", **row, "err.tpot_s.mean": err}])


def test_a_metric_past_its_design_limit_fails_and_only_it():
    limits = {"a": {m: 0.1 for m in gate.CHECKED}, "b": {m: 0.3 for m in gate.CHECKED}}
    assert (gate.verdicts(_table(-0.25), limits)["verdict"] == "ok").all()  # within b's 30 %
    v = gate.verdicts(_table(-0.35), limits)
    assert v.loc[v["verdict"] == "FAIL", ["design", "metric"]].values.tolist() == [["b", "tpot_s.mean"]]


def test_the_committed_limits_cover_every_design_and_metric():
    cfg = json.loads(gate.LIMITS.read_text())
    assert set(cfg["limits"]) == set(cfg["designs"])
    for design in cfg["designs"]:
        for metric in gate.CHECKED:
            # 1.5x the worst |error| seen, rounded up to 5 % (README, "Fidelity gate").
            worst = cfg["aa_worst_abs_error"][design][metric]
            assert cfg["limits"][design][metric] == pytest.approx(math.ceil(1.5 * worst / 0.05 - 1e-9) * 0.05)
    # The gate simulates as the fidelity report does: with the run factors of its profile rounds.
    args = gate.gate_args(cfg, "out")
    assert args[args.index("--run-calibration") + 1] == "1"


@pytest.mark.parametrize("errors,code,gates", [
    ((-0.35, -0.9), 0, 1),       # a passing gate is not re-run (its second value is never used)
    ((-0.45, -0.05), 0, 2),      # failed, then passed when re-run: a slow patch of the machine
    ((-0.45, -0.41), 1, 2),      # failed twice: the change fails
])
def test_a_failing_gate_is_confirmed_by_a_second_one(tmp_path, monkeypatch, capsys, errors, code, gates):
    cfg = {"designs": ["a", "b"], "limits": {d: {m: 0.4 for m in gate.CHECKED} for d in "ab"}}
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps(cfg))
    seen = []

    def fake_gate(cfg, out, sim_scale=1.0):
        seen.append(out)
        return _table(errors[len(seen) - 1])

    monkeypatch.setattr(gate, "one_gate", fake_gate)
    assert gate.main(["--limits", str(limits), "--out", str(tmp_path / "out")]) == code
    assert len(seen) == gates and f"after {gates} gate(s)" in capsys.readouterr().out
    assert (seen[-1] / "verdicts.csv").is_file()


@pytest.mark.parametrize("text,message", [
    ("{", "expected JSON"),
    ('{"designs": ["unified"], "limits": {"unified": {"ttft_s.mean": 0.1}}}', "tpot_s.mean"),
])
def test_a_bad_limits_file_exits_2(tmp_path, capsys, text, message):
    path = tmp_path / "limits.json"
    path.write_text(text)
    assert gate.main(["--limits", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_a_planted_simulator_error_fails_the_gate(tmp_path, monkeypatch, capsys):
    from engines.torch import profiler
    from harness import fidelity
    for name, value in (("PREFILL_TOKENS", (1, 2, 4, 8, 16, 64, 256, 1024)), ("PREFILL_CONTEXTS", (0, 256)),
                        ("PREFILL_CONTEXT_TOKENS", (16, 256)), ("DECODE_BATCHES", (1, 2, 4, 8)),
                        ("DECODE_CONTEXTS", (64, 512)), ("MIXED", ()), ("WARM_UP_STEPS", 1)):
        monkeypatch.setattr(profiler, name, value)
    monkeypatch.setattr(fidelity, "KV_CACHE_BYTES", 64 << 20)
    cfg = {"model": "tiny_llama", "dtype": "float32", "designs": ["unified_chunked"], "rate": 8, "num_requests": 4,
           "slo": "default", "real_repeats": 1, "profile_repeats": 1, "checkpoint": str(tmp_path / "ckpt"),
           "limits": {"unified_chunked": {m: 0.5 for m in gate.CHECKED}}}
    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps(cfg))
    # Every simulated step 100x shorter: far past any limit.
    monkeypatch.setenv("FIDELITY_GATE_PLANT_SIM_SCALE", "0.01")
    out = tmp_path / "gate"
    assert gate.main(["--limits", str(limits), "--out", str(out), "--confirm", "0"]) == 1
    assert "fidelity gate: FAIL after 1 gate(s)" in capsys.readouterr().out
    v = pd.read_csv(out / "verdicts.csv")
    assert len(v) == len(gate.CHECKED) and v.loc[v["metric"] == "tpot_s.mean", "error"].iloc[0] < -0.9
