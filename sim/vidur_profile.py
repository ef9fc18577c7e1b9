"""Cost model from Vidur-format GPU operator profiles (`executor.cost_model=profiled
executor.profile=<dir holding mlp.csv>`): a user with a new GPU profiles it with Vidur's
profiler (microsoft/vidur, `data/profiling/compute/<sku>/<model>/`) or writes the same
columns from their own, and points the harness at the files.

Files (pandas reads `.csv` or `.csv.xz`):
- `mlp.csv` (required): per (num_tokens, num_tensor_parallel_workers) the median time in
  ms of each operator of ONE layer on one GPU of the TP group: `time_stats.<op>.median`
  for the ops in LAYER_OPS. Vidur's columns n_head, n_kv_head, n_embd, n_expanded_embd,
  use_gated_mlp must match the ModelSpec (vocab_size only shapes `emb`, which is not used:
  a mismatch is logged; Vidur pads Llama-2's 32000 to 32768).
- `attention.csv` (optional): prefill rows (prefill_chunk_size > 0, batch_size 1) timed
  by (prefill_chunk_size, kv_cache_size), decode rows (prefill_chunk_size = 0) by
  (batch_size, kv_cache_size), and the KV-cache write by the step's tokens.
Other `time_stats.*` columns (`emb`, `attn_input_reshape`, `attn_output_reshape`) are
not used, as Vidur's own predictor does not use them; they are named in the log once.

A step of m new tokens (all its sequences) on tp GPUs:

    t = host overhead + embedding(m) + final norm, LM head and sampler(sampled seqs)
        + layers x (linear ops(m) + KV write(m) + prefill attention + decode attention
                    + 2 TP all-reduces(m))

- linear ops: the sum of the layer's ops, piecewise linear in num_tokens between the
  profiled token counts at this TP (Vidur fits a random forest to the same points);
- prefill attention: the step's prefill chunks (c_i new tokens over k_i cached) as ONE
  kernel, as FlashAttention's varlen kernel runs them: looked up at C = sqrt(sum c_i^2)
  and K = sum c_i k_i / C, which keep the chunks' (query, key) pairs (C K + C^2/2) and
  pay the kernel's fixed time once. One chunk: exactly its (c, k). (Vidur looks up
  (sqrt(sum c_i^2), sum k_i), which over-counts the pairs of several chunks with cache.)
- decode attention: one lookup at (decode seqs, their mean context), as Vidur does;
- both interpolated bilinearly in the measured grid (linear in kv_cache_size along each
  profiled chunk size / batch size, then linear between the two neighbouring ones, so a
  triangular grid works); with several prefill chunks, or several decodes of a GQA model,
  x (1 + BATCHING_OVERHEAD), Vidur's default correction for batching sequences of
  unequal lengths into a kernel profiled on equal ones;
- without attention.csv: the roofline's attention and KV write (sim/cost_model.py),
  logged once;
- everything outside the layers (host overhead, embedding, LM head, sampler) and the TP
  all-reduces: the roofline's, as a Vidur compute profile does not time them.
Outside a measured range, a value is scaled from the nearest measured point by the
roofline's growth of the same op (e.g. linear ops at 6000 tokens = profiled 4096-token
time x roofline(6000) / roofline(4096)), with a log line the first time.
Shares < 1 (semi-PD): the full-GPU prediction x the roofline share model's slowdown of
the same step, logged once: a Vidur profile is measured on whole GPUs.
"""
from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engines.errors import ConfigError
from engines.plan import StepPlan
from sim.cost_model import RooflineCostModel, ring_all_reduce_s
from sim.specs import HardwareSpec, ModelSpec

log = logging.getLogger(__name__)

# The per-layer ops Vidur's predictor sums into a layer (vidur/entities/execution_time.py);
# the norms and add may be absent (Vidur reads them as 0), the others are required.
LAYER_OPS = ("attn_pre_proj", "attn_post_proj", "attn_rope", "mlp_up_proj", "mlp_act", "mlp_down_proj",
             "input_layernorm", "post_attention_layernorm", "add")
OPTIONAL_OPS = ("input_layernorm", "post_attention_layernorm", "add")
# Vidur's attention_{prefill,decode}_batching_overhead_fraction default, applied to GQA models.
BATCHING_OVERHEAD = 0.1
MLP_FILES = ("mlp.csv", "mlp.csv.xz")
ATTENTION_FILES = ("attention.csv", "attention.csv.xz")
_TP = "num_tensor_parallel_workers"


def is_vidur_profile(path: str | Path) -> bool:
    """A directory, or a file named mlp.csv(.xz): a Vidur profile; anything else is the
    CPU profile of sim/profiled.py."""
    p = Path(path)
    return p.is_dir() or p.name in MLP_FILES


def find_files(path: str | Path) -> tuple[Path, Path | None]:
    """(mlp.csv, attention.csv or None) of a profile directory or of an mlp.csv path."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    mlp = next((folder / n for n in MLP_FILES if (folder / n).is_file()), None) if p.is_dir() else p
    if mlp is None or not mlp.is_file():
        raise ConfigError("executor.profile", "a Vidur profile directory holding mlp.csv or mlp.csv.xz "
                          "(or the path of that file)", str(path))
    attention = next((folder / n for n in ATTENTION_FILES if (folder / n).is_file()), None)
    return mlp, attention


@dataclass(frozen=True)
class Curve:
    """Measured points of one quantity against one variable (seconds), sorted by x."""

    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class Grid:
    """Measured points against two variables: one Curve in kv_cache_size per value of the
    first variable (prefill chunk size, or decode batch size), sorted."""

    rows: tuple[float, ...]
    curves: tuple[Curve, ...]


def _lerp(c: Curve, x: float) -> float:
    """Piecewise-linear interpolation inside [x[0], x[-1]] (the caller checks)."""
    i = bisect.bisect_left(c.x, x)
    if c.x[i] == x:
        return c.y[i]
    x0, x1 = c.x[i - 1], c.x[i]
    return c.y[i - 1] + (c.y[i] - c.y[i - 1]) * (x - x0) / (x1 - x0)


class VidurProfileCostModel:
    """`step_time_s(plan, share)` from Vidur operator profiles; `resource_demands_s` as the
    roofline's split of the step into compute and memory time, scaled to the profiled time."""

    def __init__(self, profile: str | Path, model: ModelSpec, hardware: HardwareSpec, tp: int = 1,
                 share_model: str = "roofline", scale: float = 1.0, block_size: int | None = None) -> None:
        if model.mla is not None or model.moe is not None:
            raise ConfigError("executor.profile", "a profile of a dense GQA model (Vidur's operators have no "
                              "MLA or MoE)", f"{profile} with model {model.name}")
        self.profile, self.model, self.tp, self.scale = str(profile), model, tp, scale
        self._warned: set[str] = set()
        self.roofline = RooflineCostModel(model, hardware, tp=tp, share_model=share_model)
        self._r = self.roofline._rates(1.0, 1.0)
        ops = self.roofline._ops
        # KV-cache write per token (read + write of k and v), as layer_ops counts it.
        kv_dim = max(1, model.num_kv_heads // tp) * model.head_dim
        self._kv_write_bytes_per_token = 4.0 * kv_dim * model.dtype_bytes
        self._gqa = model.num_heads > model.num_kv_heads
        self._prefill_ops, self._decode_ops = ops.prefill_attention, ops.decode_attention

        mlp_path, attention_path = find_files(profile)
        self.mlp_path, self.attention_path = mlp_path, attention_path
        self.layer = self._read_mlp(mlp_path)
        if attention_path is None:
            self.prefill = self.decode = self.kv_save = None
            log.warning("Vidur profile cost model: no attention.csv next to %s: attention and the KV-cache "
                        "write from the roofline", mlp_path)
        else:
            self.prefill, self.decode, self.kv_save = self._read_attention(attention_path, block_size)

    # ----- reading ------------------------------------------------------------------------
    def _read(self, path: Path) -> pd.DataFrame:
        try:
            rows = pd.read_csv(path)
        except (OSError, ValueError, EOFError) as e:  # EOFError: a truncated .xz
            raise ConfigError("executor.profile", "a readable Vidur CSV", f"{path} ({e})") from None
        return rows.drop_duplicates()

    def _require(self, path: Path, rows: pd.DataFrame, columns: list[str]) -> None:
        missing = [c for c in columns if c not in rows.columns]
        if missing:
            raise ConfigError("executor.profile", f"a Vidur {path.name.split('.')[0]}.csv with columns "
                              f"{', '.join(columns)}", f"{path} (missing {missing})")

    def _match(self, path: Path, rows: pd.DataFrame, wanted: dict[str, object]) -> pd.DataFrame:
        """The rows of this model and TP; a ConfigError naming the first column with no match."""
        for column, value in wanted.items():
            keep = rows[rows[column] == value]
            if keep.empty:
                found = sorted(set(rows[column].tolist()), key=str)
                what = "engine.tp" if column == _TP else f"model {self.model.name}"
                raise ConfigError("executor.profile", f"rows with {column} = {value} ({what})",
                                  f"{path} (column {column} has {found})")
            rows = keep
        return rows

    def _unused(self, path: Path, rows: pd.DataFrame, used: set[str]) -> None:
        extra = sorted({c.split(".")[1] for c in rows.columns if c.startswith("time_stats.")} - used)
        if extra:
            log.info("Vidur profile cost model: %s: not used (Vidur's predictor does not either): %s",
                     path, ", ".join(extra))

    def _read_mlp(self, path: Path) -> Curve:
        rows = self._read(path)
        required = [f"time_stats.{op}.median" for op in LAYER_OPS if op not in OPTIONAL_OPS]
        self._require(path, rows, ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp",
                                   "num_tokens", _TP] + required)
        m = self.model
        if "vocab_size" in rows.columns and m.vocab not in set(rows["vocab_size"]):
            log.warning("Vidur profile cost model: %s has vocab_size %s, model %s has %d: not used "
                        "(the embedding and LM head are the roofline's)", path,
                        sorted(set(rows["vocab_size"])), m.name, m.vocab)
        rows = self._match(path, rows, {"n_head": m.num_heads, "n_kv_head": m.num_kv_heads, "n_embd": m.hidden,
                                        "n_expanded_embd": m.intermediate, "use_gated_mlp": True,
                                        _TP: self.tp})
        self._unused(path, rows, set(LAYER_OPS))
        cols = [f"time_stats.{op}.median" for op in LAYER_OPS if f"time_stats.{op}.median" in rows.columns]
        times = rows[cols].astype(float)
        optional = [c for c in cols if c not in required]
        times[optional] = times[optional].fillna(0.0)  # as Vidur reads a missing norm or add
        self._check_times(path, times, "num_tokens")
        total = pd.DataFrame({"x": rows["num_tokens"].astype(float), "y": times.sum(axis=1) * 1e-3})
        return self._curve(path, total, "num_tokens")

    def _read_attention(self, path: Path, block_size: int | None) -> tuple[Grid, Grid, Curve | None]:
        rows = self._read(path)
        self._require(path, rows, ["n_embd", "n_q_head", "n_kv_head", _TP, "batch_size", "prefill_chunk_size",
                                   "kv_cache_size", "time_stats.attn_prefill.median",
                                   "time_stats.attn_decode.median"])
        m = self.model
        rows = self._match(path, rows, {"n_embd": m.hidden, "n_q_head": m.num_heads, "n_kv_head": m.num_kv_heads,
                                        _TP: self.tp})
        if "block_size" in rows.columns:  # the KV block size changes the paged kernels' speed a little
            sizes = sorted(set(rows["block_size"].tolist()))
            if block_size in sizes:
                rows = rows[rows["block_size"] == block_size]
            elif len(sizes) == 1:
                log.warning("Vidur profile cost model: %s was profiled with block_size %s, the engine uses %s",
                            path, sizes[0], block_size)
            else:
                raise ConfigError("executor.profile", f"rows with block_size = {block_size} "
                                  "(engine.block_size_tokens)", f"{path} (column block_size has {sizes})")
        self._unused(path, rows, {"attn_prefill", "attn_decode", "attn_kv_cache_save"})
        is_prefill = rows["prefill_chunk_size"] > 0
        prefill = self._grid(path, rows[is_prefill], "prefill_chunk_size", "time_stats.attn_prefill.median")
        decode = self._grid(path, rows[~is_prefill], "batch_size", "time_stats.attn_decode.median")
        kv_save = None
        column = "time_stats.attn_kv_cache_save.median"
        if column in rows.columns:
            times = rows[[column]].astype(float)
            self._check_times(path, times, "prefill_chunk_size and batch_size")
            tokens = rows[["prefill_chunk_size", "batch_size"]].max(axis=1).astype(float)  # as Vidur keys it
            kv_save = self._curve(path, pd.DataFrame({"x": tokens, "y": times[column] * 1e-3}), "tokens")
        else:
            log.warning("Vidur profile cost model: %s has no %s: the KV-cache write from the roofline", path, column)
        return prefill, decode, kv_save

    def _check_times(self, path: Path, times: pd.DataFrame, what: str) -> None:
        bad = ~(times.ge(0.0) & times.apply(lambda c: c.map(math.isfinite)))
        if bad.any().any():
            col = bad.any()[bad.any()].index[0]
            raise ConfigError("executor.profile", f"finite times >= 0 in every row of column {col}",
                              f"{path} ({int(bad[col].sum())} rows by {what} are not)")

    def _curve(self, path: Path, points: pd.DataFrame, what: str) -> Curve:
        # Repeated measurements of one x (Vidur's files have some): their mean.
        g = points.groupby("x")["y"].mean().sort_index()
        if g.empty:
            raise ConfigError("executor.profile", f"rows with {what}", str(path))
        return Curve(tuple(float(v) for v in g.index), tuple(float(v) for v in g.to_numpy()))

    def _grid(self, path: Path, rows: pd.DataFrame, first: str, column: str) -> Grid:
        kind = "prefill rows (prefill_chunk_size > 0)" if first == "prefill_chunk_size" else \
            "decode rows (prefill_chunk_size = 0)"
        if rows.empty:
            raise ConfigError("executor.profile", f"{kind} in attention.csv", str(path))
        times = rows[[column]].astype(float)
        self._check_times(path, times, f"{first} and kv_cache_size")
        keys, curves = [], []
        for value, group in rows.groupby(first):
            pts = pd.DataFrame({"x": group["kv_cache_size"].astype(float), "y": times.loc[group.index, column] * 1e-3})
            keys.append(float(value))
            curves.append(self._curve(path, pts, "kv_cache_size"))
        return Grid(tuple(keys), tuple(curves))

    # ----- prediction ---------------------------------------------------------------------
    def step_time_s(self, plan: StepPlan, share: float) -> float:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        t = self._full_gpu_s(plan)
        if share < 1.0:
            self._note("share", f"a share < 1 ({share:.2f}): the profile's full-GPU time scaled by the "
                                "roofline share model (a Vidur profile is measured on whole GPUs)")
            t *= self.roofline.step_time_s(plan, share) / self.roofline.step_time_s(plan, 1.0)
        return self.scale * t

    def resource_demands_s(self, plan: StepPlan) -> tuple[float, float]:
        compute, memory = self.roofline.resource_demands_s(plan)
        total = self.step_time_s(plan, 1.0)
        scale = total / max(compute, memory, 1e-12)
        return compute * scale, memory * scale

    def _full_gpu_s(self, plan: StepPlan) -> float:
        m = samples = 0
        chunks_sq = pairs_ck = 0.0            # prefill: sum c^2, sum c k
        n_prefill = n_decode = decode_ctx = 0
        p_pairs = p_kv = p_tok = d_pairs = d_kv = d_tok = 0  # for the roofline fallback
        for q in plan.seqs:
            new, ctx = q.num_new_tokens, q.num_context_tokens
            m += new
            samples += q.samples
            if q.is_prefill:
                n_prefill += 1
                chunks_sq += new * new
                pairs_ck += new * ctx
                p_pairs += new * ctx + new * (new + 1) // 2
                p_kv += ctx + new
                p_tok += new
            else:
                n_decode += 1
                decode_ctx += ctx
                d_pairs += new * ctx + new * (new + 1) // 2
                d_kv += ctx + new
                d_tok += new
        if m == 0:
            return 0.0
        rl, r = self.roofline, self._r
        layer = self._value(self.layer, m, self._roof_layer, "tokens (linear ops)")
        if self.prefill is None:
            attention = (rl._attention_s(p_pairs, p_kv, p_tok, self._prefill_ops, r)
                         + rl._attention_s(d_pairs, d_kv, d_tok, self._decode_ops, r))
        else:
            attention = 0.0
            if n_prefill:
                c = math.sqrt(chunks_sq)
                attention += self._grid_value(self.prefill, c, pairs_ck / c, self._roof_prefill, "prefill") \
                    * (1.0 + BATCHING_OVERHEAD * (n_prefill > 1))
            if n_decode:
                attention += self._grid_value(self.decode, n_decode, decode_ctx / n_decode, self._roof_decode,
                                              "decode") * (1.0 + BATCHING_OVERHEAD * (self._gqa and n_decode > 1))
        kv_write = (self._value(self.kv_save, m, self._roof_kv_write, "tokens (KV-cache write)")
                    if self.kv_save is not None else self._roof_kv_write(m))
        all_reduce = 2.0 * ring_all_reduce_s(rl._all_reduce_bytes_per_token * m, self.tp, rl.hardware)
        outside = rl.step_overhead_s + rl._embed_bytes_per_token * m / r[3] + rl._head_s(m, samples, r)
        return outside + self.model.num_layers * (layer + attention + kv_write + all_reduce)

    def _value(self, c: Curve, x: float, roof: Callable[[float], float], what: str) -> float:
        """The curve at x; outside its range, the nearest point x the roofline's growth."""
        if c.x[0] <= x <= c.x[-1]:
            return _lerp(c, x)
        edge, value = (c.x[-1], c.y[-1]) if x > c.x[-1] else (c.x[0], c.y[0])
        side = "largest" if x > edge else "smallest"
        self._note(f"{what} {side}", f"{x:g} {what} is past the profile's {side} ({edge:g}, {self.profile}): "
                                     "scaled from it by the roofline's growth")
        return value * roof(x) / roof(edge)

    def _grid_value(self, g: Grid, a: float, kv: float, roof: Callable[[float, float], float], what: str) -> float:
        """Bilinear in the grid: along kv_cache_size at the neighbouring profiled values of
        the first variable, then linear between them; outside, scaled by the roofline."""
        def at(i: int) -> float:
            return self._value(g.curves[i], kv, lambda k: roof(g.rows[i], k), f"kv_cache_size ({what})")
        rows = g.rows
        if rows[0] <= a <= rows[-1]:
            i = bisect.bisect_left(rows, a)
            if rows[i] == a:
                return at(i)
            w = (a - rows[i - 1]) / (rows[i] - rows[i - 1])
            return at(i - 1) * (1.0 - w) + at(i) * w
        i = len(rows) - 1 if a > rows[-1] else 0
        name = "prefill_chunk_size" if what == "prefill" else "batch_size"
        side = "largest" if i else "smallest"
        self._note(f"{name} {side}", f"{name} {a:g} is past the profile's {side} ({rows[i]:g}, {self.profile}): "
                                     "scaled from it by the roofline's growth")
        return at(i) * roof(a, kv) / roof(rows[i], kv)

    # The roofline's time of the same op, for growth outside the measured ranges.
    def _roof_layer(self, m: float) -> float:
        rl, r, ops = self.roofline, self._r, self.roofline._ops
        return (rl._gemms_s(m, ops.common_gemms, r) + rl._elementwise_s(m, ops.common_elementwise, r)
                + rl._mlp_s(m, ops.dense_gemms, ops.dense_elementwise, r))

    def _roof_kv_write(self, m: float) -> float:
        return self._kv_write_bytes_per_token * m / self._r[3] + self.roofline.hardware.kernel_floor_s

    def _roof_prefill(self, c: float, k: float) -> float:
        return self.roofline._attention_s(c * k + c * (c + 1) / 2, k + c, c, self._prefill_ops, self._r)

    def _roof_decode(self, b: float, k: float) -> float:
        return self.roofline._attention_s(b * (k + 1), b * (k + 1), b, self._decode_ops, self._r)

    def _note(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("Vidur profile cost model: %s", message)
