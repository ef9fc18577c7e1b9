"""Load and faults on loopback: `python -m serve` above its capacity for a fixed time, with a
share of clients disconnecting at random points; then the checks a server must pass.

    python benchmarks/serve_load.py [--engine unified_chunked] [--model tiny_llama] \
        [--duration-s 300] [--rate 30] [--disconnect-share 0.3] [--max-pending 64] [--out DIR]

Clients arrive as a Poisson process at --rate (req/s), each a streaming completion of a
random prompt (16-512 tokens) and output (8-256 tokens, ignore_eos). A --disconnect-share of
them close the connection at a random point: before the reply starts, or after a random
number of chunks. Bounded: arrivals stop after --duration-s (and --max-requests), every
request has a timeout, and the drain afterwards has one; the server is stopped on exit,
also on a failure or Ctrl-C (serve/launch.py).

Checks (exit 1 if any fails), all read from the server itself:
- accounting: every request the clients sent is in the server's counters, finished by
  reason (length, stop, abort, rejected) or refused (HTTP 4xx/5xx before it was queued);
- after the drain: no request pending, every KV block free (/metrics);
- memory: the server's resident memory (its process and its worker processes) over the
  last third of the run is within --memory-slack of the middle third (flat, no leak);
- /health still answers 200.
Writes load.json (counts, checks, numbers) and timeline.csv (every sample) to --out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
from collections import Counter
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from serve.launch import ServerProcess  # noqa: E402

SAMPLE_EVERY_S = 2.0


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every /metrics sample: (name, sorted labels) -> value."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    family, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in family:
                family.add(child)
                frontier.append(child)
    rss = 0
    for p in family:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss


async def client(http: httpx.AsyncClient, model: str, rng: random.Random, disconnect_share: float,
                 timeout_s: float, counts: Counter) -> None:
    prompt = [rng.randrange(100, 120000) for _ in range(rng.randint(16, 512))]
    body = {"model": model, "prompt": prompt, "max_tokens": rng.randint(8, 256), "temperature": 0,
            "stream": True, "ignore_eos": True}
    leave_after = rng.randint(-1, 20) if rng.random() < disconnect_share else None  # -1: before the reply
    counts["sent"] += 1
    try:
        async with asyncio.timeout(timeout_s):
            if leave_after == -1:  # give up before the reply starts
                task = asyncio.create_task(http.post("/v1/completions", json=body))
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, httpx.HTTPError):
                    pass
                counts["left_before_reply"] += 1
                return
            async with http.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    counts[f"http_{r.status_code}"] += 1
                    return
                chunks = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunks += 1
                        if leave_after is not None and chunks > leave_after:
                            counts["left_mid_stream"] += 1
                            return  # leaving the block closes the connection
                counts["completed"] += 1
    except TimeoutError:
        counts["timeout"] += 1
    except httpx.HTTPError as err:
        counts[f"error_{type(err).__name__}"] += 1


async def load(url: str, model: str, *, duration_s: float, rate: float, max_requests: int,
               disconnect_share: float, timeout_s: float, seed: int, sample) -> dict[str, int]:
    rng = random.Random(seed)
    counts = Counter({k: 0 for k in ("sent", "completed", "left_before_reply", "left_mid_stream")})
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout_s, connect=30.0), limits=limits) as http:
        tasks, start, next_sample = [], time.monotonic(), 0.0
        while time.monotonic() - start < duration_s and counts["sent"] < max_requests:
            await asyncio.sleep(rng.expovariate(rate))
            tasks.append(asyncio.create_task(client(http, model, random.Random(rng.random()), disconnect_share,
                                                    timeout_s, counts)))
            if time.monotonic() - start >= next_sample:
                await asyncio.to_thread(sample, time.monotonic() - start)
                next_sample += SAMPLE_EVERY_S
        await asyncio.gather(*tasks)
    return dict(counts)


def run_load(args, log=print) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"engine={args.engine}", "executor=torch", f"model={args.model}",
                 f"serve.max_pending_requests={args.max_pending}", *args.overrides]
    timeline: list[dict] = []
    with ServerProcess(overrides, log_path=out / "server.log") as server:
        pid = server.proc.pid

        def sample(t_s: float) -> None:
            m = scrape(server.url)
            timeline.append({"t_s": round(t_s, 2), "rss_bytes": tree_rss_bytes(pid),
                             "pending": total(m, "serve_num_requests_pending"),
                             "kv_used": total(m, "serve_kv_blocks_used")})
        sample(0.0)
        log(f"server up at {server.url}; {args.duration_s:.0f} s of load at {args.rate:g} req/s")
        counts = asyncio.run(load(server.url, args.model, duration_s=args.duration_s, rate=args.rate,
                                  max_requests=args.max_requests, disconnect_share=args.disconnect_share,
                                  timeout_s=args.request_timeout_s, seed=args.seed, sample=sample))
        drained_end = time.monotonic() + args.drain_timeout_s
        while time.monotonic() < drained_end and total(scrape(server.url), "serve_num_requests_pending") > 0:
            time.sleep(0.5)
        sample(args.duration_s + 1.0)
        final = scrape(server.url)
        health = httpx.get(server.url + "/health", timeout=10).status_code
    finished = {dict(lbl).get("finish_reason"): v for (n, lbl), v in final.items() if n == "serve_requests_total"}
    refused = {dict(lbl).get("status"): v for (n, lbl), v in final.items() if n == "serve_http_refused_total"}
    server_total = sum(finished.values()) + sum(refused.values())
    third = max(1, len(timeline) // 3)
    middle = statistics.median(s["rss_bytes"] for s in timeline[third:2 * third] or timeline)
    last = statistics.median(s["rss_bytes"] for s in timeline[2 * third:])
    checks = {
        "accounting: every request sent is in the server's counters": server_total == counts["sent"],
        "no request pending after the drain": total(final, "serve_num_requests_pending") == 0,
        "every KV block free after the drain": total(final, "serve_kv_blocks_used") == 0,
        f"memory flat: last third within {args.memory_slack:.0%} of the middle third": last <= middle * (1 + args.memory_slack),
        "/health answers 200": health == 200,
    }
    result = {"args": {k: v for k, v in vars(args).items()}, "client_counts": counts,
              "server_finished_by_reason": finished, "server_refused_by_status": refused,
              "server_total": server_total, "rss_middle_third_bytes": middle, "rss_last_third_bytes": last,
              "rss_growth": last / middle - 1, "peak_pending": max(s["pending"] for s in timeline),
              "checks": checks, "passed": all(checks.values())}
    (out / "load.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    with (out / "timeline.csv").open("w") as f:
        f.write("t_s,rss_bytes,pending,kv_used\n")
        for s in timeline:
            f.write(f"{s['t_s']},{s['rss_bytes']},{s['pending']:g},{s['kv_used']:g}\n")
    for name, ok in checks.items():
        log(f"{'PASS' if ok else 'FAIL'}  {name}")
    log(f"client: {counts}; server finished {finished}, refused {refused}; RSS {middle / 2**20:.0f} -> "
        f"{last / 2**20:.0f} MiB ({result['rss_growth']:+.1%})")
    return result


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="unified_chunked")
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--duration-s", type=float, default=300.0)
    ap.add_argument("--rate", type=float, default=30.0, help="client arrivals per second")
    ap.add_argument("--max-requests", type=int, default=50_000)
    ap.add_argument("--disconnect-share", type=float, default=0.3)
    ap.add_argument("--max-pending", type=int, default=64, help="the server's serve.max_pending_requests")
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--drain-timeout-s", type=float, default=120.0)
    ap.add_argument("--memory-slack", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/serve_load")
    ap.add_argument("overrides", nargs="*", help="more server overrides (e.g. executor.dtype=float32)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(0 if run_load(parse_args())["passed"] else 1)
