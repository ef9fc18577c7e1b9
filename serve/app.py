"""The OpenAI-compatible HTTP API over an EngineService (FastAPI).

Routes: POST /v1/completions and /v1/chat/completions (streaming as server-sent events, or
one JSON reply), GET /v1/models, /health, /metrics. Errors are OpenAI-shaped JSON: 400 for
a malformed body or field, a prompt past the context, options not implemented; 404 for
another model; 413 for a body over serve.max_body_bytes; 503 when serve.max_pending_requests
are unfinished (no unbounded queue) or the engine failed. A client that disconnects aborts
its request (engines/engine.py, Engine.abort), which frees its KV blocks.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from tokenizers import Tokenizer

from serve.config import ServeConfig
from serve.protocol import ChatRequest, CompletionRequest, ServeError, validation_message
from serve.service import EngineService, Event, Overloaded, Stream
from serve.text import Detokenizer, chat_prompt_ids, text_prompt_ids

# How often a non-streaming handler checks whether its client is still there.
DISCONNECT_POLL_S = 0.5


def create_app(service: EngineService, tokenizer: Tokenizer, settings: ServeConfig, model_name: str) -> FastAPI:
    app = FastAPI(title="semipd-bench server", docs_url=None, redoc_url=None)
    created = int(time.time())

    @app.exception_handler(ServeError)
    async def serve_error(_: Request, err: ServeError) -> JSONResponse:
        if not err.queued:
            service.metrics.refused.labels(str(err.status)).inc()
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/health")
    async def health() -> Response:
        if service.error is not None:
            return JSONResponse({"status": "failed", "error": service.error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "semipd-bench", "max_model_len": service.max_model_len}]}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = _parse(CompletionRequest, await _read_body(request, settings.max_body_bytes))
        _check_model_and_options(body, model_name)
        if isinstance(body.prompt, str):
            if not body.prompt:
                raise ServeError(400, "prompt is empty", "prompt")
            prompt_ids = text_prompt_ids(tokenizer, body.prompt)
        else:
            prompt_ids = body.prompt
        return await _generate(request, body, prompt_ids, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = _parse(ChatRequest, await _read_body(request, settings.max_body_bytes))
        _check_model_and_options(body, model_name)
        return await _generate(request, body, chat_prompt_ids(tokenizer, body.messages), body.output_limit,
                               chat=True)

    async def _generate(request: Request, body, prompt_ids: list[int], max_tokens: int | None,
                        chat: bool) -> Response:
        _check_prompt(prompt_ids, service.vocab_size)
        context = service.max_model_len
        if len(prompt_ids) > settings.max_prompt_tokens:
            raise ServeError(400, f"the prompt has {len(prompt_ids)} tokens; this server takes at most "
                                  f"{settings.max_prompt_tokens} (serve.max_prompt_tokens)", "prompt")
        if max_tokens is None:  # chat without a limit: up to the context, as vLLM
            max_tokens = max(1, min(context - len(prompt_ids), settings.max_tokens))
        if max_tokens > settings.max_tokens:
            raise ServeError(400, f"max_tokens is {max_tokens}; this server generates at most "
                                  f"{settings.max_tokens} (serve.max_tokens)", "max_tokens")
        if len(prompt_ids) + max_tokens > context:
            raise ServeError(400, f"This model's maximum context length is {context} tokens. However, you "
                                  f"requested {len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the "
                                  f"prompt, {max_tokens} for the completion). Please reduce the prompt or "
                                  "max_tokens.", "max_tokens")
        stream = Stream(prompt_ids, max_tokens, body.temperature, body.ignore_eos)
        try:
            service.submit(stream)
        except (Overloaded, RuntimeError) as err:  # too many unfinished, or the engine failed
            raise ServeError(503, str(err)) from None
        first = await stream.events.get()
        if first.kind == "rejected":
            raise ServeError(400, f"the engine cannot serve this request: {first.message}", queued=True)
        if first.kind == "error":
            raise ServeError(500, first.message, queued=True)
        reply = _Reply(model_name, prompt_ids, chat, body.return_token_ids, Detokenizer(tokenizer))
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(_sse(stream, reply, usage), media_type="text/event-stream")
        whole = await _collect(request, stream, reply)
        # None: the client went away and its request was aborted; nobody reads this reply.
        return JSONResponse(whole) if whole is not None else Response(status_code=499)

    async def _sse(stream: Stream, reply: "_Reply", include_usage: bool) -> AsyncIterator[str]:
        try:
            if reply.chat:
                yield _event(reply.chunk("", [], None, role=True))
            while True:
                ev = await stream.events.get()
                if ev.kind == "error":
                    yield _event(ServeError(500, ev.message).body())
                    break
                text = reply.detok.add(ev.token_ids, final=ev.finish_reason is not None)
                reply.num_output_tokens += len(ev.token_ids)
                yield _event(reply.chunk(text, ev.token_ids, ev.finish_reason))
                if ev.finish_reason is not None:
                    break
            if include_usage:
                yield _event(reply.usage_chunk())
            yield "data: [DONE]\n\n"
        finally:  # also when the client went away (the response task is cancelled)
            service.abort(stream)

    async def _collect(request: Request, stream: Stream, reply: "_Reply") -> dict | None:
        ids: list[int] = []
        try:
            while True:
                try:
                    ev: Event = await asyncio.wait_for(stream.events.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return None
                    continue
                if ev.kind == "error":
                    raise ServeError(500, ev.message, queued=True)
                ids.extend(ev.token_ids)
                if ev.finish_reason is not None:
                    reply.num_output_tokens = len(ids)
                    return reply.whole(reply.detok.add(ids, final=True), ids, ev.finish_reason)
        finally:
            service.abort(stream)

    return app


class _Reply:
    """The OpenAI response objects of one request (completion or chat, chunk or whole)."""

    def __init__(self, model: str, prompt_ids: list[int], chat: bool, token_ids: bool, detok: Detokenizer) -> None:
        self.model, self.prompt_ids, self.chat, self.token_ids, self.detok = model, prompt_ids, chat, token_ids, detok
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.num_output_tokens = 0

    def _head(self, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, text: str, ids: list[int], finish: str | None, *, chunk: bool, role: bool = False) -> dict:
        choice: dict = {"index": 0}
        if self.chat:
            if chunk:
                choice["delta"] = ({"role": "assistant", "content": ""} if role else
                                   ({"content": text} if text or finish is None else {}))
            else:
                choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = None
        choice["finish_reason"] = finish
        if self.token_ids:
            choice["token_ids"] = list(ids)
        return choice

    def chunk(self, text: str, ids: list[int], finish: str | None, role: bool = False) -> dict:
        return {**self._head(True), "choices": [self._choice(text, ids, finish, chunk=True, role=role)]}

    def usage(self) -> dict:
        p, c = len(self.prompt_ids), self.num_output_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def usage_chunk(self) -> dict:
        return {**self._head(True), "choices": [], "usage": self.usage()}

    def whole(self, text: str, ids: list[int], finish: str) -> dict:
        out = {**self._head(False), "choices": [self._choice(text, ids, finish, chunk=False)], "usage": self.usage()}
        if self.token_ids:
            out["prompt_token_ids"] = list(self.prompt_ids)
        return out


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes without reading them all (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"the request body has {declared} bytes; this server takes at most {limit} "
                              "(serve.max_body_bytes)")
    parts, size = [], 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise ServeError(413, f"the request body is over {limit} bytes (serve.max_body_bytes)")
            parts.append(part)
    except ClientDisconnect:  # nobody reads the answer; counted, so that every request is accounted for
        raise ServeError(499, "the client closed the connection before its request arrived") from None
    return b"".join(parts)


def _parse(model, raw: bytes):
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServeError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ServeError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ServeError(400, validation_message(err.errors())) from None


def _check_model_and_options(body, model_name: str) -> None:
    if body.model != model_name:
        raise ServeError(404, f"The model `{body.model}` does not exist; this server serves `{model_name}` "
                              "(GET /v1/models)", "model")
    unsupported = body.unsupported()
    if unsupported:
        raise ServeError(400, f"not supported by this server: {', '.join(unsupported)}")


def _check_prompt(ids: list[int], vocab_size: int) -> None:
    if not ids:
        raise ServeError(400, "the prompt has no tokens", "prompt")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ServeError(400, f"prompt token ids must be in [0, {vocab_size}); got {bad[:3]}", "prompt")
