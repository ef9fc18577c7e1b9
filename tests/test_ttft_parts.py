"""benchmarks/ttft_parts.py: each request's TTFT split into the wait before the step that
made its first token and that step, matched on the step's end."""
import pandas as pd
import pytest

from benchmarks import ttft_parts

STEP_COLUMNS = ["worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens", "batch_size", "share",
                "prefill_context_tokens", "decode_context_tokens", "num_samples"]


def write_run(d, steps, requests):
    d.mkdir(parents=True)
    pd.DataFrame(steps, columns=STEP_COLUMNS).to_csv(d / "steps.csv", index=False)
    pd.DataFrame(requests, columns=["arrival_s", "first_token_s", "ttft_s"]).to_csv(d / "requests.csv", index=False)


def test_ttft_is_the_wait_plus_the_first_token_step(tmp_path, capsys):
    # Two prompts: one waits 0.02 s for a decode step, then a 0.1 s prefill; the other is
    # chunked (0.05 s chunk, then a 0.04 s last chunk that makes its first token).
    steps = [("mixed0", 0.00, 0.02, 0, 4, 4, 1, 0, 400, 4),
             ("mixed0", 0.02, 0.10, 300, 0, 1, 1, 0, 0, 1),
             ("mixed0", 0.12, 0.05, 512, 0, 1, 1, 0, 0, 0),
             ("mixed0", 0.17, 0.04, 100, 2, 3, 1, 512, 800, 3)]
    write_run(tmp_path / "runs" / "unified_r1_real0", steps,
              [(0.0, 0.12, 0.12), (0.12, 0.21, 0.09)])
    # The simulated run: every prefill step 20 % shorter, so the steps start earlier (the
    # second prompt arrives at 0.10 s; its wait, 0.04 s, is its first chunk).
    sim = [("mixed0", 0.00, 0.020, 0, 4, 4, 1, 0, 400, 4),
           ("mixed0", 0.02, 0.080, 300, 0, 1, 1, 0, 0, 1),
           ("mixed0", 0.10, 0.040, 512, 0, 1, 1, 0, 0, 0),
           ("mixed0", 0.14, 0.032, 100, 2, 3, 1, 512, 800, 3)]
    write_run(tmp_path / "runs" / "unified_r1_sim", sim, [(0.0, 0.10, 0.10), (0.10, 0.172, 0.072)])
    real = ttft_parts.parts(tmp_path / "runs" / "unified_r1_real0")
    assert real["matched"] == real["requests"] == 2
    assert real["ttft_ms"] == pytest.approx(105.0)
    assert real["wait_ms"] == pytest.approx((20 + 50) / 2)  # the second waited for its first chunk
    assert real["step_ms"] == pytest.approx((100 + 40) / 2)
    assert ttft_parts.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # Simulated: TTFT (100 + 72) / 2 = 86 ms, wait (20 + 40) / 2 = 30, step (80 + 32) / 2 = 56.
    assert "unified          1 req/s: TTFT -18.1, wait -14.3, first-token step -20.0" in out
    assert (tmp_path / "ttft_parts.csv").is_file()


def test_no_runs_exit_2(tmp_path, capsys):
    assert ttft_parts.main([str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err
