"""The OpenAI request bodies the server accepts (pydantic), and its error replies.

Fields follow the OpenAI API reference (platform.openai.com/docs/api-reference/completions,
/chat) plus vLLM's extensions that benchmarks send: `ignore_eos` and `return_token_ids`
(vllm-project/vllm, vllm/entrypoints/openai/protocol.py). Unknown fields are ignored, as
OpenAI-compatible servers do, so any client's payload is accepted; fields that change the
output and are not implemented (n > 1, stop strings, logprobs, echo, best_of) are refused
with a 400 that names them, never silently dropped.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeError(Exception):
    """An HTTP error reply in OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, queued: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.queued = queued  # the request reached the engine (counted there, not as refused)

    def body(self) -> dict:
        kind = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
                503: "server_overloaded"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False          # vLLM extension: run to max_tokens
    return_token_ids: bool = False    # vLLM extension: each choice carries its new token ids
    n: int = 1
    stop: str | list[str] | None = None
    logprobs: Any = None
    best_of: int | None = None

    def unsupported(self) -> list[str]:
        """Options that would change the output and are not implemented here."""
        out = []
        if self.n != 1:
            out.append("n (only 1)")
        if self.stop:
            out.append("stop (use max_tokens; EOS stops unless ignore_eos)")
        if self.logprobs not in (None, False, 0):
            out.append("logprobs")
        if self.best_of not in (None, 1):
            out.append("best_of")
        return out


class CompletionRequest(_Common):
    prompt: str | list[int]           # one prompt: text, or token ids
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False

    def unsupported(self) -> list[str]:
        return super().unsupported() + (["echo"] if self.echo else [])


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name of max_tokens

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def validation_message(errors: list[dict]) -> str:
    """pydantic's errors as one line: 'field.path: what is wrong; ...'."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)
