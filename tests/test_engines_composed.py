"""Disaggregated and semi-PD engines on a fake executor: hand-off, transfer, contention."""
import random

import pytest

from engines.config import EngineConfig, SemiPDConfig
from engines.disagg import KVLink, build_disagg
from engines.engine import finalize_unfinished
from engines.request import Request, Status
from semipd.controller import SLO
from semipd.engine import build_semipd
from sim.loop import VirtualLoop
from tests.fakes import LinearExecutor


def workload(n=200, rate=20.0, seed=0):
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        reqs.append(Request(id=i, arrival_s=t, prompt_len=rng.randint(4, 600), output_len=rng.randint(1, 200)))
    return reqs


def run(engine, loop, reqs, check=True):
    for r in reqs:
        loop.at(r.arrival_s, lambda r=r: engine.submit(r))

    def integrity():
        for pool in engine.pools:
            pool.check_integrity(engine.live_block_tables(pool))
    end = loop.run(on_event=integrity if check else None)
    finalize_unfinished(reqs, end)
    return end


def disagg(loop, blocks=400, **kw):
    cfg = EngineConfig(name="disagg", design="disagg", **kw)
    return build_disagg(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks,
                        max_model_len=4096, link=KVLink("test", 1e9, 1e-3), kv_bytes_per_token_per_gpu=1e5)


def semipd(loop, blocks=400, x=100.0, y=100.0, controller="static", **kw):
    cfg = EngineConfig(name="semipd", design="semipd",
                       semipd=SemiPDConfig(prefill_share_pct=x, decode_share_pct=y, controller=controller, **kw))
    return build_semipd(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks,
                        max_model_len=4096, slo=SLO(0.5, 0.1))


@pytest.mark.parametrize("build", [disagg, semipd])
def test_conservation_and_integrity(build):
    loop = VirtualLoop()
    engine = build(loop, blocks=300)
    reqs = workload()
    run(engine, loop, reqs)
    assert all(r.status is Status.FINISHED for r in reqs)
    assert all(r.num_output_tokens == r.output_len for r in reqs)
    for pool in engine.pools:
        assert pool.num_free_blocks == pool.num_blocks


@pytest.mark.parametrize("build", [disagg, semipd])
def test_same_seed_same_timestamps(build):
    outs = []
    for _ in range(2):
        loop = VirtualLoop()
        reqs = workload(seed=3)
        run(build(loop), loop, reqs, check=False)
        outs.append([(r.token_times_s[0], r.finish_s, r.num_preemptions) for r in reqs])
    assert outs[0] == outs[1]


def test_semipd_handoff_keeps_block_ids_and_copies_nothing():
    loop = VirtualLoop()
    engine = semipd(loop)
    req = Request(id=0, arrival_s=0.0, prompt_len=100, output_len=5)
    seen = []
    dec = engine.devices[0].decode.scheduler
    orig = dec.add_running

    def spy(r):
        seen.append((id(r.block_ids), list(r.block_ids), engine.pools[0].num_used_blocks))
        orig(r)
    dec.add_running = spy
    prefill_tables = []
    pre = engine.devices[0].prefill.scheduler
    orig_update = pre.update

    def spy_update(plan, result, now):
        prefill_tables.append((id(req.block_ids), list(plan.seqs[0].block_ids)))
        return orig_update(plan, result, now)
    pre.update = spy_update
    run(engine, loop, [req])
    (table_obj, blocks, used), = seen
    assert (table_obj, blocks) == prefill_tables[0]  # the same list object and block ids
    assert used == len(blocks)  # no second copy was allocated
    assert req.status is Status.FINISHED


def test_disagg_frees_prefill_blocks_only_after_transfer():
    loop = VirtualLoop()
    engine = disagg(loop)
    req = Request(id=0, arrival_s=0.0, prompt_len=160, output_len=3)
    pre_pool, dec_pool = engine.pools
    events = []
    orig = engine._transfer_done

    def spy(r, dec, dst):
        events.append(("done", loop.now_s, pre_pool.num_used_blocks, dec_pool.num_used_blocks))
        orig(r, dec, dst)
        events.append(("after", loop.now_s, pre_pool.num_used_blocks, dec_pool.num_used_blocks))
    engine._transfer_done = spy
    run(engine, loop, [req])
    (_, t_done, pre_before, dec_before), (_, _, pre_after, _) = events
    assert pre_before == 10 and dec_before == 11  # both hold the KV during the transfer
    assert pre_after == 0
    first_token = req.token_times_s[0]
    assert t_done == pytest.approx(first_token + 160 * 1e5 / 1e9 + 1e-3)
    assert req.token_times_s[1] > t_done


def test_disagg_full_decode_pool_queues_requests():
    loop = VirtualLoop()
    engine = disagg(loop, blocks=50)
    reqs = [Request(id=i, arrival_s=0.0, prompt_len=400, output_len=300) for i in range(3)]
    run(engine, loop, reqs)
    assert all(r.status is Status.FINISHED for r in reqs)
    starts = sorted(r.token_times_s[1] for r in reqs)
    # the decode pool (50 blocks = 800 tokens) takes one 401-token KV at a time, so the
    # second request waits for the first to finish before its transfer starts
    assert engine.decoders[0].num_preemptions == 0
    assert starts[1] > min(r.finish_s for r in reqs) - 1e-9


def _step_duration_with_other(busy_other: bool):
    loop = VirtualLoop()
    engine = semipd(loop)
    long_decode = Request(id=0, arrival_s=0.0, prompt_len=50, output_len=400)
    probe = Request(id=1, arrival_s=1.0, prompt_len=1000, output_len=2)
    reqs = [long_decode, probe] if busy_other else [probe]
    run(engine, loop, reqs, check=False)
    steps = [r for r in engine.workers[0].records if r.num_prefill_tokens == 1000]
    return steps[0].duration_s


def test_contention_slows_a_step_while_the_other_worker_is_busy():
    alone, contended = _step_duration_with_other(False), _step_duration_with_other(True)
    assert contended > alone * 1.5  # (100, 100): each gets half the device while both run


class SoloRecordingExecutor(LinearExecutor):
    """Remembers, in start order, (share, duration) of every plan it is asked to time: the
    worker's call at its own cap is what the step takes when it runs alone."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[float, float]] = []

    def execute(self, plan, share):
        result = super().execute(plan, share)
        self.calls.append((share, result.duration_s))
        return result


class SoloRecordingResourceExecutor(SoloRecordingExecutor):
    """With resource demands (the `resources` model's input): at share 1 a prefill step uses
    90 % of the compute and 10 % of the bandwidth, a decode step 20 % and 80 %; both scale
    with the share as the duration does (compute-bound), so caps summing to <= 100 never
    oversubscribe either resource."""

    def resource_demands_s(self, plan):
        t = LinearExecutor.execute(self, plan, 1.0).duration_s
        return (0.9 * t, 0.1 * t) if plan.num_prefill_tokens else (0.2 * t, 0.8 * t)


class BandwidthBoundExecutor(SoloRecordingExecutor):
    """Every step keeps 80 % of the HBM bandwidth busy at its own cap (bandwidth saturates
    with a fraction of the SMs), whatever the cap."""

    def resource_demands_s(self, plan):
        t = LinearExecutor.execute(self, plan, 1.0).duration_s
        return 0.1 * t, 0.8 * t / 0.5  # at share 0.5: 80 % of the bandwidth


def _steps_vs_solo(x: float, y: float, contention: str, executor=SoloRecordingExecutor, **semipd):
    """Each worker's recorded step durations, their solo durations, and how many pairs of
    prefill and decode steps overlapped in time."""
    loop = VirtualLoop()
    cfg = EngineConfig(name="semipd", design="semipd",
                       semipd=SemiPDConfig(prefill_share_pct=x, decode_share_pct=y, controller="static",
                                           contention=contention, **semipd))
    engine = build_semipd(cfg, loop=loop, make_executor=executor, num_kv_blocks=400,
                          max_model_len=4096, slo=SLO(0.5, 0.1))
    run(engine, loop, workload(n=60))
    pre, dec = engine.workers
    recorded = {w.name: [r.duration_s for r in w.records] for w in (pre, dec)}
    # the proportional model also asks for the duration at a reduced share: not a solo step
    solo = {w.name: [d for share, d in w.executor.calls if share == w.share] for w in (pre, dec)}
    overlaps = sum(1 for a in pre.records for b in dec.records
                   if a.start_s < b.start_s + b.duration_s and b.start_s < a.start_s + a.duration_s)
    return recorded, solo, overlaps


def _slowdowns(recorded, solo) -> list[float]:
    """recorded / solo duration of every step that took longer than it does alone."""
    return [r / s for name in recorded for r, s in zip(recorded[name], solo[name]) if r > s * (1 + 1e-6)]


@pytest.mark.parametrize("contention, executor", [("resources", SoloRecordingResourceExecutor),
                                                  ("resources", SoloRecordingExecutor),  # no demands: proportional
                                                  ("proportional", SoloRecordingExecutor)])
@pytest.mark.parametrize("x, y", [(50.0, 50.0), (30.0, 70.0)])
def test_no_contention_when_shares_sum_to_at_most_100(x, y, contention, executor):
    recorded, solo, overlaps = _steps_vs_solo(x, y, contention, executor)
    assert overlaps > 20  # the two workers really ran side by side, many times
    for name in recorded:
        assert len(recorded[name]) == len(solo[name]) > 0
        # every step took exactly what it takes alone at its cap (float rounding only)
        assert recorded[name] == pytest.approx(solo[name], rel=1e-9, abs=0.0), name


def test_shares_above_100_do_contend():
    """The same check fails when the caps overlap: the comparison above can detect contention."""
    recorded, solo, overlaps = _steps_vs_solo(100.0, 100.0, "proportional")
    assert overlaps > 20
    slower = _slowdowns(recorded, solo)
    assert len(slower) >= overlaps / 2 and max(slower) == pytest.approx(2.0, rel=1e-6)


def test_bandwidth_still_contends_when_shares_sum_to_100():
    """`resources`: caps summing to 100 split the SMs, not the HBM bandwidth (README)."""
    recorded, solo, overlaps = _steps_vs_solo(50.0, 50.0, "resources", BandwidthBoundExecutor)
    slower = _slowdowns(recorded, solo)
    assert overlaps > 20 and slower
    assert max(slower) == pytest.approx(1.6, rel=1e-6)  # 0.8 + 0.8 of the bandwidth asked


class ResourceExecutor(LinearExecutor):
    """Prefill steps use 90 % of the compute and 10 % of the bandwidth at solo speed;
    decode steps 20 % and 80 %."""

    def resource_demands_s(self, plan):
        t = self.execute(plan, 1.0).duration_s
        return (0.9 * t, 0.1 * t) if plan.num_prefill_tokens else (0.2 * t, 0.8 * t)


def _prefill_step_s(contention: str, busy_other: bool) -> float:
    loop = VirtualLoop()
    cfg = EngineConfig(name="semipd", design="semipd", semipd=SemiPDConfig(controller="static", contention=contention))
    engine = build_semipd(cfg, loop=loop, make_executor=ResourceExecutor, num_kv_blocks=400,
                          max_model_len=4096, slo=SLO(0.5, 0.1))
    reqs = [Request(id=1, arrival_s=1.0, prompt_len=1000, output_len=2)]
    if busy_other:
        reqs.insert(0, Request(id=0, arrival_s=0.0, prompt_len=50, output_len=400))
    run(engine, loop, reqs, check=False)
    return next(r.duration_s for r in engine.workers[0].records if r.num_prefill_tokens == 1000)


def test_resource_contention_overlaps_compute_and_memory_bound_steps():
    alone = _prefill_step_s("resources", False)
    # together they ask 1.1 of the compute and 0.9 of the bandwidth: a 1.1x slowdown
    assert _prefill_step_s("resources", True) == pytest.approx(1.1 * alone, rel=0.02)
    # the proportional model halves both workers' SMs instead
    assert _prefill_step_s("proportional", True) == pytest.approx(2.0 * alone, rel=0.05)


CONTENTION_CSV = """# format: semipd-bench-profile/1-contention
layout,prefill_share_pct,decode_share_pct,prefill_tokens,decode_seqs,decode_context,prefill_solo_s,prefill_together_s,decode_solo_s,decode_together_s,decode_steps_together,repeats
overlap,100,100,512,16,512,0.1,0.2,0.01,0.015,5,3
overlap,100,100,1024,64,1024,0.2,0.41,0.02,0.029,5,3
overlap,100,100,2048,4,256,0.4,0.78,0.01,0.016,5,3
disjoint,50,50,512,16,512,0.1,0.11,0.01,0.0105,5,3
"""


@pytest.mark.parametrize("x, y, prefill, decode", [(100.0, 100.0, 2.0, 1.5), (50.0, 50.0, 1.1, 1.05)])
def test_measured_contention_slows_each_role_by_its_measured_median(tmp_path, x, y, prefill, decode):
    """`measured`: per layout (x + y > 100 or not) and role, the median together / solo of
    the contention profile (overlap: prefill 2.0, 2.05, 1.95 -> 2.0; decode 1.5, 1.45, 1.6 -> 1.5)."""
    path = tmp_path / "c.csv"
    path.write_text(CONTENTION_CSV)
    recorded, solo, overlaps = _steps_vs_solo(x, y, "measured", contention_profile=str(path))
    assert overlaps > 20
    ratios = {name: [r / s for r, s in zip(recorded[name], solo[name])] for name in recorded}
    # a step inside the other worker's busy time slows by the whole factor, one that
    # overlaps it in part by less; none by more
    assert max(ratios["prefill0"]) == pytest.approx(prefill, rel=1e-6)
    assert max(ratios["decode0"]) == pytest.approx(decode, rel=1e-6)
    assert min(min(v) for v in ratios.values()) >= 1.0 - 1e-9


@pytest.mark.parametrize("text, profile, message", [
    (None, None, "engine.semipd.contention_profile must be the path of a contention profile"),
    (None, "missing.csv", "engine.semipd.contention_profile must be a contention profile CSV"),
    ("layout,x\noverlap,1\n", "c.csv", "columns layout, prefill_solo_s"),
    (CONTENTION_CSV.replace("0.1,0.2,0.01", "0,0.2,0.01"), "c.csv", "positive solo and together times"),
    (CONTENTION_CSV.replace("disjoint", "overlap"), "c.csv", "'disjoint' rows"),
])
def test_bad_contention_profiles_are_named(tmp_path, text, profile, message):
    from engines.errors import ConfigError
    if text is not None:
        (tmp_path / profile).write_text(text)
    path = str(tmp_path / profile) if profile else None
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        cfg = SemiPDConfig(prefill_share_pct=50.0, decode_share_pct=50.0, controller="static",
                           contention="measured", contention_profile=path)
        cfg.validate()
        _steps_vs_solo(50.0, 50.0, "measured", contention_profile=path)
