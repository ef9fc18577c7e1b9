"""The semi-PD engine's controller bookkeeping: window samples as the original takes them,
no samples during a prefill-side switch, and one count / one row per device per decision."""
import numpy as np
import pytest

from engines.config import EngineConfig, SemiPDConfig
from engines.request import Request
from semipd.controller import SLO, Decision
from semipd.engine import build_semipd
from sim.loop import VirtualLoop
from tests.fakes import LinearExecutor
from tests.test_engines_composed import run, workload


def engine(loop, controller="static", num_instances=1, **kw):
    cfg = EngineConfig(name="semipd", design="semipd", num_instances=num_instances,
                       semipd=SemiPDConfig(controller=controller, **kw))
    return build_semipd(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=400,
                        max_model_len=4096, slo=SLO(0.5, 0.1))


def test_samples_are_the_originals_for_a_lone_request():
    """Alone, a request's steps run back to back from its arrival: TPOT = process time / output
    tokens = (last token - arrival) / n (not (last - first) / (n - 1)); TTFT splits into the
    prefill step's latency and the waiting before it."""
    loop = VirtualLoop()
    eng = engine(loop, window_requests=10**6)
    req = Request(id=0, arrival_s=1.0, prompt_len=300, output_len=20)
    run(eng, loop, [req])
    (ttft,), (tpot,) = eng.window.ttft, eng.window.tpot_s
    assert tpot == pytest.approx((req.token_times_s[-1] - req.arrival_s) / 20, rel=1e-12)
    assert ttft.ttft_s == pytest.approx(req.token_times_s[0] - req.arrival_s)
    assert ttft.prefill_s == pytest.approx(LinearExecutor().fixed_s + 300 * LinearExecutor().prefill_tok_s)
    assert ttft.waiting_s == pytest.approx(ttft.ttft_s - ttft.prefill_s)


def test_one_token_requests_give_a_ttft_sample_but_no_tpot_sample():
    loop = VirtualLoop()
    eng = engine(loop, window_requests=10**6)
    run(eng, loop, [Request(id=0, arrival_s=0.0, prompt_len=30, output_len=1)])
    assert len(eng.window.ttft) == 1 and eng.window.tpot_s == []


@pytest.mark.parametrize("prefill, collected", [(True, False), (False, True)])
def test_no_samples_while_a_prefill_switch_is_in_flight(prefill, collected):
    """The original drops both kinds of samples while its prefill side switches; a
    decode-only switch keeps collecting."""
    loop = VirtualLoop()
    eng = engine(loop, window_requests=10**6, switch_delay_s=1e6)  # the switch never lands
    eng._request_switch(Decision(90.0, 90.0, restart_prefill=prefill, restart_decode=not prefill))
    run(eng, loop, workload(n=50))
    assert bool(eng.window.ttft) == collected and bool(eng.window.tpot_s) == collected


class OneSwitch:
    """Switches once, to (90, 96), then keeps."""

    def __init__(self):
        self.calls = 0

    def decide(self, stats, x, y):
        self.calls += 1
        return Decision(90.0, 96.0, True, True) if self.calls == 1 else Decision(x, y)


def test_one_decision_counts_once_and_every_device_records_its_shares():
    loop = VirtualLoop()
    eng = engine(loop, num_instances=2, window_requests=20, switch_delay_s=0.01)
    eng.controller = OneSwitch()
    run(eng, loop, workload(n=300, rate=40.0))
    assert eng.controller.calls >= 2 and eng.num_share_switches == 1 and eng.num_restarts == 1
    for device in (0, 1):
        rows = [r for r in eng.timeline if r[1] == device]
        assert rows[0] == (0.0, device, 100.0, 100.0)
        assert rows[-1][2:] == (90.0, 96.0) and all(r[0] > 0 for r in rows[1:])
    assert [d.prefill.share for d in eng.devices] == [0.9, 0.9]
    assert [d.decode.share for d in eng.devices] == [0.96, 0.96]


def test_a_same_share_restart_is_no_share_switch():
    loop = VirtualLoop()
    eng = engine(loop, window_requests=20, switch_delay_s=0.01)
    eng.controller.decide = lambda stats, x, y: Decision(x, y, restart_prefill=True)
    run(eng, loop, workload(n=200, rate=40.0))
    assert eng.num_restarts >= 2 and eng.num_share_switches == 0
    assert eng.timeline == [(0.0, 0, 100.0, 100.0)]


def test_ttft_split_comes_from_the_p90_ttft_request_not_two_percentiles():
    from semipd.window import TtftSample, window_stats
    # the slow-TTFT requests wait long but prefill fast; the fast ones prefill slowly
    slow = [TtftSample(1.0 + i / 100, 0.01, 0.99 + i / 100, 0.0) for i in range(20)]
    fast = [TtftSample(0.2, 0.19, 0.01, 0.0) for _ in range(80)]
    s = window_stats(slow + fast, [0.05] * 100, 90.0)
    pick = sorted(slow + fast, key=lambda t: t.ttft_s)[91]
    assert (s.ttft_s, s.prefill_s, s.waiting_s) == (pick.ttft_s, pick.prefill_s, pick.waiting_s)
    assert s.prefill_s + s.waiting_s == pytest.approx(s.ttft_s)
    # two separate P90s would have paired a long wait with a slow prefill
    assert np.percentile([t.prefill_s for t in slow + fast], 90) > 0.1
