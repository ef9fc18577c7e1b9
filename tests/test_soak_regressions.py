"""Bugs the soak (benchmarks/soak.py) found, each pinned by a small hand-built case."""
from engines.config import EngineConfig
from engines.invariants import InvariantChecker
from engines.request import Request, Status
from engines.unified import build_unified
from sim.loop import VirtualLoop
from tests.fakes import LinearExecutor


def test_sglang_retracted_request_is_readmitted_in_a_small_pool():
    """Soak seeds 1070 and 1453 (`python benchmarks/soak.py --seed 1453 --runs 1` before the
    fix): with policy=sglang a request retracted for lack of KV reserved its whole output
    again on re-admission, next to prompt + the tokens it had already generated. In a pool
    barely larger than the request that never fits, even with the pool idle: no step ran
    again and the request stalled."""
    loop = VirtualLoop()
    cfg = EngineConfig(name="sglang", design="unified", policy="sglang", block_size_tokens=1,
                       chunk_size_tokens=64)
    engine = build_unified(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=40, max_model_len=512)
    reqs = [Request(id=i, arrival_s=0.0, prompt_len=p, output_len=o)
            for i, (p, o) in enumerate([(11, 23), (1, 20), (3, 21)])]
    checker = InvariantChecker(engine, reqs)
    checker.attach()
    for r in reqs:
        loop.at(0.0, lambda r=r: engine.submit(r))
    loop.run(on_event=checker.after_event)
    checker.at_end()  # raised "request 2 stalled: waiting with ..." before the fix
    assert [r.status for r in reqs] == [Status.FINISHED] * 3
    assert reqs[2].num_preemptions == 1  # the case really retracts a request
    assert [r.num_output_tokens for r in reqs] == [23, 20, 21]
