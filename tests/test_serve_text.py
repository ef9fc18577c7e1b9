"""serve/text.py: prompts in, streamed text out (no server needed)."""
import random

import pytest

pytest.importorskip("pydantic")

from serve.protocol import ChatMessage  # noqa: E402
from serve.text import BEGIN, Detokenizer, chat_prompt_ids, text_prompt_ids  # noqa: E402
from workloads.tokenizer import load_tokenizer  # noqa: E402

TOK = load_tokenizer(None)


@pytest.mark.parametrize("text", ["Hello wörld — 你好, ünïcödé 🎉 streaming.", "a" * 50, " spaced  out "])
def test_streamed_deltas_add_up_to_the_text(text):
    ids = TOK.encode(text, add_special_tokens=False).ids
    d = Detokenizer(TOK)
    deltas = [d.add([i], final=k == len(ids) - 1) for k, i in enumerate(ids)]
    assert "".join(deltas) == text
    assert all("\ufffd" not in x for x in deltas)  # no half characters on the way


def test_random_ids_stream_as_they_decode_whole():
    rng = random.Random(0)
    ids = [rng.randrange(128000) for _ in range(400)]
    d = Detokenizer(TOK)
    chunks = [d.add(ids[k:k + 3], final=k + 3 >= len(ids)) for k in range(0, len(ids), 3)]
    assert "".join(chunks) == TOK.decode(ids, skip_special_tokens=True)


def test_prompts_start_with_begin_of_text_and_chat_ends_with_an_open_assistant_turn():
    bos = TOK.token_to_id(BEGIN)
    ids = text_prompt_ids(TOK, "Hello there")
    assert ids[0] == bos and len(ids) == 3
    chat = chat_prompt_ids(TOK, [ChatMessage(role="system", content="Be brief."),
                                 ChatMessage(role="user", content=[{"type": "text", "text": "Hi"}])])
    text = TOK.decode(chat, skip_special_tokens=False)
    assert text.startswith(BEGIN + "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n") and chat.count(bos) == 1
