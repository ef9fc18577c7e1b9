"""Run directories: write (atomically, byte-reproducibly), load, and print a summary table.

Layout: `config.yaml`, `requests.csv`, `steps.csv`, `summary.json`, `token_times.csv`
(every output token's time), optional extra CSVs and PNG plots. `summary.json` is written last, so
its presence marks a complete run directory.
"""
from __future__ import annotations

import json
import os
import tempfile
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from engines.errors import UserError
from engines.plan import StepRecord
from engines.request import Request
from metrics.definitions import compute_request_metrics
from metrics.summary import json_safe
from metrics.table import FLOAT_FORMAT, Table

if TYPE_CHECKING:  # pandas is imported where frames are made or read, not to write a run
    import pandas as pd

# Contract columns first, in this order; the rest are conveniences for analysis.
REQUEST_COLUMNS: tuple[str, ...] = (
    "id", "arrival_s", "prompt_len", "output_len", "first_token_s", "finish_s",
    "num_preemptions", "status",
    "num_output_tokens", "ttft_s", "tpot_s", "e2e_s", "finish_reason", "reject_reason", "source")
STEP_COLUMNS: tuple[str, ...] = (
    "worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens",
    "batch_size", "share", "prefill_context_tokens", "decode_context_tokens", "num_samples")
_STRING_COLUMNS = ("status", "finish_reason", "reject_reason", "source", "worker")
TOKEN_TIMES_FILE = "token_times.csv"
_RESERVED = ("config.yaml", "requests.csv", "steps.csv", "summary.json")


def requests_table(requests: Sequence[Request], tpot_definition: str = "vllm") -> Table:
    """One row per request, columns `REQUEST_COLUMNS`; latencies from `metrics.definitions`."""
    m = compute_request_metrics(requests, tpot_definition)
    columns = (
        [r.id for r in requests],
        m.arrival_s.tolist(),
        m.prompt_len.tolist(),
        [r.output_len for r in requests],
        m.first_token_s.tolist(),
        [float("nan") if r.finish_s is None else r.finish_s for r in requests],
        [r.num_preemptions for r in requests],
        [getattr(r.status, "value", r.status) for r in requests],
        [r.num_output_tokens for r in requests],
        m.ttft_s.tolist(), m.tpot_s.tolist(), m.e2e_s.tolist(),
        # "length" (output_len reached) | "stop" (a stop/EOS id); "" unless finished
        [r.finish_reason for r in requests],
        [r.reject_reason for r in requests],
        [r.source for r in requests],
    )
    return Table(REQUEST_COLUMNS, list(zip(*columns)))


def requests_frame(requests: Sequence[Request], tpot_definition: str = "vllm") -> "pd.DataFrame":
    return requests_table(requests, tpot_definition).to_frame()


def token_times_table(requests: Sequence[Request]) -> Table:
    """`token_times.csv`: per request (`id`), its output tokens' times in seconds,
    space-separated, in FLOAT_FORMAT like requests.csv (1 us resolution up to 1000 s)."""
    return Table(("id", "token_times_s"),
                 [(r.id, " ".join(FLOAT_FORMAT % t for t in r.token_times_s)) for r in requests])


def token_times_frame(requests: Sequence[Request]) -> "pd.DataFrame":
    return token_times_table(requests).to_frame()


def load_token_times(run_dir: str | os.PathLike, requests: "pd.DataFrame") -> list[list[float]] | None:
    """`token_times.csv` of a run directory, in the order of `requests` (its requests.csv);
    None without the file. Raises UserError if the file disagrees with requests.csv."""
    path = Path(run_dir) / TOKEN_TIMES_FILE
    if not path.exists():
        return None
    import pandas as pd
    frame = pd.read_csv(path, keep_default_na=False, dtype={"token_times_s": str})
    by_id = {int(i): [float(x) for x in s.split()] for i, s in zip(frame["id"], frame["token_times_s"])}
    times = [by_id.get(int(i), []) for i in requests["id"]]
    if [len(t) for t in times] != requests["num_output_tokens"].astype(int).tolist():
        raise UserError(f"{path} does not match requests.csv: the token counts differ from its "
                        "num_output_tokens column")
    return times


_STEP_FIELDS = attrgetter(*STEP_COLUMNS)


def steps_table(steps: Sequence[StepRecord]) -> Table:
    """One row per worker step, columns `STEP_COLUMNS`."""
    return Table(STEP_COLUMNS, list(map(_STEP_FIELDS, steps)))


def steps_frame(steps: Sequence[StepRecord]) -> "pd.DataFrame":
    return steps_table(steps).to_frame()


def write_run_dir(run_dir: str | os.PathLike, *, config_yaml: str,
                  requests: Sequence[Request], steps: Sequence[StepRecord],
                  summary: Mapping[str, Any],
                  extra_csvs: "Mapping[str, Table | pd.DataFrame] | None" = None) -> Path:
    """Write a run directory; every file atomically. Returns the directory's path.

    `extra_csvs` maps a file name (".csv" added if missing) to a Table or a DataFrame, e.g.
    controller share traces. TPOT in `requests.csv` uses `summary["tpot_definition"]` so
    the files agree with each other.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    tpot_definition = summary.get("tpot_definition", "vllm")
    atomic_write_text(out / "config.yaml", config_yaml)
    atomic_write_text(out / "requests.csv", requests_table(requests, tpot_definition).csv_text())
    atomic_write_text(out / "steps.csv", steps_table(steps).csv_text())
    for name, frame in (extra_csvs or {}).items():
        text = frame.csv_text() if isinstance(frame, Table) else frame_to_csv(frame)
        atomic_write_text(out / _extra_csv_name(name), text)
    write_summary(out, summary)
    return out


def write_summary(run_dir: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """`summary.json`, written last: its presence marks a complete run directory."""
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n"
    atomic_write_text(Path(run_dir) / "summary.json", text)


def frame_to_csv(frame: "pd.DataFrame") -> str:
    return frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def _extra_csv_name(name: str) -> str:
    file_name = name if name.endswith(".csv") else f"{name}.csv"
    if Path(file_name).name != file_name or file_name in _RESERVED or file_name.startswith("."):
        raise ValueError(f"extra CSV name must be a plain, unreserved file name: {name!r}")
    return file_name


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same directory + os.replace, so readers (and a crash)
    see either the old file or the complete new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # binary: no platform newline translation
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would survive the rename
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_run_dir(run_dir: str | os.PathLike) -> "tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]":
    """(summary, requests, steps) of a run directory; empty strings stay '' (not NaN)."""
    d = Path(run_dir)
    missing = [f for f in ("summary.json", "requests.csv", "steps.csv") if not (d / f).is_file()]
    if missing:
        raise UserError(f"{d} is not a complete run directory: {', '.join(missing)} missing")
    summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    return summary, _read_csv(d / "requests.csv"), _read_csv(d / "steps.csv")


def _read_csv(path: Path) -> "pd.DataFrame":
    import pandas as pd
    # Only an empty field is missing: a source or worker called "NA" stays a string.
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in _STRING_COLUMNS:
        if col in frame.columns:
            # object first: an all-empty column is float NaN, and filling it with "" warns
            frame[col] = frame[col].astype(object).fillna("").astype(str)
    return frame


def _ms(stats: Mapping[str, Any] | None, key: str) -> str:
    v = (stats or {}).get(key)
    return "-" if v is None else f"{v * 1e3:.1f}"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A short human-readable table of one run, for the end of `bench.py`."""
    s = summary
    head = " | ".join(str(s[k]) for k in ("engine", "executor", "model", "hardware") if s.get(k))
    if s.get("rate_per_gpu") is not None:
        head += f" | {s['rate_per_gpu']} req/s/GPU"
    slo = s.get("slo") or {}
    lines = [head] if head else []
    lines += [
        f"requests    {s.get('num_finished', 0)}/{s.get('num_requests', 0)} finished, "
        f"{s.get('num_rejected', 0)} rejected, in {_num(s.get('duration_s'), '.2f')} s",
        f"throughput  {_num(s.get('request_throughput'), '.3f')} req/s, "
        f"{_num(s.get('output_throughput_tok_s'), '.1f')} out tok/s, "
        f"{_num(s.get('total_token_throughput_tok_s'), '.1f')} total tok/s",
        f"{'latency ms':<11} {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}",
    ]
    for label, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("ITL", "itl_s"), ("E2E", "e2e_s")):
        cells = [f"{_ms(s.get(key), k):>9}" for k in ("mean", "p50", "p90", "p99")]
        lines.append(f"{label:<11} " + " ".join(cells))
    lines.append(
        f"SLO         TTFT<={_ms(slo, 'ttft_s')} ms, TPOT<={_ms(slo, 'tpot_s')} ms "
        f"({s.get('tpot_definition', 'vllm')}): attainment {_pct(s.get('slo_attainment'))} "
        f"(TTFT {_pct(s.get('ttft_attainment'))}, TPOT {_pct(s.get('tpot_attainment'))}), "
        f"goodput {_num(s.get('goodput_req_s'), '.3f')} req/s")
    return "\n".join(lines)
