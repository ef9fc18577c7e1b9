"""vLLM `--save-result` export from a run directory's files: field names, units (ms
aggregates, s per request) and values against hand computation and against requests.csv."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.regress_matrix import compose_config
from engines.request import Request, Status
from harness.run import run
from metrics.export_vllm import from_run_dir, main
from metrics.results import TOKEN_TIMES_FILE, token_times_frame, write_run_dir
from metrics.summary import summarize

# vLLM's --save-result --save-detailed fields (benchmark_serving.py), as the issue lists them.
VLLM_KEYS = ["date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
             "max_concurrency", "duration", "completed", "total_input_tokens", "total_output_tokens",
             "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
             "input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors"]
VLLM_KEYS += [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
              for s in ("mean", "median", "std", "p50", "p90", "p99")]


def finished(id_, arrival_s, prompt_len, times, output_len=None, reason="length"):
    r = Request(id=id_, arrival_s=arrival_s, prompt_len=prompt_len, output_len=output_len or len(times))
    r.token_times_s, r.num_output_tokens, r.status, r.finish_s = list(times), len(times), Status.FINISHED, times[-1]
    r.finish_reason = reason
    return r


@pytest.fixture
def hand_run_dir(tmp_path):
    # Request 1 stopped at an EOS after 2 of its 6 tokens: its real count (2) is what counts.
    requests = [finished(0, 0.0, 10, [0.5, 0.7, 1.0]), finished(1, 0.2, 20, [0.4, 0.9], 6, "stop"),
                Request(id=2, arrival_s=0.3, prompt_len=5000, output_len=4)]
    requests[2].reject("prompt too long", 0.3)
    summary = summarize(requests, slo_ttft_s=0.3, slo_tpot_s=0.6,
                        extra={"engine": "unified", "engine_label": "vLLM-D", "model": "llama3_8b", "total_rate": 3.0})
    return write_run_dir(tmp_path / "run", config_yaml="workload:\n  arrival: poisson\n  tokenizer: null\n",
                         requests=requests, steps=[], summary=summary,
                         extra_csvs={"token_times": token_times_frame(requests)})


def test_export_has_vllms_keys_and_units(hand_run_dir):
    r = from_run_dir(hand_run_dir)
    assert [k for k in VLLM_KEYS if k not in r] == []
    json.dumps(r, allow_nan=False)  # plain JSON, as vLLM writes
    assert (r["backend"], r["model_id"], r["num_prompts"], r["request_rate"], r["burstiness"]) == \
        ("unified", "llama3_8b", 3, 3.0, 1.0)
    assert len(r["date"]) == len("20250101-120000") and r["date"][8] == "-"
    # Per request, seconds; a failed request has ttft 0, no ITLs, 0 output tokens, an error.
    assert r["input_lens"] == [10, 20, 5000] and r["output_lens"] == [3, 2, 0]
    assert r["ttfts"] == pytest.approx([0.5, 0.2, 0.0])
    assert [len(i) for i in r["itls"]] == [2, 1, 0]
    assert r["itls"][0] == pytest.approx([0.2, 0.3]) and r["itls"][1] == pytest.approx([0.5])
    assert r["errors"] == ["", "", "prompt too long"] and r["generated_texts"] == ["", "", ""]
    assert (r["completed"], r["failed"], r["total_input_tokens"], r["total_output_tokens"]) == (2, 1, 30, 5)


def test_export_values_match_hand_computation(hand_run_dir):
    r = from_run_dir(hand_run_dir)
    # duration = first arrival (0) -> last finish (1.0 s)
    assert r["duration"] == pytest.approx(1.0)
    assert (r["request_throughput"], r["output_throughput"], r["total_token_throughput"]) == pytest.approx((2, 5, 35))
    # Only request 1 meets TTFT <= 0.3 s and TPOT <= 0.6 s: 1 request / 1 s.
    assert r["request_goodput"] == pytest.approx(1.0)
    # TTFT over completed: [0.5, 0.2] s -> ms; linear interpolation p90 = 0.2 + 0.9 * 0.3.
    assert (r["mean_ttft_ms"], r["median_ttft_ms"], r["std_ttft_ms"]) == pytest.approx((350, 350, 150))
    assert (r["p90_ttft_ms"], r["p99_ttft_ms"]) == pytest.approx((470, 497))
    # TPOT = (e2e - ttft) / (n - 1) with the real n: (1.0 - 0.5) / 2 = 0.25, (0.7 - 0.2) / 1 = 0.5
    assert (r["mean_tpot_ms"], r["p50_tpot_ms"]) == pytest.approx((375, 375))
    # ITL: all gaps of completed requests [0.2, 0.3, 0.5]; population std.
    std = math.sqrt(sum((x - 1 / 3) ** 2 for x in (0.2, 0.3, 0.5)) / 3)
    assert (r["mean_itl_ms"], r["median_itl_ms"], r["std_itl_ms"]) == pytest.approx((1000 / 3, 300, std * 1e3))
    assert r["p99_itl_ms"] == pytest.approx(496)  # 0.3 + 0.98 * (0.5 - 0.3)
    assert (r["mean_e2el_ms"], r["p50_e2el_ms"]) == pytest.approx((850, 850))


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "semipd"
    cfg, yaml_text = compose_config(["engine=semipd", "workload.num_requests=80", "workload.rate=15",
                                     "plots=false", "progress=false", "save_token_times=true"])
    return run(cfg, run_dir, config_yaml=yaml_text)


def test_run_dir_export_matches_requests_csv_and_summary(sim_run):
    r, summary = from_run_dir(sim_run.run_dir), sim_run.summary
    req = pd.read_csv(sim_run.run_dir / "requests.csv", keep_default_na=False)
    ok = (req["status"] == "finished").to_numpy()
    assert r["num_prompts"] == len(r["itls"]) == len(req) == 80
    assert r["completed"] == int(ok.sum()) == summary["num_finished"]
    assert r["input_lens"] == req["prompt_len"].tolist()
    assert r["output_lens"] == np.where(ok, req["num_output_tokens"], 0).tolist()
    assert r["ttfts"] == pytest.approx(np.where(ok, req["ttft_s"], 0.0).tolist(), abs=1e-12)  # seconds
    assert r["latencies"] == pytest.approx(np.where(ok, req["e2e_s"], 0.0).tolist(), abs=1e-12)
    # each request's ITLs: one fewer than its tokens, summing to e2e - ttft (the 1 us CSV resolution)
    for itls, n_out, ttft, e2e in zip(r["itls"], r["output_lens"], r["ttfts"], r["latencies"]):
        assert len(itls) == max(n_out - 1, 0) and sum(itls) == pytest.approx(e2e - ttft, abs=2e-6)
    assert sum(map(len, r["itls"])) == summary["itl_s"]["count"]
    for vllm, ours in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("itl", "itl_s"), ("e2el", "e2e_s")):
        for stat in ("mean", "p99"):  # ms, from files written at 1 us resolution
            assert r[f"{stat}_{vllm}_ms"] == pytest.approx(summary[ours][stat] * 1e3, abs=2e-3)


def test_run_result_holds_every_request_and_the_files_agree(sim_run):
    assert [r.id for r in sim_run.requests] == list(range(80))
    times = pd.read_csv(sim_run.run_dir / TOKEN_TIMES_FILE, keep_default_na=False, dtype={"token_times_s": str})
    for rid, text in zip(times["id"], times["token_times_s"]):
        assert [float(t) for t in text.split()] == pytest.approx(sim_run.token_times_s[rid], abs=1e-6)
    assert len(sim_run.steps) == len(pd.read_csv(sim_run.run_dir / "steps.csv"))


def copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_or_inconsistent_token_times_stop_the_export(sim_run, tmp_path, capsys):
    no_times = copy_dir(sim_run.run_dir, tmp_path / "no_times")
    (no_times / TOKEN_TIMES_FILE).unlink()
    assert main([str(no_times)]) == 2
    assert f"no {TOKEN_TIMES_FILE}" in capsys.readouterr().err
    bad = copy_dir(sim_run.run_dir, tmp_path / "bad")
    lines = (bad / TOKEN_TIMES_FILE).read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0]  # drop request 0's last token time
    (bad / TOKEN_TIMES_FILE).write_text("\n".join(lines) + "\n")
    assert main([str(bad)]) == 2
    assert "does not match requests.csv" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_cli_writes_the_json(sim_run, tmp_path, capsys):
    out = tmp_path / "vllm.json"
    assert main([str(sim_run.run_dir), "--out", str(out), "--percentiles", "50,99.9"]) == 0
    result = json.loads(out.read_text())
    assert "p99.9_ttft_ms" in result and "p99_ttft_ms" not in result and result["backend"] == "semipd"
    with pytest.raises(SystemExit):
        main([str(sim_run.run_dir), "--percentiles", "50,abc"])
    assert "expected comma-separated numbers" in capsys.readouterr().err
