"""executor=http (harness/http_run.py): against this project's server, and against a fake
server in a thread that streams like servers without token ids (several tokens per chunk,
EOS despite ignore_eos, errors)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("httpx")
fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from engines.request import Request, Status  # noqa: E402
from harness import http_run  # noqa: E402
from harness.run import run  # noqa: E402
from serve.launch import ServerProcess  # noqa: E402

# Servers and their worker processes load both cores: never beside the tests with a timed
# exit (tests/test_torch_procs.py), which share this xdist group (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("bounded_exit")
from tests.test_bench import cfg_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ["workload=synthetic", "workload.distribution=uniform", "workload.prompt_len=40",
            "workload.output_len=12", "workload.num_requests=10", "workload.rate=8", "plots=false",
            "progress=false"]


def test_chunk_token_counts_and_payloads():
    assert http_run.chunk_tokens({"text": "ab", "token_ids": [1, 2, 3]}, chat=False) == 3
    assert http_run.chunk_tokens({"text": "ab"}, chat=False) == 1
    assert http_run.chunk_tokens({"text": ""}, chat=False) == 0
    assert http_run.chunk_tokens({"delta": {"content": "x"}}, chat=True) == 1
    assert http_run.chunk_tokens({"delta": {"role": "assistant"}}, chat=True) == 0
    req = Request(1, 0.0, 3, 7, token_ids=[5, 6, 7])
    opts = http_run.HttpOptions("http://x", "m")
    path, body = http_run.payload(opts, req, None)
    assert path == "/v1/completions" and body["prompt"] == [5, 6, 7] and body["max_tokens"] == 7
    assert body["ignore_eos"] and body["stream"] and body["stream_options"] == {"include_usage": True}
    path, body = http_run.payload(http_run.HttpOptions("http://x", "m", api="chat", token_ids=False), req, "hi")
    assert path == "/v1/chat/completions" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert "return_token_ids" not in body


def test_a_run_against_our_server_writes_every_result_file(tmp_path):
    with ServerProcess(["engine=unified_chunked", "executor=torch", "model=tiny_llama", "executor.dtype=float32",
                        f"model.checkpoint={tmp_path / 'ckpt'}", "executor.kv_cache_bytes=33554432"]) as server:
        out = tmp_path / "run"
        result = run(cfg_for("executor=http", f"executor.url={server.url}", *WORKLOAD), out)
        chat = run(cfg_for("executor=http", f"executor.url={server.url}", "executor.api=chat",
                           "executor.max_concurrency=2", *WORKLOAD), tmp_path / "chat")
        again = run(cfg_for("executor=http", f"executor.url={server.url}", *WORKLOAD), tmp_path / "again")
        # A Hydra sweep over rates (with its comparison figure at the end), as with any executor.
        sweep = subprocess.run([sys.executable, "bench.py", "-m", "executor=http", f"executor.url={server.url}",
                                *[w for w in WORKLOAD if not w.startswith(("workload.rate", "plots"))],
                                "workload.rate=4,16", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert sweep.returncode == 0, sweep.stderr[-2000:]
        assert len(list((tmp_path / "sweep").rglob("summary.json"))) == 2
        assert (tmp_path / "sweep" / "compare.png").is_file()
        assert len(list((tmp_path / "sweep").rglob("timeline.png"))) == 2  # KV usage from /metrics
        # The goodput command works on it unchanged (two runs at doubled and halved SLOs).
        from harness import goodput
        goodput.main(["slo-scale", "--rate", "8", "--scales", "0.5,2", "--out", str(tmp_path / "goodput"),
                      "executor=http", f"executor.url={server.url}", *WORKLOAD])
    assert len(list((tmp_path / "goodput").rglob("summary.json"))) == 2
    # metrics.compare pairs the two runs of the same server, workload and rate (info only: real timings).
    from metrics import compare
    assert compare.main([str(tmp_path / "again"), str(out)]) == 0
    assert again.summary["engine"] == result.summary["engine"] == "http:tiny_llama"
    s = result.summary
    assert s["executor"] == "http" and s["server_model"] == "tiny_llama" and s["url"] == server.url
    assert s["num_finished"] == 10 and s["num_stopped_early"] == 0
    assert all(r.num_output_tokens == r.output_len == len(r.token_times_s) for r in result.requests)
    for name in ("config.yaml", "requests.csv", "steps.csv", "summary.json", "token_times.csv", "kv_usage.csv"):
        assert (out / name).is_file(), name
    kv = pd.read_csv(out / "kv_usage.csv")  # sampled from the server's /metrics during the run
    assert len(kv) >= 2 and kv["used_fraction"].between(0, 1).all() and kv["used_blocks"].max() > 0
    assert json.loads((out / "summary.json").read_text())["ttft_s"]["mean"] > 0
    assert chat.summary["num_finished"] == 10 and chat.summary["max_concurrency"] == 2


def test_kv_usage_is_read_from_ours_vllms_and_sglangs_metrics():
    ours = ('serve_kv_blocks_used{pool="kv0"} 30.0\nserve_kv_blocks_free{pool="kv0"} 90.0\n')
    assert http_run.kv_rows(ours, 1.5) == [(1.5, "kv0", 30.0, 0.25)]
    vllm = ('# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.4\n')
    [(t, pool, blocks, fraction)] = http_run.kv_rows(vllm, 2.0)
    assert (t, pool, fraction) == (2.0, "0", 0.4) and blocks != blocks  # NaN: vLLM gives a fraction only
    assert http_run.kv_rows("sglang:token_usage 0.5\n", 0.0)[0][3] == 0.5
    assert http_run.kv_rows("other_metric 1\n", 0.0) == []


def fake_app(mode: str):
    """Streams 5 tokens as 2 chunks (3 + 2, no token ids) with usage; `eos`: stops after 2
    tokens although ignore_eos was sent; `error`: 503 for prompts starting with 9."""
    app = fastapi.FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(body: dict):
        if mode == "error" and body["prompt"][0] == 9:
            return fastapi.responses.JSONResponse({"error": {"message": "busy"}}, status_code=503)
        n = 2 if mode == "eos" else body["max_tokens"]

        async def gen():
            for text, finish in (("abc", None), ("de", "stop" if mode == "eos" else "length")):
                await asyncio.sleep(0.01)
                yield "data: " + json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": finish}]}) + "\n\n"
            yield "data: " + json.dumps({"choices": [], "usage": {"completion_tokens": n}}) + "\n\n"
            yield "data: [DONE]\n\n"
        return fastapi.responses.StreamingResponse(gen(), media_type="text/event-stream")
    return app


class FakeServer:
    def __init__(self, mode: str) -> None:
        self.server = uvicorn.Server(uvicorn.Config(fake_app(mode), host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                port = self.server.servers[0].sockets[0].getsockname()[1]
                return f"http://127.0.0.1:{port}"
            threading.Event().wait(0.05)
        raise RuntimeError("the fake server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def drive(url: str, prompts: list[list[int]], output_len: int = 5) -> list[Request]:
    reqs = [Request(i, 0.01 * i, len(p), output_len, token_ids=p) for i, p in enumerate(prompts)]
    asyncio.run(http_run.drive(http_run.HttpOptions(url, "fake", token_ids=False), reqs, [None] * len(reqs)))
    return reqs


def test_tokens_come_from_the_usage_when_chunks_carry_several():
    with FakeServer("length") as url:
        reqs = drive(url, [[1, 2], [3, 4]])
    for r in reqs:
        assert r.status is Status.FINISHED and r.num_output_tokens == 5 and r.finish_reason == "length"
        t = r.token_times_s  # 1 per chunk, then the rest at the last chunk's time
        assert len(t) == 5 and t[0] < t[1] == t[2] == t[3] == t[4]


def test_a_server_that_ignores_ignore_eos_is_counted():
    with FakeServer("eos") as url:
        reqs = drive(url, [[1, 2]])
    assert reqs[0].status is Status.FINISHED and reqs[0].num_output_tokens == 2
    assert reqs[0].finish_reason == "stop" and http_run.stopped_early(reqs) == 1


def test_errors_are_recorded_per_request_and_the_run_goes_on():
    with FakeServer("error") as url:
        reqs = drive(url, [[1, 2], [9, 9], [3]])
    assert [r.status for r in reqs] == [Status.FINISHED, Status.REJECTED, Status.FINISHED]
    assert reqs[1].reject_reason == "HTTP 503: busy"
    refused = drive("http://127.0.0.1:9", [[1]])  # nothing listens on port 9
    assert refused[0].status is Status.REJECTED and "ConnectError" in refused[0].reject_reason


def test_a_server_that_is_not_there_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "bench.py", "executor=http", "executor.url=http://127.0.0.1:9",
                          f"hydra.run.dir={tmp_path}", *WORKLOAD], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "executor.url=http://127.0.0.1:9" in out.stderr
    bad = subprocess.run([sys.executable, "bench.py", "executor=http", "executor.url=localhost:8000",
                          f"hydra.run.dir={tmp_path}", *WORKLOAD], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "executor.url" in bad.stderr and "http://" in bad.stderr
