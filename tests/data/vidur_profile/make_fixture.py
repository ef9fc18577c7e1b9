"""Writes this folder's mlp.csv and attention.csv: a SYNTHETIC Vidur-format profile of
llama3_8b (32 heads, 8 KV heads, hidden 4096, MLP 14336, vocab 128256) at TP 1 and 2,
in the columns of microsoft/vidur's data/profiling/compute/<sku>/<model>/ files. Not a
measurement: times (ms, per layer, on one GPU of the TP group) are an A100-like roofline,
    GEMM [n x k] @ [k x o/tp]:  0.006 + 1e3 max(2 n k o/tp / 230e12, 2 (k o/tp + n (k + o/tp)) / 1.6e12)
    elementwise over w values:  0.004 + 1e3 (4 n w / 1.0e12)
    prefill attention c over k: 0.010 + 1e3 max(4 c (k + c/2) 32/tp 128 / 150e12, 2 (k + c) 8/tp 128 2 / 1.6e12)
    decode attention b over k:  0.010 + 1e3 (b (k + 1) 2 8/tp 128 2 / 1.5e12)
    KV write of n tokens:       0.004 + 1e3 (n 2 8/tp 128 2 / 1.0e12)
with min/max/mean/std = median x 0.97 / 1.05 / 1.01 / 0.01. Run: python make_fixture.py"""
import itertools
from pathlib import Path

import pandas as pd

H, HQ, HKV, D, F, V = 4096, 32, 8, 128, 14336, 128256
HERE = Path(__file__).parent


def gemm(n, k, o, tp):
    o = o / tp
    return 0.006 + 1e3 * max(2 * n * k * o / 230e12, 2 * (k * o + n * (k + o)) / 1.6e12)


def ew(n, width):
    return 0.004 + 1e3 * 4 * n * width / 1.0e12


def stats(op, median):
    return {f"time_stats.{op}.min": median * 0.97, f"time_stats.{op}.max": median * 1.05,
            f"time_stats.{op}.mean": median * 1.01, f"time_stats.{op}.median": median,
            f"time_stats.{op}.std": median * 0.01}


def mlp_rows():
    rows = []
    for tp, n in itertools.product((1, 2), (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)):
        ops = {"emb": ew(n, H), "input_layernorm": ew(n, H), "attn_pre_proj": gemm(n, H, (HQ + 2 * HKV) * D, tp),
               "attn_rope": ew(n, (HQ + HKV) * D / tp), "attn_post_proj": gemm(n, H * 1, H, tp),
               "post_attention_layernorm": ew(n, H), "mlp_up_proj": gemm(n, H, 2 * F, tp),
               "mlp_act": ew(n, 1.5 * F / tp), "mlp_down_proj": gemm(n, F, H, tp), "add": ew(n, 1.5 * H)}
        row = {}
        for op, t in ops.items():
            row |= stats(op, t)
        rows.append(row | dict(n_head=HQ, n_kv_head=HKV, n_embd=H, n_expanded_embd=F, vocab_size=V,
                               use_gated_mlp=True, num_tokens=n, num_tensor_parallel_workers=tp))
    rows.append(dict(rows[-1]))  # a repeated measurement, as real Vidur files have
    rows[-1]["time_stats.add.median"] *= 1.1
    return rows


def attention_rows():
    rows = []
    model = dict(n_embd=H, n_q_head=HQ, n_kv_head=HKV, block_size=16)
    for tp in (1, 2):
        kv_bytes = 2 * HKV / tp * D * 2
        for c, k in itertools.product((16, 64, 256, 1024, 2048), (0, 512, 2048, 4096)):
            t = 0.010 + 1e3 * max(4 * c * (k + c / 2) * HQ / tp * D / 150e12, (k + c) * kv_bytes / 1.6e12)
            rows.append(model | dict(num_tensor_parallel_workers=tp, batch_size=1, prefill_chunk_size=c,
                                     kv_cache_size=k) | stats("attn_input_reshape", 0.003)
                        | stats("attn_kv_cache_save", 0.004 + 1e3 * c * kv_bytes / 1.0e12)
                        | stats("attn_prefill", t) | stats("attn_output_reshape", 0.003))
        for b, k in itertools.product((1, 4, 16, 64, 256), (128, 512, 2048, 4096)):
            t = 0.010 + 1e3 * b * (k + 1) * kv_bytes / 1.5e12
            rows.append(model | dict(num_tensor_parallel_workers=tp, batch_size=b, prefill_chunk_size=0,
                                     kv_cache_size=k) | stats("attn_input_reshape", 0.003)
                        | stats("attn_kv_cache_save", 0.004 + 1e3 * b * kv_bytes / 1.0e12)
                        | stats("attn_decode", t) | stats("attn_output_reshape", 0.003))
    return rows


if __name__ == "__main__":
    pd.DataFrame(mlp_rows()).to_csv(HERE / "mlp.csv", index=False, float_format="%.6g")
    pd.DataFrame(attention_rows()).to_csv(HERE / "attention.csv", index=False, float_format="%.6g")
