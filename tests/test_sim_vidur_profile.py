"""The Vidur-profile cost model (sim/vidur_profile.py) on the synthetic llama3_8b fixture
in tests/data/vidur_profile (real Vidur columns, numbers from its make_fixture.py):
expected times are computed here from the CSV rows, independently of the model's code."""
import json
import logging
import lzma
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engines.errors import ConfigError
from engines.plan import ScheduledSeq, StepPlan
from sim.cost_model import ring_all_reduce_s
from sim.vidur_profile import LAYER_OPS, VidurProfileCostModel
from sim.specs import get_hardware, get_model

FIXTURE = Path(__file__).parent / "data" / "vidur_profile"
MODEL, HW = get_model("llama3_8b"), get_hardware("a100_80g")
L = MODEL.num_layers


def step(prefills=(), decodes=(), sample_prefill=False):
    """prefills: (new tokens, context) chunks; decodes: contexts of one-token decodes."""
    seqs = [ScheduledSeq(i, ctx, 1, True, False, ()) for i, ctx in enumerate(decodes)]
    for n, ctx in prefills:
        seqs.append(ScheduledSeq(len(seqs), ctx, n, sample_prefill, True, ()))
    return StepPlan("t", tuple(seqs), sum(n for n, _ in prefills), len(decodes))


# ----- expectations read straight from the fixture's rows -----------------------------------
def mlp_layer_s(tp=1):
    """(num_tokens, per-layer seconds): the sum of the ops' medians, repeated rows averaged."""
    rows = pd.read_csv(FIXTURE / "mlp.csv")
    rows = rows[rows.num_tensor_parallel_workers == tp]
    total = sum(rows[f"time_stats.{op}.median"] for op in LAYER_OPS) * 1e-3
    g = total.groupby(rows.num_tokens).mean()
    return g.index.to_numpy(float), g.to_numpy()


def attention_rows(tp=1):
    rows = pd.read_csv(FIXTURE / "attention.csv")
    return rows[rows.num_tensor_parallel_workers == tp]


def kv_save_s(m, tp=1):
    rows = attention_rows(tp)
    tokens = rows[["prefill_chunk_size", "batch_size"]].max(axis=1)
    g = (rows["time_stats.attn_kv_cache_save.median"] * 1e-3).groupby(tokens).mean()
    return float(np.interp(m, g.index.to_numpy(float), g.to_numpy()))


def grid_s(first, value, kv, column, tp=1):
    """Bilinear in (first variable, kv_cache_size) from the rows, inside the grid."""
    rows = attention_rows(tp)
    rows = rows[rows.prefill_chunk_size > 0] if first == "prefill_chunk_size" else rows[rows.prefill_chunk_size == 0]
    keys = sorted(rows[first].unique())

    def along_kv(a):
        r = rows[rows[first] == a].sort_values("kv_cache_size")
        return float(np.interp(kv, r.kv_cache_size, r[column] * 1e-3))
    lo = max(k for k in keys if k <= value)
    hi = min(k for k in keys if k >= value)
    if lo == hi:
        return along_kv(lo)
    w = (value - lo) / (hi - lo)
    return (1 - w) * along_kv(lo) + w * along_kv(hi)


def outside_s(model, m, samples=0):
    rl, r = model.roofline, model.roofline._rates(1.0, 1.0)
    return rl.step_overhead_s + rl._embed_bytes_per_token * m / r[3] + rl._head_s(m, samples, r)


@pytest.fixture
def vidur():
    return VidurProfileCostModel(FIXTURE, MODEL, HW, block_size=16)


# ----- interpolation ----------------------------------------------------------------------------
def test_exact_at_grid_points_and_linear_between(vidur):
    x, y = mlp_layer_s()
    for n in (16, 64, 256, 1024, 2048):  # grid points of mlp.csv, of the prefill rows and of the KV writes
        expected = outside_s(vidur, n) + L * (float(np.interp(n, x, y)) + kv_save_s(n)
                                              + grid_s("prefill_chunk_size", n, 0, "time_stats.attn_prefill.median"))
        assert n in x and vidur.step_time_s(step([(n, 0)]), 1.0) == pytest.approx(expected, rel=1e-9)
    # Between grid points: linear in every variable, not the fixture's (roofline) formula.
    i = list(x).index(512)
    mid = (y[i] + y[i + 1]) / 2  # 768 tokens: half-way between 512 and 1024
    assert vidur.layer.y[i] == pytest.approx(y[i]) and float(np.interp(768, x, y)) == pytest.approx(mid)
    got = vidur.step_time_s(step([(768, 1000)]), 1.0)
    expected = outside_s(vidur, 768) + L * (mid + kv_save_s(768)
                                            + grid_s("prefill_chunk_size", 768, 1000, "time_stats.attn_prefill.median"))
    assert got == pytest.approx(expected, rel=1e-9)


def test_the_repeated_row_is_averaged(vidur):
    rows = pd.read_csv(FIXTURE / "mlp.csv")
    last = rows[(rows.num_tokens == 4096) & (rows.num_tensor_parallel_workers == 2)]
    assert len(last) == 2  # the fixture repeats one measurement, as real Vidur files do
    tp2 = VidurProfileCostModel(FIXTURE, MODEL, HW, tp=2, block_size=16)
    assert tp2.layer.y[-1] == pytest.approx(mlp_layer_s(2)[1][-1])


def test_decode_attention_at_the_mean_context_with_vidurs_batching_overhead(vidur):
    m = 16
    expected_attn = grid_s("batch_size", 16, 512, "time_stats.attn_decode.median") * 1.1  # GQA, > 1 decode
    expected = outside_s(vidur, m, m) + L * (float(np.interp(m, *mlp_layer_s())) + kv_save_s(m) + expected_attn)
    uniform = step(decodes=(512,) * 16)
    assert vidur.step_time_s(uniform, 1.0) == pytest.approx(expected, rel=1e-9)
    assert vidur.step_time_s(step(decodes=(256, 768) * 8), 1.0) == pytest.approx(expected, rel=1e-9)
    one = vidur.step_time_s(step(decodes=(512,)), 1.0)  # a single decode: no batching overhead
    assert one == pytest.approx(outside_s(vidur, 1, 1) + L * (float(np.interp(1, *mlp_layer_s())) + kv_save_s(1)
                                + grid_s("batch_size", 1, 512, "time_stats.attn_decode.median")), rel=1e-9)


def test_several_prefill_chunks_are_one_kernel_with_their_pairs(vidur):
    # Two chunks of 64 over 0 and 128 cached: C = sqrt(2) 64, K = 64 x 128 / C.
    c = math.sqrt(2) * 64
    k = 64 * 128 / c
    got = vidur._full_gpu_s(step([(64, 0), (64, 128)]))
    attn = grid_s("prefill_chunk_size", c, k, "time_stats.attn_prefill.median") * 1.1
    expected = outside_s(vidur, 128) + L * (float(np.interp(128, *mlp_layer_s())) + kv_save_s(128) + attn)
    assert got == pytest.approx(expected, rel=1e-9)


def test_without_attention_csv_the_roofline_attention_is_used_and_said(tmp_path, vidur, caplog):
    shutil.copy(FIXTURE / "mlp.csv", tmp_path / "mlp.csv")
    with caplog.at_level(logging.WARNING, logger="sim.vidur_profile"):
        fallback = VidurProfileCostModel(tmp_path, MODEL, HW)
    assert "no attention.csv" in caplog.text and fallback.prefill is None
    plan = step([(200, 300)], decodes=(1000,) * 8)
    m = 208
    rl, r, ops = fallback.roofline, fallback._r, fallback.roofline._ops
    attention = (rl._attention_s(200 * 300 + 200 * 201 // 2, 500, 200, ops.prefill_attention, r)
                 + rl._attention_s(8 * 1001, 8 * 1001, 8, ops.decode_attention, r))
    kv_write = 4 * MODEL.num_kv_heads * MODEL.head_dim * MODEL.dtype_bytes * m / r[3] + HW.kernel_floor_s
    expected = outside_s(fallback, m, 8) + L * (float(np.interp(m, *mlp_layer_s())) + attention + kv_write)
    assert fallback.step_time_s(plan, 1.0) == pytest.approx(expected, rel=1e-9)
    # The profile's attention is the fixture's, not the roofline's: the two differ.
    assert vidur.step_time_s(plan, 1.0) != pytest.approx(expected, rel=1e-3)


# ----- outside the grid -------------------------------------------------------------------------
def test_outside_the_grid_scales_by_the_roofline_and_says_so_once(vidur, caplog):
    with caplog.at_level(logging.WARNING, logger="sim.vidur_profile"):
        t6000 = vidur.step_time_s(step(decodes=(512,) * 6000), 1.0)
        vidur.step_time_s(step(decodes=(512,) * 5000), 1.0)
    notes = [rec.getMessage() for rec in caplog.records]
    assert sum("tokens (linear ops) is past the profile's largest (4096" in n for n in notes) == 1
    assert sum("batch_size 6000 is past the profile's largest (256" in n for n in notes) == 1
    x, y = mlp_layer_s()
    layer = y[-1] * vidur._roof_layer(6000) / vidur._roof_layer(4096)
    assert vidur._roof_layer(6000) > vidur._roof_layer(4096)
    kv = kv_save_s(2048) * vidur._roof_kv_write(6000) / vidur._roof_kv_write(2048)
    decode = (grid_s("batch_size", 256, 512, "time_stats.attn_decode.median")
              * vidur._roof_decode(6000, 512) / vidur._roof_decode(256, 512) * 1.1)
    assert t6000 == pytest.approx(outside_s(vidur, 6000, 6000) + L * (layer + kv + decode), rel=1e-9)


def test_context_past_the_profiled_kv_scales_the_last_point(vidur, caplog):
    with caplog.at_level(logging.WARNING, logger="sim.vidur_profile"):
        got = vidur._grid_value(vidur.decode, 16, 8000, vidur._roof_decode, "decode")
    assert "8000 kv_cache_size (decode) is past the profile's largest (4096" in caplog.text
    at_4096 = grid_s("batch_size", 16, 4096, "time_stats.attn_decode.median")
    assert got == pytest.approx(at_4096 * vidur._roof_decode(16, 8000) / vidur._roof_decode(16, 4096))
    assert got > at_4096


# ----- TP, shares, resources, file forms ------------------------------------------------------
def test_tp_reads_its_rows_and_adds_the_roofline_all_reduces():
    tp2 = VidurProfileCostModel(FIXTURE, MODEL, HW, tp=2, block_size=16)
    n = 1024
    x, y = mlp_layer_s(tp=2)
    all_reduce = 2 * ring_all_reduce_s(MODEL.hidden * MODEL.dtype_bytes * n, 2, HW)
    expected = outside_s(tp2, n) + L * (float(np.interp(n, x, y)) + kv_save_s(n, tp=2) + all_reduce
                                        + grid_s("prefill_chunk_size", n, 0, "time_stats.attn_prefill.median", tp=2))
    assert all_reduce > 0 and tp2.step_time_s(step([(n, 0)]), 1.0) == pytest.approx(expected, rel=1e-9)
    assert y[list(x).index(n)] < mlp_layer_s(tp=1)[1][list(x).index(n)]  # the fixture's TP-2 ops are faster
    with pytest.raises(ConfigError, match=r"num_tensor_parallel_workers = 4 \(engine.tp\).*has \[1, 2\]") as err:
        VidurProfileCostModel(FIXTURE, MODEL, HW, tp=4)
    assert "mlp.csv" in str(err.value)


def test_a_share_below_one_follows_the_roofline_share_model(vidur, caplog):
    plan = step([(300, 0)], decodes=(700,) * 10)
    with caplog.at_level(logging.WARNING, logger="sim.vidur_profile"):
        half = vidur.step_time_s(plan, 0.5)
        vidur.step_time_s(plan, 0.3)
    assert caplog.text.count("a share < 1") == 1
    ratio = vidur.roofline.step_time_s(plan, 0.5) / vidur.roofline.step_time_s(plan, 1.0)
    assert half == pytest.approx(vidur.step_time_s(plan, 1.0) * ratio) and ratio > 1
    with pytest.raises(ValueError, match="share must be in"):
        vidur.step_time_s(plan, 0.0)
    slow = VidurProfileCostModel(FIXTURE, MODEL, HW, block_size=16, scale=1.25)
    assert slow.step_time_s(plan, 1.0) == pytest.approx(1.25 * vidur.step_time_s(plan, 1.0))


def test_resource_demands_keep_the_roofline_split_at_the_profiled_time(vidur):
    plan = step([(256, 0)], decodes=(300,) * 4)
    compute, memory = vidur.resource_demands_s(plan)
    rc, rm = vidur.roofline.resource_demands_s(plan)
    assert max(compute, memory) == pytest.approx(vidur.step_time_s(plan, 1.0))
    assert compute / memory == pytest.approx(rc / rm)
    assert vidur.step_time_s(StepPlan("t", (), 0, 0), 1.0) == 0.0


def test_xz_files_and_an_mlp_csv_path_read_the_same(tmp_path, vidur):
    for name in ("mlp.csv", "attention.csv"):
        (tmp_path / f"{name}.xz").write_bytes(lzma.compress((FIXTURE / name).read_bytes()))
    plan = step([(100, 50)], decodes=(900,) * 5, sample_prefill=True)
    want = vidur.step_time_s(plan, 1.0)
    assert VidurProfileCostModel(tmp_path, MODEL, HW, block_size=16).step_time_s(plan, 1.0) == pytest.approx(want)
    by_file = VidurProfileCostModel(FIXTURE / "mlp.csv", MODEL, HW, block_size=16)
    assert by_file.attention_path == FIXTURE / "attention.csv" and by_file.step_time_s(plan, 1.0) == pytest.approx(want)


# ----- bad input --------------------------------------------------------------------------------
def _edit_csv(name, fn):
    def edit(folder: Path):
        rows = pd.read_csv(folder / name)
        fn(rows).to_csv(folder / name, index=False)
    return edit


@pytest.mark.parametrize("edit,match,file", [
    (lambda d: (d / "mlp.csv").unlink(), "directory holding mlp.csv", "vidur"),
    (_edit_csv("mlp.csv", lambda r: r.drop(columns=["time_stats.mlp_up_proj.median"])),
     r"missing \['time_stats.mlp_up_proj.median'\]", "mlp.csv"),
    (_edit_csv("mlp.csv", lambda r: r.assign(n_expanded_embd=11008)),
     r"n_expanded_embd = 14336 \(model llama3_8b\).*column n_expanded_embd has \[11008\]", "mlp.csv"),
    (_edit_csv("mlp.csv", lambda r: r.assign(n_kv_head=32)), r"column n_kv_head has \[32\]", "mlp.csv"),
    (_edit_csv("mlp.csv", lambda r: r.assign(**{"time_stats.attn_rope.median": -1.0})),
     "finite times >= 0 in every row of column time_stats.attn_rope.median", "mlp.csv"),
    (_edit_csv("attention.csv", lambda r: r.drop(columns=["kv_cache_size"])), r"missing \['kv_cache_size'\]",
     "attention.csv"),
    (_edit_csv("attention.csv", lambda r: r.assign(n_q_head=64)), r"column n_q_head has \[64\]", "attention.csv"),
    (_edit_csv("attention.csv", lambda r: r[r.prefill_chunk_size == 0]), "prefill rows", "attention.csv"),
    (_edit_csv("attention.csv", lambda r: pd.concat([r, r.assign(block_size=32)])),
     r"block_size = 8 \(engine.block_size_tokens\).*has \[16, 32\]", None),
])
def test_bad_profiles_name_the_file_and_what_is_wrong(tmp_path, edit, match, file):
    folder = tmp_path / "vidur"
    shutil.copytree(FIXTURE, folder)
    edit(folder)
    block = 8 if file is None else 16  # the last case: two block sizes, neither the engine's
    with pytest.raises(ConfigError, match=match) as err:
        VidurProfileCostModel(folder, MODEL, HW, block_size=block)
    assert err.value.option == "executor.profile" and (file or "attention.csv") in str(err.value)


def test_a_model_the_profile_is_not_of_is_refused():
    with pytest.raises(ConfigError, match=r"column n_head has \[32\]"):
        VidurProfileCostModel(FIXTURE, get_model("llama3_70b"), HW)
    with pytest.raises(ConfigError, match="dense GQA model"):
        VidurProfileCostModel(FIXTURE, get_model("deepseek_v2_lite"), HW)


# ----- from a run ---------------------------------------------------------------------------------
def test_runs_with_a_vidur_profile(tmp_path):
    from harness.goodput import compose
    from harness.run import run
    common = ["model=llama3_8b", "hardware=a100_80g", "workload=synthetic", "workload.num_requests=30",
              "workload.rate=4", "plots=false", "progress=false", "executor.cost_model=profiled",
              f"executor.profile={FIXTURE}"]
    for name, extra in (("chunked", ["engine=unified_chunked"]), ("tp2", ["engine=unified_chunked", "engine.tp=2"]),
                        ("semipd", ["engine=semipd"])):
        out = run(compose(common + extra), tmp_path / name)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["cost_model"] == "profiled" and summary["profile"] == str(FIXTURE), name
        assert summary["num_finished"] == 30 and summary["num_unfinished"] == 0, name
        assert out.summary["tpot_s"]["mean"] > 0 and out.summary["ttft_s"]["mean"] > 0, name
    with pytest.raises(ConfigError, match="engine.pp"):
        run(compose(common + ["engine=unified_chunked", "engine.pp=2"]), tmp_path / "pp")
    with pytest.raises(ConfigError, match="num_tensor_parallel_workers = 4"):
        run(compose(common + ["engine=unified_chunked", "engine.tp=4"]), tmp_path / "tp4")
