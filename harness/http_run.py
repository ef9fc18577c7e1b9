"""executor=http: the run's workload against any OpenAI-compatible server (vLLM, SGLang,
the semi-PD server, `python -m serve`), with the same result files as any run.

An asyncio client (httpx) sends each request at its arrival time (or when a slot of
`executor.max_concurrency` frees, as vLLM's `bench serve --max-concurrency`; the request's
clock then starts when it is sent, as there), streams the reply and stamps every chunk on
arrival. Token counts come from what the server says, never from text: each chunk's
`token_ids` where the server returns them (vLLM's and this project's `return_token_ids`),
else one token per non-empty chunk; the final `usage.completion_tokens` is the total (a
chunk carrying several tokens gives them its time). Output lengths are forced with
`max_tokens` and `ignore_eos`; a server that stops early anyway is counted
(`num_stopped_early`) and logged. An HTTP error, a broken stream or a timeout ends that
request as `rejected` with the reason in requests.csv; the run goes on. Nothing here reads
the server's internals: summary.json records the URL, the API and the model the server
reports. What the server publishes on /metrics about its KV cache is sampled every
KV_SAMPLE_S into kv_usage.csv and timeline.png, as any run has them: this project's
server's blocks per pool (serve_kv_blocks_used / _free), vLLM's kv_cache_usage_perc (or the
older gpu_cache_usage_perc), SGLang's token_usage; a server with none of them gets neither
file, and the log says so.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import UserError
from engines.request import Request, Status

log = logging.getLogger(__name__)
KV_SAMPLE_S = 0.5
# /metrics samples that give a KV pool's used fraction directly (vLLM v1, older vLLM, SGLang).
KV_FRACTION_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")


@dataclass(frozen=True)
class HttpOptions:
    url: str                    # the server's base URL, e.g. http://127.0.0.1:8000
    model: str                  # the `model` every request names
    api: str = "completions"    # completions (prompt as token ids) | chat (prompt as text)
    temperature: float = 0.0
    ignore_eos: bool = True
    max_concurrency: int | None = None
    request_timeout_s: float = 600.0
    token_ids: bool = True      # ask for each chunk's token ids (return_token_ids)


class HttpError(UserError):
    """The server cannot be used (unreachable, no such model): printed without a traceback."""


def server_models(url: str, timeout_s: float = 30.0) -> list[str]:
    """The model ids GET /v1/models lists; HttpError naming executor.url if that fails."""
    import httpx
    try:
        r = httpx.get(url.rstrip("/") + "/v1/models", timeout=timeout_s)
        r.raise_for_status()
        return [m["id"] for m in r.json()["data"]]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as err:
        raise HttpError(f"executor.url={url}: GET /v1/models failed ({type(err).__name__}: {err}); expected an "
                        "OpenAI-compatible server there") from None


def payload(opts: HttpOptions, req: Request, text: str | None) -> tuple[str, dict]:
    """(path, JSON body) of one streaming request."""
    body = {"model": opts.model, "max_tokens": req.output_len, "temperature": opts.temperature, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": opts.ignore_eos}
    if opts.token_ids:
        body["return_token_ids"] = True
    if opts.api == "chat":
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": text}]}
    return "/v1/completions", {**body, "prompt": list(req.token_ids)}


def chunk_tokens(choice: dict, chat: bool) -> int:
    """How many tokens a streamed choice carries: its token_ids, else 1 if it has text."""
    ids = choice.get("token_ids")
    if ids is not None:
        return len(ids)
    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
    return 1 if text else 0


async def _one(client, opts: HttpOptions, req: Request, text: str | None, t0: float,
               slots: asyncio.Semaphore | None) -> None:
    """Send `req` at its arrival time and fill in its token times and end."""
    now = lambda: time.perf_counter() - t0  # noqa: E731
    await asyncio.sleep(max(0.0, req.arrival_s - now()))
    if slots is not None:
        await slots.acquire()
        req.arrival_s = now()  # as vLLM's bench: latency counts from when it is sent
    path, body = payload(opts, req, text)
    req.status = Status.RUNNING
    usage_tokens, finish = None, None
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                raw = (await r.aread()).decode(errors="replace")
                req.reject(f"HTTP {r.status_code}: {_error_message(raw)}", now())
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(_error_message(data))
                t = now()
                for choice in chunk.get("choices") or []:
                    for _ in range(chunk_tokens(choice, opts.api == "chat")):
                        req.append_output_token(None, t)
                    finish = choice.get("finish_reason") or finish
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
    except Exception as err:  # timeout, broken connection, bad JSON: this request fails, the run goes on
        reason = "timeout" if "Timeout" in type(err).__name__ else f"{type(err).__name__}: {err}"
        req.reject(f"{reason} after {req.num_output_tokens} tokens", now())
        return
    finally:
        if slots is not None:
            slots.release()
    while usage_tokens is not None and req.num_output_tokens < usage_tokens:  # several tokens in a chunk
        req.append_output_token(None, req.token_times_s[-1] if req.token_times_s else now())
    if req.num_output_tokens == 0:
        req.reject(f"the server returned no tokens (finish_reason {finish!r})", now())
        return
    # Finished when its last token arrived (as vLLM's bench counts latency, and as the
    # in-process driver does): the usage chunk and [DONE] after it are not the request's time.
    req.status, req.finish_s = Status.FINISHED, req.token_times_s[-1]
    req.finish_reason = "length" if req.num_output_tokens >= req.output_len else (finish or "stop")


def _error_message(raw: str) -> str:
    try:
        err = json.loads(raw)
        err = err.get("error", err) if isinstance(err, dict) else err
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except (json.JSONDecodeError, AttributeError):
        return raw[:300]


def kv_rows(metrics_text: str, t_s: float) -> list[tuple[float, str, float, float]]:
    """(time_s, pool, used_blocks, used_fraction) from one /metrics page (used_blocks NaN
    where the server gives only a fraction); [] if it publishes no KV usage."""
    from prometheus_client.parser import text_string_to_metric_families
    used: dict[str, float] = {}
    free: dict[str, float] = {}
    rows = []
    for family in text_string_to_metric_families(metrics_text):
        for smp in family.samples:
            pool = smp.labels.get("pool") or smp.labels.get("engine") or "kv"
            if smp.name == "serve_kv_blocks_used":
                used[pool] = smp.value
            elif smp.name == "serve_kv_blocks_free":
                free[pool] = smp.value
            elif smp.name in KV_FRACTION_METRICS:
                rows.append((t_s, pool, float("nan"), smp.value))
    for pool, u in used.items():
        total = u + free.get(pool, 0.0)
        rows.append((t_s, pool, u, u / total if total else 0.0))
    return rows


async def _sample_kv(client, t0: float, out: list, stop: asyncio.Event) -> None:
    """Every KV_SAMPLE_S until `stop`: the server's KV usage from /metrics into `out`."""
    while not stop.is_set():
        try:
            r = await client.get("/metrics", timeout=5.0)
            rows = kv_rows(r.text, time.perf_counter() - t0) if r.status_code == 200 else []
        except Exception:  # no /metrics, or not Prometheus text: no timeline, the run goes on
            rows = []
        if not rows:
            return
        out.extend(rows)
        try:
            await asyncio.wait_for(stop.wait(), KV_SAMPLE_S)
        except TimeoutError:
            pass


async def drive(opts: HttpOptions, requests: list[Request], texts: list[str | None],
                kv: list | None = None) -> float:
    """Run every request against the server; returns the run's wall time (s). With `kv` a
    list, the server's KV usage is sampled into it meanwhile (kv_rows)."""
    import httpx
    limits = httpx.Limits(max_connections=(opts.max_concurrency or len(requests) or 1) + 1,
                          max_keepalive_connections=64)
    timeout = httpx.Timeout(opts.request_timeout_s, connect=30.0)
    slots = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
    async with httpx.AsyncClient(base_url=opts.url.rstrip("/"), timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_kv(client, t0, kv, stop)) if kv is not None else None
        await asyncio.gather(*(_one(client, opts, r, t, t0, slots) for r, t in zip(requests, texts)))
        wall_s = time.perf_counter() - t0
        if sampler is not None:
            stop.set()
            await sampler
        return wall_s


def stopped_early(requests: list[Request]) -> int:
    """Finished requests that ended before their output_len (ignore_eos not honoured)."""
    return sum(r.status is Status.FINISHED and r.num_output_tokens < r.output_len for r in requests)


def run_http(cfg, run_dir: Path, config_yaml: str):
    """harness.run.run for executor=http: workload -> server -> the run directory."""
    import dataclasses

    from harness.run import RunResult, give_token_ids
    from harness.versions import versions
    import pandas as pd

    from metrics.plots import plot_run, run_frames
    from metrics.timeline_plot import plot_timelines
    from metrics.results import token_times_frame, write_run_dir
    from metrics.summary import summarize
    from workloads.config import build_workload
    from workloads.tokenizer import load_tokenizer

    ex = cfg.executor
    models = server_models(ex.url)
    model = ex.model or (models[0] if len(models) == 1 else None)
    if model is None or model not in models:
        raise HttpError(f"executor.model={ex.model}: the server at {ex.url} serves {models}; name one of them")
    # The real prompts where the dataset has them (completions takes them as ids), else seeded ids.
    workload = build_workload(dataclasses.replace(cfg.workload, keep_token_ids=True), num_gpus=1)
    requests = [Request.from_spec(s) for s in workload.specs]
    tokenizer = load_tokenizer(cfg.workload.tokenizer)
    # Ordinary tokens only (no special ids): the server may treat those differently.
    give_token_ids(requests, tokenizer.get_vocab_size(with_added_tokens=False), cfg.workload.seed)
    texts = [tokenizer.decode(r.token_ids) if ex.api == "chat" else None for r in requests]
    opts = HttpOptions(ex.url, model, ex.api, ex.temperature, ex.ignore_eos, ex.max_concurrency,
                       ex.request_timeout_s, ex.return_token_ids)
    log.info("executor=http: %d requests to %s (%s, model %s)", len(requests), ex.url, ex.api, model)
    kv: list[tuple[float, str, float, float]] = []
    wall_s = asyncio.run(drive(opts, requests, texts, kv))
    if not kv:
        log.warning("the server at %s publishes no KV usage on /metrics (%s or serve_kv_blocks_used): "
                    "no kv_usage.csv or timeline.png", ex.url, ", ".join(KV_FRACTION_METRICS))
    early = stopped_early(requests)
    if early and ex.ignore_eos:
        log.warning("%d requests stopped before max_tokens although ignore_eos was sent: the server at %s "
                    "does not honour ignore_eos (their output lengths are the server's)", early, ex.url)
    label = ex.label or f"http:{model}"  # names the server in comparisons (metrics.compare keys on it)
    summary = {"engine": label, "engine_label": label, "design": "external",
               "executor": "http", "url": ex.url, "api": ex.api, "server_model": model, "model": cfg.model.name,
               "hardware": cfg.hardware.name, "workload": cfg.workload.name, "workload_source": workload.source_used,
               "num_gpus": 1, "rate_per_gpu": cfg.workload.rate, "rate_unit": "server", "num_rate_units": 1,
               "total_rate": workload.total_rate, "tag": cfg.tag, "max_concurrency": ex.max_concurrency,
               "ignore_eos": ex.ignore_eos, "num_stopped_early": early, "wall_s": wall_s}
    summary |= summarize(requests, slo_ttft_s=cfg.slo.ttft_target_s, slo_tpot_s=cfg.slo.tpot_target_s,
                         tpot_definition=cfg.slo.tpot_definition)
    summary["num_unfinished"] = 0  # every request ends finished or rejected (with its reason)
    summary["versions"] = versions()
    extras = {"token_times": token_times_frame(requests)}
    if kv:
        extras["kv_usage"] = pd.DataFrame(kv, columns=["time_s", "pool", "used_blocks", "used_fraction"])
    write_run_dir(run_dir, config_yaml=config_yaml, requests=requests, steps=[], summary=summary, extra_csvs=extras)
    if cfg.plots:
        plot_run(run_frames(summary, requests, []), run_dir / "latency.png")
        if kv:
            plot_timelines(extras["kv_usage"], None, run_dir / "timeline.png",
                           title=f"{label} | {cfg.workload.name} | {cfg.workload.rate} req/s")
    return RunResult(summary, requests, [], run_dir)
