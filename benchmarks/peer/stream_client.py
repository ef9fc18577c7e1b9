"""A streaming OpenAI-completions client on stdlib asyncio (no aiohttp in the project venv,
and none is added): sends each request at its arrival time and stamps every output token.

Per request: POST /v1/completions with the prompt as token ids, max_tokens=output_len,
ignore_eos, temperature 0, stream=True, return_token_ids=True (vLLM extension: each SSE
chunk carries its new token ids, so tokens are counted exactly even when the server merges
several into one chunk; all tokens of a chunk get the chunk's arrival time). Times are
seconds since the run's t0 (time.perf_counter), like the project's wall-clock driver.
Only 127.0.0.1: the host is fixed.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class StreamResult:
    id: int
    arrival_s: float          # scheduled send time (the metric's arrival)
    sent_s: float = 0.0       # when the request actually went out (client lateness check)
    token_times_s: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    num_chunks: int = 0
    error: str = ""


async def _read_chunked(reader: asyncio.StreamReader):
    """Yield the body of an HTTP/1.1 chunked response, chunk by chunk."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)  # CRLF
        yield data


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        async for data in _read_chunked(reader):
            yield data
    else:  # Content-Length or close-delimited
        while data := await reader.read(65536):
            yield data


async def stream_completion(port: int, payload: dict, result: StreamResult, t0: float,
                            timeout_s: float) -> None:
    body = json.dumps(payload).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(head + body)
            await writer.drain()
            status = await reader.readline()
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            if b" 200 " not in status:
                text = b"".join([d async for d in _body(reader, headers)])
                result.error = f"{status.decode().strip()}: {text[:300].decode(errors='replace')}"
                return
            buf = b""
            async for data in _body(reader, headers):
                now = time.perf_counter() - t0
                buf += data
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    _on_event(event, now, result)
    except TimeoutError:
        result.error = f"timed out after {timeout_s:.0f} s with {len(result.token_ids)} tokens"
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if writer is not None:
            writer.close()


def _on_event(event: bytes, now: float, result: StreamResult) -> None:
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        msg = json.loads(data)
        if "error" in msg:
            result.error = str(msg["error"])[:300]
            return
        for choice in msg.get("choices") or []:
            ids = choice.get("token_ids") or []
            if ids:
                result.num_chunks += 1
                result.token_ids.extend(ids)
                result.token_times_s.extend([now] * len(ids))


async def run_requests(port: int, model: str, requests: list[tuple[int, float, list[int], int]],
                       *, timeout_s: float, deadline_s: float) -> tuple[list[StreamResult], float]:
    """Send (id, arrival_s, prompt_ids, output_len) at their arrival times; returns the
    results and t0 (perf_counter) so callers can relate other clocks. Everything is bounded:
    each request by `timeout_s`, the whole run by `deadline_s`."""
    t0 = time.perf_counter()
    results = [StreamResult(rid, arr) for rid, arr, _, _ in requests]

    async def one(res: StreamResult, prompt: list[int], output_len: int) -> None:
        delay = res.arrival_s - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        res.sent_s = time.perf_counter() - t0
        payload = {"model": model, "prompt": prompt, "max_tokens": output_len, "ignore_eos": True,
                   "temperature": 0.0, "stream": True, "return_token_ids": True}
        await stream_completion(port, payload, res, t0, timeout_s)

    lags: list[tuple[float, float]] = []  # (time, how late the loop woke): is the CLIENT stalled?

    async def heartbeat(period_s: float = 0.01) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(period_s)
            lag = time.perf_counter() - t - period_s
            if lag > 0.05:
                lags.append((t + period_s - t0, lag))

    beat = asyncio.create_task(heartbeat())
    tasks = [asyncio.create_task(one(res, p, n)) for res, (_, _, p, n) in zip(results, requests)]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    beat.cancel()
    run_requests.loop_lags = lags
    for t in pending:
        t.cancel()
    for res in results:
        if not res.error and len(res.token_ids) == 0 and any(t in pending for t in tasks):
            res.error = res.error or f"run deadline {deadline_s:.0f} s"
    return results, t0
