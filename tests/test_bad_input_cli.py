"""Bad input through the CLI: README's "Bad input" table, row by row, plus the rules behind
it (user errors print one paragraph and exit 2; internal errors keep their traceback and
exit 1; a run that serves nothing fails after writing its results; partial rejection is a
valid result).

The table rows run in ONE subprocess per chunk that executes bench.py in-process once per
row (`runpy.run_path(bench.py, run_name="__main__")`, the same code path as
`python bench.py`, reading sys.argv), to pay Python and import start-up once instead of
per row; `test_a_real_bench_process_prints_the_table_row_exactly` runs one row as a
plain process.
"""
import dataclasses
from functools import partial
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from engines.config import ClusterPart, EngineConfig, SemiPDConfig, SGLangConfig
from engines.errors import ConfigError, NothingServedError, UserError
from harness.config import ExecutorConfig, RunConfig, SLOConfig
from harness.errors import USER_ERRORS, config_conversion_error, nothing_served_error

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["workload.num_requests=5", "plots=false", "progress=false"]

# Runs bench.py once per case (argv[1]: JSON list of {"args", "run_dir"}) and writes
# {"code", "stderr"} per case to argv[2].
DRIVER = r"""
import contextlib, io, json, runpy, sys
cases_file, out_file = sys.argv[1:3]
cases, out = json.loads(open(cases_file).read()), []
for case in cases:
    sys.argv = ["bench.py", *case["args"], "hydra.run.dir=" + case["run_dir"],
                "hydra.sweep.dir=" + case["run_dir"]]
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_path("bench.py", run_name="__main__")
        except SystemExit as e:
            code = e.code or 0
    out.append({"code": code, "stderr": err.getvalue()})
open(out_file, "w").write(json.dumps(out))
"""


def readme_rows() -> list[tuple[str, list[str], int, str]]:
    """(class, overrides, exit code, message start) of README's "Bad input" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Bad input", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows.append((cells[0], cells[1].strip("`").split(), int(cells[2]), cells[3].strip("`")))
    return rows


def run_cases(cases: list[dict], tmp_path: Path) -> list[dict]:
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    res = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_readme_table_covers_the_issue_cases():
    rows = readme_rows()
    examples = {" ".join(args) for _, args, _, _ in rows}
    assert len(rows) >= 15 and len({cls for cls, *_ in rows}) == len(rows)
    for needed in ("slo.ttft_s=nan", "engine.semipd.percentile=150", "engine.semipd.window_requests=-5",
                   "engine.max_num_batched_tokens=10", "executor.num_threads=0", "executor.device=gpu"):
        assert needed in examples, needed


@pytest.mark.parametrize("chunk", [0, 1])
def test_readme_table_through_the_cli(chunk, tmp_path):
    rows = readme_rows()[chunk::2]
    cases = [{"args": [*args, *COMMON], "run_dir": str(tmp_path / f"row{i}")} for i, (_, args, _, _) in enumerate(rows)]
    for (cls, args, code, message), case, got in zip(rows, cases, run_cases(cases, tmp_path)):
        where = f"row '{cls}' ({' '.join(args)}): stderr {got['stderr'][-1500:]!r}"
        assert got["code"] == code, where
        assert message in got["stderr"], where
        assert "Traceback" not in got["stderr"], where
        if code == 2:
            assert got["stderr"].startswith("error: "), where
        if message.startswith("no request was served"):  # the results come first
            summary = json.loads((Path(case["run_dir"]) / "summary.json").read_text())
            assert summary["num_finished"] == 0 and summary["num_rejected"] == 5, where


def test_a_real_bench_process_prints_the_table_row_exactly(tmp_path):
    """The same row as the in-process driver runs (README: slo.ttft_s=nan), as a plain
    `python bench.py` process: exit code and the whole of stderr."""
    [row] = [r for r in readme_rows() if r[1] == ["slo.ttft_s=nan"]]
    real = subprocess.run([sys.executable, "bench.py", *row[1], *COMMON, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert real.returncode == row[2] == 2
    assert real.stderr == f"error: {row[3]}\n"


def test_a_sweep_with_some_rejections_completes_and_counts_them(tmp_path):
    # Uniform prompts of 100..1000 tokens against a 600-token budget without chunking:
    # some requests can never be scheduled, the others are served.
    common = ["workload=synthetic", "workload.distribution=uniform", "workload.prompt_len_min=100",
              "workload.prompt_len_max=1000", "workload.num_requests=20", "plots=false", "progress=false"]
    some = ["-m", "workload.rate=5,10", "engine.max_num_batched_tokens=600", *common]
    # ... and a sweep whose first point can serve nothing stops there with exit 2.
    none_first = ["-m", "engine.max_num_batched_tokens=10,600", *common]
    got, stopped = run_cases([{"args": some, "run_dir": str(tmp_path / "some")},
                              {"args": none_first, "run_dir": str(tmp_path / "stopped")}], tmp_path)
    assert got["code"] == 0, got["stderr"][-2000:]
    summaries = [json.loads(p.read_text()) for p in sorted((tmp_path / "some").glob("*/summary.json"))]
    assert len(summaries) == 2
    for s in summaries:
        assert s["num_finished"] > 0 and s["num_rejected"] > 0
        assert s["num_finished"] + s["num_rejected"] == 20
        assert all("exceed max_num_batched_tokens=600" in r for r in s["rejected_reasons"])
    assert stopped["code"] == 2 and "error: no request was served: all 20 were rejected" in stopped["stderr"]
    assert len(list((tmp_path / "stopped").glob("*/summary.json"))) == 1


INTERNAL = r"""
import runpy, sys
import engines.blocks as blocks
real_free = blocks.BlockPool.free
def free_twice(self, block_ids):  # a bug: the second free of the same blocks is a double free
    real_free(self, block_ids)
    real_free(self, block_ids)
blocks.BlockPool.free = free_twice
sys.argv = ["bench.py", *sys.argv[1:]]
runpy.run_path("bench.py", run_name="__main__")
"""


def test_an_internal_value_error_keeps_its_traceback_and_exits_1(tmp_path):
    res = subprocess.run([sys.executable, "-c", INTERNAL, *COMMON, f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" in res.stderr and re.search(r"ValueError: pool '.*': double free of block", res.stderr)
    assert "error: " not in res.stderr.splitlines()[0]


# --- the rules, in-process -----------------------------------------------------------------

def test_only_the_projects_user_errors_are_user_errors():
    from sim.memory import ModelDoesNotFitError
    from workloads.errors import WorkloadError
    for cls in (ConfigError, NothingServedError, ModelDoesNotFitError, WorkloadError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
    assert USER_ERRORS == (UserError,)
    assert not isinstance(ValueError("double free"), USER_ERRORS)


@pytest.mark.parametrize("field,bad", [
    ("window_requests", [0, -5]), ("percentile", [0.0, 150.0, float("nan")]),
    ("tpot_margin", [0.0, -1.0, float("inf"), float("nan")]), ("step_pct", [0.0, 101.0, float("nan")]),
    ("max_steps", [0, -1]), ("floor_pct", [0.0, 100.5, float("nan")]), ("min_fit_points", [1, 0]),
    ("switch_delay_s", [-0.1, float("inf"), float("nan")]), ("prefill_share_pct", [0.0, 120.0, float("nan")]),
    ("decode_share_pct", [-1.0, float("inf")]), ("controller", ["magic"]), ("contention", ["fair"]),
])
def test_every_semipd_field_is_range_checked(field, bad):
    SemiPDConfig().validate()
    for value in bad:
        cfg = EngineConfig(design="semipd", semipd=dataclasses.replace(SemiPDConfig(), **{field: value}))
        with pytest.raises(ConfigError, match=rf"^engine\.semipd\.{field} must be .*; got "):
            cfg.validate()


@pytest.mark.parametrize("field,bad", [
    ("num_threads", [0, -2]), ("device", ["gpu", "cuda:x", "CPU"]), ("dtype", ["int3"]),
    ("temperature", [-0.5, float("nan")]), ("kv_cache_bytes", [0]), ("name", ["grpc"]),
    ("attention", ["flash", ""]),
])
def test_executor_fields_are_checked(field, bad):
    for ok in ("cpu", "cuda", "cuda:1"):
        ExecutorConfig(device=ok).validate()
    for value in bad:
        with pytest.raises(ConfigError, match=rf"^executor\.{field} must be "):
            ExecutorConfig(**{field: value}).validate()


@pytest.mark.parametrize("field,bad", [("ttft_s", [float("nan"), float("inf"), 0.0]), ("tpot_s", [-1.0])])
def test_slo_targets_must_be_finite_and_positive(field, bad):
    for value in bad:
        with pytest.raises(ConfigError, match=rf"^slo\.{field} must be a finite number > 0"):
            SLOConfig(**{field: value}).validate()


def test_tp_must_give_each_gpu_whole_kv_heads():
    """vLLM's rule: tp divides the KV heads, or is a multiple of them (replication). No
    bundled model breaks it without also breaking the attention-head rule, so use
    Qwen2.5-7B's config.json (28 heads, 4 KV heads)."""
    cfg = RunConfig()
    cfg.model.name, cfg.model.config = "qwen_like", str(Path(__file__).parent / "data" / "hf" / "Qwen2.5-7B")
    for tp in (1, 2, 4, 28):
        cfg.engine.tp = tp
        cfg.validate()
    cfg.engine.tp = 7  # divides 28 heads, but 4 KV heads cannot be split or replicated evenly
    with pytest.raises(ConfigError, match=r"^engine\.tp must be a divisor or a multiple of qwen_like's 4 KV heads"):
        cfg.validate()


def test_torch_dtypes_in_the_config_match_the_runtime_and_checkpoint_errors_are_user_errors():
    pytest.importorskip("torch")
    from engines.torch.config import CheckpointError
    from engines.torch.runtime import _DTYPES
    from harness.config import TORCH_DTYPES
    assert set(TORCH_DTYPES) == set(_DTYPES)
    assert issubclass(CheckpointError, UserError)


def test_config_conversion_errors_name_the_key():
    from omegaconf.errors import MissingMandatoryValue
    cfg = OmegaConf.structured(RunConfig)
    cfg.model.name = "???"
    with pytest.raises(MissingMandatoryValue) as exc:
        OmegaConf.to_object(cfg)
    err = config_conversion_error(exc.value)
    assert isinstance(err, UserError) and str(err).startswith("model.name has no value and is required")


def test_nothing_served_only_when_no_request_finished(tmp_path):
    some = {"num_requests": 5, "num_finished": 1, "num_rejected": 4, "rejected_reasons": {"too long": 4}}
    assert nothing_served_error(some, tmp_path) is None
    assert nothing_served_error({"num_requests": 0, "num_finished": 0}, tmp_path) is None
    reasons = {f"reason {i}": i + 1 for i in range(5)}
    err = nothing_served_error({"num_requests": 15, "num_finished": 0, "num_rejected": 15,
                                "rejected_reasons": reasons}, tmp_path)
    assert isinstance(err, NothingServedError)
    # the most frequent reasons first, the rest counted
    assert "all 15 were rejected, e.g. reason 4 (5); reason 3 (4); reason 2 (3); and 2 other reasons" in str(err)
    assert str(tmp_path) in str(err)


@pytest.mark.parametrize("changes,option", [
    ({"tp": 0}, "engine.tp"), ({"max_num_seqs": -1}, "engine.max_num_seqs"),
    ({"chunk_size_tokens": 0}, "engine.chunk_size_tokens"),
    ({"max_num_batched_tokens": 0}, "engine.max_num_batched_tokens"),
    ({"gpu_memory_utilization": float("nan")}, "engine.gpu_memory_utilization"),
    ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization"),
    ({"design": "cluster"}, "engine.parts"),
    ({"design": "cluster", "parts": [ClusterPart(num_decode=0)]}, r"engine.parts\[0\].num_decode"),
    ({"design": "cluster", "parts": [ClusterPart(design="cluster")]}, r"engine.parts\[0\].design"),
    ({"sglang": SGLangConfig(max_prefill_tokens=0)}, "engine.sglang.max_prefill_tokens"),
    ({"policy": "sglang", "design": "disagg"}, "engine.policy"),
])
def test_engine_fields_are_checked(changes, option):
    EngineConfig().validate()
    with pytest.raises(ConfigError, match=rf"^{option} must be "):
        dataclasses.replace(EngineConfig(), **changes).validate()


@pytest.mark.parametrize("overrides,message", [
    ({"model": "gpt5"}, r"^model\.name must be one of .*llama3_8b"),
    ({"hardware": "tpu"}, r"^hardware\.name must be one of .*a100_80g"),
    ({"hardware": "cpu", "tp": 2}, r"^engine\.tp must be 1 on cpu, which has no GPU-GPU link; got 2"),
])
def test_sim_model_hardware_and_layout_are_checked(overrides, message):
    cfg = RunConfig()
    cfg.model.name = overrides.get("model", cfg.model.name)
    cfg.hardware.name = overrides.get("hardware", cfg.hardware.name)
    cfg.engine.tp = overrides.get("tp", 1)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_negative_workload_seed_is_a_workload_error():
    from workloads.config import WorkloadConfig, build_workload
    from workloads.errors import WorkloadError
    with pytest.raises(WorkloadError, match=r"^workload\.seed must be an integer >= 0"):
        build_workload(WorkloadConfig(num_requests=3, seed=-1))


# Fields any value of their type is fine for (labels, free text, switches).
FREE_FORM = {"name", "label", "checkpoint", "tag", "results_dir", "ignore_eos", "chunked_prefill",
             "enable_mixed_chunk", "progress", "plots", "check_integrity", "save_token_times"}


def _bad_value(hint) -> object | None:
    text = str(hint)
    if "float" in text:
        return float("nan")
    if "int" in text:
        return -1
    if text in ("str", "<class 'str'>"):
        return "no-such-choice"
    return None


@pytest.mark.parametrize("config_cls,prefix", [(EngineConfig, "engine"), (SemiPDConfig, "engine.semipd"),
                                               (SGLangConfig, "engine.sglang"), (ExecutorConfig, "executor"),
                                               (SLOConfig, "slo")])
def test_every_scalar_field_is_validated_where_it_is_declared(config_cls, prefix):
    """A new option must get a range check: nan for a float, -1 for an int and an unknown
    word for a choice must each be rejected naming the option."""
    import typing
    hints = typing.get_type_hints(config_cls)
    checked = 0
    for f in dataclasses.fields(config_cls):
        bad = _bad_value(hints[f.name])
        if f.name in FREE_FORM or bad is None:
            continue
        cfg = dataclasses.replace(config_cls(), **{f.name: bad})
        validate = cfg.validate if config_cls in (EngineConfig, ExecutorConfig, SLOConfig) else partial(cfg.validate, prefix)
        with pytest.raises(ConfigError, match=rf"^{re.escape(prefix)}\.{f.name} must be "):
            validate()
        checked += 1
    assert checked >= 2
