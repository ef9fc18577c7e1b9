"""SimExecutor: the Executor the simulator plugs into a Worker (no tokens, predicted time)."""
from __future__ import annotations

from engines.plan import StepPlan, StepResult
from sim.cost_model import RooflineCostModel


class SimExecutor:
    """Implements engines.plan.Executor with a cost model; tokens are placeholders (None)."""

    def __init__(self, cost_model: RooflineCostModel) -> None:
        self.cost_model = cost_model
        # The roofline reads only a plan's sums (StepPlan.shape), so a scheduler may hand it
        # steady decodes as sums (engines/lazy_decodes.py); profiled models read every seq.
        self.plan_shape_only = type(cost_model) is RooflineCostModel
        # A profiled model charges a step after idle its own run factor: the worker passes
        # how long it sat idle (engines/worker.py).
        self.reads_idle = getattr(cost_model, "reads_idle", False)

    def execute(self, plan: StepPlan, share: float, idle_before_s: float = 0.0) -> StepResult:
        if self.reads_idle:
            return StepResult(duration_s=self.cost_model.step_time_s(plan, share, idle_before_s))
        return StepResult(duration_s=self.cost_model.step_time_s(plan, share))

    def resource_demands_s(self, plan: StepPlan) -> tuple[float, float]:
        """Optional executor capability: (compute_s, memory_s) at the whole device."""
        return self.cost_model.resource_demands_s(plan)
