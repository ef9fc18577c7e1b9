"""executor.ignore_eos on the real engine: with false a sampled EOS ends the request (the
EOS counts as an output token), requests.csv says why each request finished, the metrics
use the real token counts and every KV block comes back; with true (the default) output
lengths follow the workload. The EOS is forced by pointing the checkpoint's eos_token_id
at a token the greedy random-weight model really emits."""
import json
import logging

import pandas as pd
import pytest

import harness.run as harness_run
from engines.request import Status
from harness.goodput import compose

OUTPUT_LEN = 12
COMMON = ["executor=torch", "model=tiny_llama", "hardware=cpu", "workload=synthetic", "executor.dtype=float32",
          "workload.num_requests=6", "workload.rate=inf", "workload.prompt_len=16",
          f"workload.output_len={OUTPUT_LEN}", "executor.num_threads=2", "check_integrity=true",
          "plots=false", "progress=false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from engines.torch.make_model import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_llama", "tiny_llama", seed=0)


def with_eos(src, dst, eos):
    """`src` with config.json's eos_token_id replaced (weights linked, not copied)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}))
    return dst


def run_capturing_engine(monkeypatch, overrides, run_dir):
    engines = []

    def build(cfg, loop):
        engines.append(real_build(cfg, loop))
        return engines[-1]
    real_build = harness_run.build_engine
    monkeypatch.setattr(harness_run, "build_engine", build)
    return harness_run.run(compose(COMMON + overrides), run_dir), engines[0]


def generated(result):
    return {r.id: r.token_ids[r.prompt_len:] for r in result.requests}


def pick_eos(outputs):
    """A token request 0 emits after its first token that some other request never emits,
    so the run has both early stops and full-length requests."""
    for tok in outputs[0][1:]:
        if tok not in outputs[0][:1] and any(tok not in out for out in outputs.values()):
            return tok
    raise AssertionError(f"no usable EOS candidate in {outputs}")


def test_sampled_eos_ends_requests_only_without_ignore_eos(checkpoint, tmp_path, monkeypatch):
    base, _ = run_capturing_engine(monkeypatch, [f"model.checkpoint={checkpoint}"], tmp_path / "base")
    outputs = generated(base)
    assert all(len(o) == OUTPUT_LEN for o in outputs.values())
    eos = pick_eos(outputs)
    ckpt = with_eos(checkpoint, tmp_path / "ckpt_eos", [128009, eos])  # a list, as Llama-3 instruct
    expect = {rid: min(out.index(eos) + 1 if eos in out else OUTPUT_LEN, OUTPUT_LEN)
              for rid, out in outputs.items()}
    assert min(expect.values()) < OUTPUT_LEN == max(expect.values())

    stop, engine = run_capturing_engine(monkeypatch, [f"model.checkpoint={ckpt}", "executor.ignore_eos=false"],
                                        tmp_path / "stop")
    got = {r.id: r.num_output_tokens for r in stop.requests}
    assert got == expect
    for r in stop.requests:
        assert r.status is Status.FINISHED and r.block_ids == []
        assert r.token_ids[r.prompt_len:] == outputs[r.id][:expect[r.id]]  # the EOS is the last token
        assert r.finish_reason == ("length" if expect[r.id] == OUTPUT_LEN else "stop")
    assert all(pool.num_used_blocks == 0 for pool in engine.pools)  # every block came back
    csv = pd.read_csv(tmp_path / "stop" / "requests.csv", keep_default_na=False)
    assert dict(zip(csv["id"], csv["num_output_tokens"])) == expect
    assert dict(zip(csv["id"], csv["finish_reason"])) == {r.id: r.finish_reason for r in stop.requests}
    assert set(csv["finish_reason"]) == {"stop", "length"}
    assert stop.summary["total_output_tokens"] == sum(expect.values()) and stop.summary["ignore_eos"] is False
    assert stop.summary["itl_s"]["count"] == sum(n - 1 for n in expect.values())

    ignored, _ = run_capturing_engine(monkeypatch, [f"model.checkpoint={ckpt}"], tmp_path / "ignored")
    assert all(r.num_output_tokens == OUTPUT_LEN and r.finish_reason == "length" for r in ignored.requests)
    assert generated(ignored) == outputs


def test_ignore_eos_false_with_the_simulator_says_it_has_no_effect(tmp_path, caplog):
    cfg = compose(["workload=synthetic", "workload.num_requests=5", "workload.prompt_len=16",
                   "workload.output_len=8", "executor.ignore_eos=false", "plots=false", "progress=false"])
    with caplog.at_level(logging.WARNING, logger="harness.run"):
        result = harness_run.run(cfg, tmp_path)
    assert "no effect with executor=sim" in caplog.text
    assert all(r.num_output_tokens == 8 and r.finish_reason == "length" for r in result.requests)
