"""vLLM `--save-result` export: field names, units (ms aggregates, s per request) and values
against hand computation; the run-directory paths (token_times.csv, replay)."""
import json
import math

import pytest

from benchmarks.regress_matrix import compose_config
from engines.request import Request, Status
from harness.run import run
from metrics.export_vllm import (TOKEN_TIMES_FILE, from_requests, from_run_dir, main, replay_requests,
                                 token_times_frame, _load_config)
from metrics.results import frame_to_csv
from metrics.summary import summarize

# vLLM's --save-result --save-detailed fields (benchmark_serving.py), as the issue lists them.
VLLM_KEYS = ["date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
             "max_concurrency", "duration", "completed", "total_input_tokens", "total_output_tokens",
             "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
             "input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors"]
VLLM_KEYS += [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
              for s in ("mean", "median", "std", "p50", "p90", "p99")]


def finished(id_, arrival_s, prompt_len, times):
    r = Request(id=id_, arrival_s=arrival_s, prompt_len=prompt_len, output_len=len(times))
    r.token_times_s, r.num_output_tokens, r.status, r.finish_s = list(times), len(times), Status.FINISHED, times[-1]
    return r


@pytest.fixture
def hand_result():
    requests = [finished(0, 0.0, 10, [0.5, 0.7, 1.0]), finished(1, 0.2, 20, [0.4, 0.9]),
                Request(id=2, arrival_s=0.3, prompt_len=5000, output_len=4)]
    requests[2].reject("prompt too long", 0.3)
    summary = summarize(requests, slo_ttft_s=0.3, slo_tpot_s=0.6,
                        extra={"engine": "unified", "engine_label": "vLLM-D", "model": "llama3_8b", "total_rate": 3.0})
    return from_requests(summary, requests, {"arrival": "poisson", "tokenizer": None})


def test_export_has_vllms_keys_and_units(hand_result):
    r = hand_result
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


def test_export_values_match_hand_computation(hand_result):
    r = hand_result
    # duration = first arrival (0) -> last finish (1.0 s)
    assert r["duration"] == pytest.approx(1.0)
    assert (r["request_throughput"], r["output_throughput"], r["total_token_throughput"]) == pytest.approx((2, 5, 35))
    # Only request 1 meets TTFT <= 0.3 s and TPOT <= 0.6 s: 1 request / 1 s.
    assert r["request_goodput"] == pytest.approx(1.0)
    # TTFT over completed: [0.5, 0.2] s -> ms; linear interpolation p90 = 0.2 + 0.9 * 0.3.
    assert (r["mean_ttft_ms"], r["median_ttft_ms"], r["std_ttft_ms"]) == pytest.approx((350, 350, 150))
    assert (r["p90_ttft_ms"], r["p99_ttft_ms"]) == pytest.approx((470, 497))
    # TPOT = (e2e - ttft) / (n - 1): (1.0 - 0.5) / 2 = 0.25, (0.7 - 0.2) / 1 = 0.5
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
                                     "plots=false", "progress=false"])
    return run_dir, run(cfg, run_dir, config_yaml=yaml_text)


def test_run_dir_export_replays_the_simulation_for_itls(sim_run):
    run_dir, summary = sim_run
    r = from_run_dir(run_dir)
    assert r["num_prompts"] == r["completed"] == 80 == len(r["itls"])
    assert sum(map(len, r["itls"])) == summary["itl_s"]["count"]
    for vllm, ours in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("itl", "itl_s"), ("e2el", "e2e_s")):
        assert r[f"mean_{vllm}_ms"] == pytest.approx(summary[ours]["mean"] * 1e3, rel=1e-9)
        assert r[f"p99_{vllm}_ms"] == pytest.approx(summary[ours]["p99"] * 1e3, rel=1e-9)
    assert sum(r["ttfts"]) / 80 == pytest.approx(summary["ttft_s"]["mean"], rel=1e-9)  # seconds


def test_token_times_file_is_used_when_present(sim_run, tmp_path):
    run_dir, _ = sim_run
    replayed = replay_requests(run_dir, _load_config(run_dir))
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / TOKEN_TIMES_FILE).write_text(frame_to_csv(token_times_frame(replayed)))
    (copy / "config.yaml").write_text("executor: {name: torch}\n")  # a replay would now fail
    a, b = from_run_dir(run_dir), from_run_dir(copy)
    assert [len(i) for i in a["itls"]] == [len(i) for i in b["itls"]]
    assert b["mean_itl_ms"] == pytest.approx(a["mean_itl_ms"], rel=1e-6)


def test_replay_that_does_not_reproduce_the_run_stops_the_export(sim_run, tmp_path, capsys):
    run_dir, _ = sim_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace("rate: 15.0", "rate: 16.0"))
    assert main([str(copy)]) == 2
    assert "does not reproduce" in capsys.readouterr().err


def test_cli_writes_the_json(sim_run, tmp_path, capsys):
    run_dir, _ = sim_run
    out = tmp_path / "vllm.json"
    assert main([str(run_dir), "--out", str(out), "--percentiles", "50,99.9"]) == 0
    result = json.loads(out.read_text())
    assert "p99.9_ttft_ms" in result and "p99_ttft_ms" not in result and result["backend"] == "semipd"
