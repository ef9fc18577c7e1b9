"""Test doubles shared by engine tests: a deterministic executor with a simple cost."""
from engines.plan import StepPlan, StepResult


class LinearExecutor:
    """duration = fixed + per-token costs, divided by the share (compute-bound)."""

    def __init__(self, fixed_s=0.005, prefill_tok_s=1e-4, decode_tok_s=2e-5):
        self.fixed_s, self.prefill_tok_s, self.decode_tok_s = fixed_s, prefill_tok_s, decode_tok_s

    def execute(self, plan: StepPlan, share: float) -> StepResult:
        t = self.fixed_s + self.prefill_tok_s * plan.num_prefill_tokens + self.decode_tok_s * plan.num_decode_tokens
        return StepResult(t / share)
