"""Stop tokens (EOS): a sampled stop id ends a request in the shared scheduler, which frees
its blocks at once; reaching output_len wins over a stop id at the cap (vLLM's order);
a prefill-role worker finishes such a request instead of handing it off. Also the EOS
ids of a config.json (one id, a list, null, or a bad value)."""
import pytest

from engines.blocks import BlockPool
from engines.plan import StepResult
from engines.request import Request, Status
from engines.scheduler import Scheduler, SchedulerConfig
from engines.torch.config import CheckpointError, LlamaConfig
from engines.torch.sizes import get_size

EOS = 7


def make(rid, output_len, stop=frozenset({EOS})):
    return Request(id=rid, arrival_s=0.0, prompt_len=6, output_len=output_len,
                   token_ids=list(range(100, 106)), stop_token_ids=stop)


def step(s, tokens, now):
    plan = s.schedule(now)
    return plan, s.update(plan, StepResult(0.01, tuple(tokens)), now)


def test_a_sampled_stop_id_ends_the_request_and_frees_its_blocks():
    pool = BlockPool(20, 4)
    s = Scheduler(SchedulerConfig(watermark=0.0), pool)
    a, b = make(0, 5), make(1, 5)
    s.add_request(a)
    s.add_request(b)
    step(s, [1, 2], 1.0)                     # prefill: first tokens
    _, out = step(s, [EOS, 3], 2.0)          # a samples EOS as its 2nd token
    assert out.finished == [a] and a.status is Status.FINISHED and a.finish_reason == "stop"
    assert a.num_output_tokens == 2 and a.token_ids[-2:] == [1, EOS] and a.token_times_s == [1.0, 2.0]
    assert a.block_ids == [] and a.finish_s == 2.0 and s.running == [b]
    assert pool.num_used_blocks == len(b.block_ids)
    pool.check_integrity([b.block_ids])
    for now in (3.0, 4.0, 5.0):
        _, out = step(s, [4], now)
    assert out.finished == [b] and b.finish_reason == "length" and b.num_output_tokens == 5
    assert pool.num_used_blocks == 0


def test_length_cap_wins_over_a_stop_id_at_the_cap_and_no_stop_ids_means_length():
    s = Scheduler(SchedulerConfig(watermark=0.0), BlockPool(20, 4))
    a, b = make(0, 2), make(1, 2, stop=frozenset())
    s.add_request(a)
    s.add_request(b)
    step(s, [EOS, EOS], 1.0)  # b ignores EOS: no stop ids
    assert a.finish_reason == "stop" and b.status is Status.RUNNING and b.finish_reason == ""
    _, out = step(s, [EOS], 2.0)
    assert out.finished == [b] and b.finish_reason == "length"
    c = make(2, 1)
    s.add_request(c)
    step(s, [EOS], 3.0)
    assert c.finish_reason == "length"  # the first and last token is EOS: vLLM says length


def test_prefill_worker_finishes_instead_of_handing_off_on_eos():
    pool = BlockPool(20, 4)
    s = Scheduler(SchedulerConfig(watermark=0.0), pool, role="prefill")
    a, b = make(0, 5), make(1, 5)
    s.add_request(a)
    s.add_request(b)
    _, out = step(s, [EOS, 3], 1.0)
    assert out.finished == [a] and out.handed_off == [b] and a.finish_reason == "stop"
    assert a.block_ids == [] and b.status is Status.TRANSFERRING


@pytest.mark.parametrize("value,ids", [(128001, {128001}), ([128001, 128009], {128001, 128009}), (None, set())])
def test_config_eos_ids_are_one_id_a_list_or_none(value, ids):
    raw = {**get_size("tiny_llama").to_hf_dict("bfloat16"), "eos_token_id": value}
    assert LlamaConfig.from_hf_dict(raw).eos_token_ids == ids


@pytest.mark.parametrize("value", ["</s>", [1, "x"], -1, True])
def test_bad_eos_token_id_names_the_field(value):
    raw = {**get_size("tiny_llama").to_hf_dict("bfloat16"), "eos_token_id": value}
    with pytest.raises(CheckpointError, match="eos_token_id"):
        LlamaConfig.from_hf_dict(raw)
