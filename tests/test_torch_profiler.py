"""The step profiler (engines/torch/profiler.py): its grid, its plans, its arguments, and
one small real run whose CSV the profiled cost model reads."""
import pytest

from engines.torch import profiler
from engines.torch.profiler import Shape, grid, plan_for


def test_grid_keeps_the_shapes_that_fit_the_context():
    assert all(s.max_tokens_per_seq() <= 600 for s in grid(600))
    full = grid(2048)
    assert {s.kind for s in full} == {"prefill", "decode", "mixed"}
    decode_batches = {s.decode_seqs for s in full if s.kind == "decode"}
    prefill_at_zero = {s.prefill_tokens for s in full if s.kind == "prefill" and s.prefill_context == 0}
    assert decode_batches <= prefill_at_zero  # so per-token and per-sample costs separate


def test_plans_use_fresh_blocks_and_sample_only_the_decodes():
    plan, blocks = plan_for(Shape("mixed", 40, 20, 3, 15))
    assert plan.num_prefill_tokens == 40 and plan.num_decode_tokens == 3 and plan.batch_size == 4
    ids = [b for s in plan.seqs for b in s.block_ids]
    assert len(ids) == len(set(ids)) == blocks == 3 * 1 + 4  # 16 tokens per block
    assert [s.samples for s in plan.seqs] == [True, True, True, False]
    prefill = plan.seqs[-1]
    assert (prefill.num_context_tokens, prefill.num_new_tokens, len(prefill.token_ids)) == (20, 40, 40)


@pytest.mark.parametrize("args,message", [
    (["model"], "bad argument 'model'"),
    (["colour=red"], "bad argument 'colour=red'"),
    (["threads=0"], "threads=0"),
    (["threads=two"], "threads=two"),
    (["hardware=a100_80g"], "Vidur's profiler"),
    (["omp_wait=lazy"], "omp_wait=lazy"),
])
def test_bad_arguments_exit_2_with_a_reason(capsys, args, message):
    assert profiler.main(args) == 2
    assert message in capsys.readouterr().err


def test_a_small_profile_is_read_by_the_profiled_cost_model(tmp_path, monkeypatch):
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    for name, value in (("PREFILL_TOKENS", (1, 4)), ("PREFILL_CONTEXTS", (0, 32)), ("PREFILL_CONTEXT_TOKENS", (4,)),
                        ("DECODE_BATCHES", (1, 4)), ("DECODE_CONTEXTS", (20,)), ("MIXED", ((2, 20, 4, 0),))):
        monkeypatch.setattr(profiler, name, value)
    lines = []
    out = profiler.run(model="tiny_llama", threads="1", repeats=1, rounds=2, out=str(tmp_path / "p.csv"),
                       checkpoint=str(tmp_path / "tiny_llama"), omp_wait="active", log=lines.append)
    text = out.read_text()
    for field in ("# format: semipd-bench-profile/1", "# model: tiny_llama", "# hardware: cpu", "# machine:",
                  "# versions:", "# executor: torch runtime=processes", "# rounds: 2"):
        assert field in text
    # Two rounds, each over the whole grid in its own order; a row pools both rounds' steps.
    orders = [[line.split("] ", 1)[1][:40] for line in lines if f"round {r}/2" in line] for r in (1, 2)]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1] and len(orders[0]) == 6
    model = ProfiledCostModel(out, get_model("tiny_llama"), get_hardware("cpu"))
    report = model.fit_report()
    assert len(report) == 2 + 1 + 2 + 1 and set(model.fits) == {1}
    assert (report["median_s"] > 0).all() and (report["predicted_s"] > 0).all()
    assert (report["repeats"] == 2).all()


def test_a_small_contention_run_is_read_by_the_check(tmp_path, monkeypatch):
    import os
    from sim.contention_check import check
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the contention check needs 2 cores")
    monkeypatch.setattr(profiler, "CONCURRENT_PAIRS", ((512, 1, 16),))
    for name, value in (("PREFILL_TOKENS", (1, 4)), ("PREFILL_CONTEXTS", (0,)), ("DECODE_BATCHES", (1, 4)),
                        ("DECODE_CONTEXTS", (16,)), ("MIXED", ())):
        monkeypatch.setattr(profiler, name, value)
    ckpt = str(tmp_path / "tiny_llama")
    cont = profiler.run_contention(model="tiny_llama", repeats=1, out=str(tmp_path / "c.csv"), checkpoint=ckpt,
                                   log=lambda *_: None)
    prof = profiler.run(model="tiny_llama", threads="2,1", repeats=1, out=str(tmp_path / "p.csv"), checkpoint=ckpt,
                        log=lambda *_: None)
    table = check(str(prof), str(cont), "tiny_llama", "cpu")
    assert list(table["layout"]) == ["overlap (100, 100)", "disjoint (50, 50)"]
    assert (table[["prefill measured", "decode measured", "prefill resources", "decode proportional"]] > 0).all().all()
    # the `measured` contention model reads the same file
    from semipd.measured_contention import read
    factors = read(cont).factors
    assert set(factors) == {"overlap", "disjoint"} and all(f > 0 for pair in factors.values() for f in pair)
