"""Unified serving (vLLM / SGLang style): one worker per instance does prefill and decode
over its own KV pool. Prefill-first without chunking is "vLLM-D"; chunked is "vLLM-S"."""
from __future__ import annotations

from typing import Callable

from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.engine import Engine
from engines.loop import Loop
from engines.plan import Executor
from engines.scheduler import Scheduler
from engines.worker import Worker


def build_unified(cfg: EngineConfig, *, loop: Loop, make_executor: Callable[[], Executor],
                  num_kv_blocks: int, max_model_len: int, num_instances: int = 1) -> Engine:
    """`num_instances` data-parallel replicas, each a TP group of `cfg.tp` GPUs with its
    own pool; arrivals are spread round-robin."""
    workers, pools = [], []
    for i in range(num_instances):
        pool = BlockPool(num_kv_blocks, cfg.block_size_tokens, name=f"kv{i}")
        sched = Scheduler(cfg.scheduler_config(max_model_len), pool, role="mixed", name=f"mixed{i}")
        workers.append(Worker(f"mixed{i}", sched, make_executor(), device=i))
        pools.append(pool)
    return Engine(cfg.name, workers=workers, pools=pools, loop=loop,
                  num_gpus=num_instances * cfg.tp * cfg.pp, max_model_len=max_model_len,
                  num_weight_copies=num_instances)
