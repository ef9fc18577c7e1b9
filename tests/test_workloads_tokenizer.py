"""Tokenizer: the default Llama-3 tokenizer, batch counting, caching, truncation."""
import pytest

from workloads.errors import WorkloadError
from workloads.tokenizer import (count_tokens, encode_ids, load_tokenizer, truncate_middle,
                                 truncated_len, vocab_size)


def test_default_is_llama3_and_cached():
    assert vocab_size() == 128_256
    assert load_tokenizer() is load_tokenizer(None) is load_tokenizer("llama3")


def test_counts_without_special_tokens():
    # "Hello world" is two Llama-3 tokens; no <|begin_of_text|> (id 128000) is added.
    assert encode_ids(["Hello world"]) == [[9906, 1917]]
    assert count_tokens(["Hello world", "", "What is the capital of France?"]).tolist() == [2, 0, 7]


def test_truncate_middle_keeps_both_ends():
    ids = list(range(10))
    assert truncate_middle(ids, 4) == [0, 1, 8, 9]
    assert truncate_middle(ids, 5) == [0, 1, 8, 9]  # half = 2, as LongBench's int(max/2)
    assert truncate_middle(ids, None) == ids and truncate_middle(ids, 10) == ids
    assert [truncated_len(10, m) for m in (4, 5, 10, None)] == [4, 4, 10, 10]


def test_missing_tokenizer_file_names_option(tmp_path):
    with pytest.raises(WorkloadError) as e:
        load_tokenizer(str(tmp_path / "nope.json"))
    assert "nope.json" in str(e.value) and "workload.tokenizer" in str(e.value)


def test_broken_tokenizer_file_names_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(WorkloadError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path))  # a directory resolves to its tokenizer.json
