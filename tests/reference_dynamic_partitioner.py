"""TEST-ONLY transcription of the semi-PD code's `DynamicPartitioner`, for equivalence testing.

Source: GitHub infinigence/Semi-PD, the DistServe-based code (branch `distserve_base`), file
`distserve/single_stage_engine.py`, class `DynamicPartitioner` (methods `update_prefill_info`,
`update_decode_info`, `replan` and its nested `_scale_*` curves). The copy read carried no
commit sha. This module transcribes those methods line by line so that
tests/test_semipd_slo_code_equivalence.py can drive it and `semipd.controller.SloCodeController`
with the same windows; it is never imported by the project itself.

Changes from the original, none of which alter a decision:
- logging calls removed; the SLOs are constructor arguments instead of the `TTFT_SLO` /
  `TPOT_SLO` environment variables (ms, ints, defaults 500 / 100): the decision only compares
  latencies with SLOs in one unit, so the tests feed seconds to both sides;
- `SwitchSemaphore` is reduced to the one member the window gate compares with (REJECT);
- the switch bookkeeping (`do_*_replan` reset, `*_cur_sm_percentile` update) that the original
  does in ContextStageLLMEngine/DecodingStageLLMEngine after a worker switch is `finish_switch`.
"""
from __future__ import annotations

import enum

import numpy as np


class SwitchSemaphore(enum.Enum):
    REJECT = "REJECT"
    START_INIT = "START_INIT"


class DynamicPartitioner:
    def __init__(self, tpot_window, ttft_window, prefill_sm_percentile, decode_sm_percentile,
                 ttft_slo, tpot_slo):
        self.tpot_window = tpot_window
        self.ttft_window = ttft_window
        self.prefill_cur_sm_percentile = prefill_sm_percentile
        self.decode_cur_sm_percentile = decode_sm_percentile
        self.prefill_future_sm_percentile = prefill_sm_percentile
        self.decode_future_sm_percentile = decode_sm_percentile

        # hyper params
        self.window_size = 400
        self.tpot_scale = 1.1

        # SLA
        self.ttft_slo = ttft_slo
        self.tpot_slo = tpot_slo

        # semaphore
        self.do_prefill_replan = False
        self.prefill_switch_status = None

        self.do_decode_replan = False
        self.decode_switch_status = None

    def update_prefill_status(self, status):
        self.prefill_switch_status = status

    def update_decode_info(self, tpot):
        if not self.do_prefill_replan and self.prefill_switch_status == SwitchSemaphore.REJECT:
            self.tpot_window.append(tpot)

    def update_prefill_info(self, prefill_info):
        if not self.do_prefill_replan and self.prefill_switch_status == SwitchSemaphore.REJECT:
            self.ttft_window.append(prefill_info)

    def finish_switch(self, prefill: bool, decode: bool):
        """What the engines do once the standby worker took over (not in the class itself)."""
        if prefill:
            self.prefill_cur_sm_percentile = self.prefill_future_sm_percentile
            self.do_prefill_replan = False
        if decode:
            self.decode_cur_sm_percentile = self.decode_future_sm_percentile
            self.do_decode_replan = False

    def replan(self):
        def _scale_tpot(sm_percentile):
            if sm_percentile == 100:
                return 1
            inv_sm_p = 100 / sm_percentile
            scale = 0.6099164272415375 * inv_sm_p + 0.41530605763705736
            return scale

        def _scale_waiting(sm_percentile):
            if sm_percentile == 100:
                return 1
            inv_sm_p = 100 / sm_percentile
            scale = 1.4046465674985547 * inv_sm_p ** 2 + -3.15935463280878 * inv_sm_p + 2.8734660485396604
            return scale

        def _scale_latency(sm_percentile):
            if sm_percentile == 100:
                return 1
            inv_sm_p = 100 / sm_percentile
            scale = 0.732435017003385 * inv_sm_p + 0.3185253290850649
            return scale

        # Switch in progress
        if self.do_prefill_replan or self.do_decode_replan:
            return False

        # every (windows size amount) reqs check once
        if not self.tpot_window.__len__() >= self.window_size:
            return False

        p90_tpot = np.percentile(self.tpot_window, 90)
        # clean tpot
        self.tpot_window.clear()

        if self.ttft_window.__len__() != 0:
            ttft_window = sorted(self.ttft_window, key=lambda x: x[0])
            p90_idx = int(len(ttft_window) * 0.9 / 1 + 1)
            p90_ttft, p90_latency, p90_waiting = ttft_window[p90_idx]
            self.ttft_window.clear()
        else:
            p90_ttft, p90_latency, p90_waiting = (-1, -1, -1)

        cond_tpot = p90_tpot * self.tpot_scale <= self.tpot_slo
        cond_ttft = p90_ttft <= self.ttft_slo

        # Since both cannot be satisfied, just maximize mfu
        if not cond_tpot and not cond_ttft and (self.prefill_cur_sm_percentile != 100 and self.decode_cur_sm_percentile != 100):
            self.decode_future_sm_percentile = 100
            self.prefill_future_sm_percentile = 100
            self.do_decode_replan = True
            self.do_prefill_replan = True
            return True

        interval = 2
        adjust_count = 0
        max_step = 3
        # First to check tpot constraint
        if not cond_tpot and cond_ttft:
            # adjust decode sm
            if self.decode_cur_sm_percentile < 100:
                predicted_sm_percentile = self.decode_cur_sm_percentile
                base_tpot_scale = _scale_tpot(self.decode_cur_sm_percentile)
                while True and adjust_count < max_step:
                    # adjust to 100
                    predicted_sm_percentile += interval
                    adjust_count += 1
                    if predicted_sm_percentile >= 100:
                        predicted_sm_percentile = 100
                    future_tpot_scale = _scale_tpot(predicted_sm_percentile)
                    future_tpot = future_tpot_scale / base_tpot_scale * p90_tpot
                    # shortest step
                    if future_tpot <= self.tpot_slo:
                        break
                    if predicted_sm_percentile == 100:
                        break
                self.decode_future_sm_percentile = predicted_sm_percentile
                self.do_decode_replan = True
                return True
            # slo_ttft > ttft
            else:
                predicted_sm_percentile = self.prefill_cur_sm_percentile
                while True and adjust_count < max_step:
                    # adjust to 40(hard lower bound)
                    base_latency_scale = _scale_latency(self.prefill_cur_sm_percentile)
                    base_waiting_scale = _scale_waiting(self.prefill_cur_sm_percentile)
                    predicted_sm_percentile -= interval
                    adjust_count += 1
                    if predicted_sm_percentile <= 80:
                        predicted_sm_percentile = 80
                    future_waiting_scale = _scale_waiting(predicted_sm_percentile)
                    future_latency_scale = _scale_latency(predicted_sm_percentile)
                    future_ttft = future_waiting_scale / base_waiting_scale * p90_waiting + future_latency_scale / base_latency_scale * p90_latency
                    # longest step
                    if future_ttft > self.ttft_slo:
                        predicted_sm_percentile += interval
                        break
                    if predicted_sm_percentile == 80:
                        break
                self.prefill_future_sm_percentile = predicted_sm_percentile
                self.do_prefill_replan = True
                return True

        if cond_tpot and not cond_ttft:
            if self.prefill_cur_sm_percentile < 100:
                predicted_sm_percentile = self.prefill_cur_sm_percentile
                while True and adjust_count < max_step:
                    base_latency_scale = _scale_latency(self.prefill_cur_sm_percentile)
                    base_waiting_scale = _scale_waiting(self.prefill_cur_sm_percentile)
                    # adjust to 100
                    predicted_sm_percentile += interval
                    adjust_count += 1
                    if predicted_sm_percentile >= 100:
                        predicted_sm_percentile = 100
                    future_waiting_scale = _scale_waiting(predicted_sm_percentile)
                    future_latency_scale = _scale_latency(predicted_sm_percentile)
                    future_ttft = future_waiting_scale / base_waiting_scale * p90_waiting + future_latency_scale / base_latency_scale * p90_latency
                    # shortest step
                    if future_ttft <= self.ttft_slo:
                        break
                    if predicted_sm_percentile == 100:
                        break
                self.prefill_future_sm_percentile = predicted_sm_percentile
                self.do_prefill_replan = True
                return True
            else:
                predicted_sm_percentile = self.decode_cur_sm_percentile
                while True and adjust_count < max_step:
                    base_tpot_scale = _scale_tpot(self.decode_cur_sm_percentile)
                    # adjust to 60(hard lower bound)
                    predicted_sm_percentile -= interval
                    adjust_count += 1
                    if predicted_sm_percentile <= 80:
                        predicted_sm_percentile = 80
                    future_tpot_scale = _scale_tpot(predicted_sm_percentile)
                    future_tpot = future_tpot_scale / base_tpot_scale * p90_tpot
                    # longest step
                    if future_tpot > self.tpot_slo:
                        predicted_sm_percentile += interval
                        break
                    if predicted_sm_percentile == 80:
                        break
                self.decode_future_sm_percentile = predicted_sm_percentile
                self.do_decode_replan = True
                return True
