"""What serving over HTTP adds: the same design, workload and seed run in-process by the
harness (`bench.py executor=torch`) and behind `python -m serve`, measured by
`bench.py executor=http`; mean TTFT and TPOT of both (issue 14: within 10 % at a light rate).

    python benchmarks/serve_overhead.py [--engines unified_chunked,semipd,disagg] \
        [--model small_llama] [--rate 1] [--num-requests 60] [--rounds 2] \
        [--out benchmarks/results/<date>/serve_overhead]

Per engine and round, in alternating order: one in-process run, and one HTTP run against a
server started for it (then stopped, so the two never share the cores). The workload is the
ShareGPT-like synthetic one (seed 0): the same arrival times and prompt and output lengths on
both sides (output lengths forced over HTTP with max_tokens + ignore_eos); each side draws its
own seeded prompt ids (a random-weight model's speed does not depend on them). Writes overhead.md and overhead.json: every run's means and, per engine, the
ratio of the medians (HTTP / in-process).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.launch import ServerProcess  # noqa: E402


def workload(args) -> list[str]:
    return ["workload=synthetic", "workload.distribution=sharegpt_like", f"workload.num_requests={args.num_requests}",
            f"workload.rate={args.rate}", "workload.seed=0", "plots=false", "progress=false"]


def means(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {"ttft_ms": s["ttft_s"]["mean"] * 1e3, "tpot_ms": s["tpot_s"]["mean"] * 1e3, "finished": s["num_finished"]}


def in_process(engine: str, args, out: Path) -> dict:
    cmd = [sys.executable, "bench.py", f"engine={engine}", "executor=torch", f"model={args.model}", "hardware=cpu",
           *workload(args), f"hydra.run.dir={out}"]
    with open(f"{out}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=True)
    return means(out)


def over_http(engine: str, args, out: Path) -> dict:
    with ServerProcess([f"engine={engine}", f"model={args.model}", "hardware=cpu"], log_path=f"{out}.server.log") as s:
        cmd = [sys.executable, "bench.py", "executor=http", f"executor.url={s.url}", f"model={args.model}",
               *workload(args), f"hydra.run.dir={out}"]
        with open(f"{out}.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=True)
    return means(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default="unified_chunked,semipd,disagg")
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=f"results/serve_overhead_{time.strftime('%Y%m%d_%H%M%S')}")
    args = ap.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(args.rounds):
        for engine in args.engines.split(","):
            for mode in (("inprocess", "http") if k % 2 == 0 else ("http", "inprocess")):
                d = out / f"{engine}_r{k}_{mode}"
                m = in_process(engine, args, d) if mode == "inprocess" else over_http(engine, args, d)
                rows.append({"engine": engine, "round": k, "mode": mode, **m})
                print(f"{engine:16s} round {k} {mode:9s}: TTFT {m['ttft_ms']:.1f} ms, TPOT {m['tpot_ms']:.2f} ms",
                      flush=True)
    ratios = {}
    for engine in args.engines.split(","):
        med = {mode: {key: statistics.median(r[key] for r in rows if r["engine"] == engine and r["mode"] == mode)
                      for key in ("ttft_ms", "tpot_ms")} for mode in ("inprocess", "http")}
        ratios[engine] = {key: med["http"][key] / med["inprocess"][key] for key in ("ttft_ms", "tpot_ms")}
    (out / "overhead.json").write_text(json.dumps({"args": vars(args), "rows": rows, "http_over_inprocess": ratios},
                                                  indent=1) + "\n")
    lines = [f"# HTTP server vs in-process: {args.model}, {args.num_requests} ShareGPT-like requests at "
             f"{args.rate:g} req/s (seed 0), {args.rounds} rounds", "",
             "| engine | round | mode | mean TTFT ms | mean TPOT ms | finished |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['round']} | {r['mode']} | {r['ttft_ms']:.1f} | {r['tpot_ms']:.2f} | "
              f"{r['finished']} |" for r in rows]
    lines += ["", "| engine | TTFT http / in-process | TPOT http / in-process |", "|---|---|---|"]
    lines += [f"| {e} | {r['ttft_ms']:.3f} | {r['tpot_ms']:.3f} |" for e, r in ratios.items()]
    (out / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
