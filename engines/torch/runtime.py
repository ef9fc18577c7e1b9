"""Build a TorchExecutor from the harness's settings (the harness imports this lazily, so
simulated runs never import torch)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from engines.errors import ConfigError
from engines.torch.checkpoint import load_config, load_model
from engines.torch.config import CheckpointError, LlamaConfig
from engines.torch.executor import Sampling, TorchExecutor, num_blocks_for_budget
from engines.torch.attention_padded import PaddedAttention
from engines.torch.make_model import make_checkpoint
from engines.torch.paged_attention import TorchAttention
from engines.torch.sizes import CHECKPOINT_SIZES

log = logging.getLogger(__name__)
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DEFAULT_CPU_KV_BYTES = 1 << 30  # 1 GiB: ~500k tokens of tiny_llama KV in bf16


@dataclass(frozen=True)
class TorchSetup:
    checkpoint: Path
    config: LlamaConfig
    num_blocks: int
    dtype: torch.dtype
    device: str


def prepare(model_name: str, checkpoint: str | None, *, device: str, dtype: str,
            block_size: int, kv_cache_bytes: int | None, gpu_memory_utilization: float) -> TorchSetup:
    """Resolve the checkpoint (generating a random-weight one for a named size on first
    use) and size the KV pool from the memory budget."""
    if dtype not in _DTYPES:
        raise ConfigError("executor.dtype", f"one of {', '.join(_DTYPES)}", dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("executor.device", "cpu (torch sees no CUDA device)", device)
    path = Path(checkpoint or f"checkpoints/{model_name}")
    if not path.exists() and model_name in CHECKPOINT_SIZES:
        log.warning("checkpoint %s does not exist: writing a random-weight %s checkpoint there", path, model_name)
        make_checkpoint(path, model_name, seed=0, dtype="bfloat16")
    config = load_config(path)  # CheckpointError (a ValueError) names the file and field
    budget = kv_cache_bytes or _default_kv_bytes(device, gpu_memory_utilization)
    num_blocks = num_blocks_for_budget(config, budget, block_size, _DTYPES[dtype])
    if num_blocks < 1:
        raise ConfigError("executor.kv_cache_bytes", f"large enough for one KV block of {block_size} tokens "
                          f"of {path} in {dtype}", budget)
    return TorchSetup(path, config, num_blocks, _DTYPES[dtype], device)


def _default_kv_bytes(device: str, utilization: float) -> int:
    if not device.startswith("cuda"):
        return DEFAULT_CPU_KV_BYTES
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free * utilization * 0.8)  # leave room for activations (unverified here)


def make_executor(setup: TorchSetup, *, block_size: int, temperature: float, seed: int,
                  num_threads: int | None, attention: str = "auto") -> TorchExecutor:
    backend = attention_backend(attention, setup.device)
    try:
        model = load_model(setup.checkpoint, dtype=setup.dtype, device=setup.device)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {setup.checkpoint}: {err}") from None
    return TorchExecutor(model, num_blocks=setup.num_blocks, block_size=block_size, device=setup.device,
                         dtype=setup.dtype, sampling=Sampling(temperature, seed), threads=num_threads,
                         attention=backend)


def attention_backend(name: str, device: str):
    """The executor.attention backend; None = the executor's default for the device
    (flashinfer on CUDA where installed, else TorchAttention with the kernel if it builds)."""
    if name == "padded":
        return PaddedAttention(device)
    if name == "auto":
        return None
    try:
        return TorchAttention(device, decode_kernel=name == "kernel")
    except RuntimeError as err:
        raise ConfigError("executor.attention", "auto, torch or padded here", f"{name} ({err})") from None
