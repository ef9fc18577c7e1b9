"""Workloads: request sources, arrival processes and the tokenizer.

Entry point: `build_workload(WorkloadConfig(...), num_gpus)` -> `Workload` (a frozen,
arrival-sorted tuple of RequestSpecs plus a description of where they came from).
"""
from workloads.config import Workload, WorkloadConfig, build_workload
from workloads.errors import WorkloadError
from workloads.spec import RequestSpec

__all__ = ["RequestSpec", "Workload", "WorkloadConfig", "WorkloadError", "build_workload"]
