"""The CPU attention backends tests run against: the C++ decode kernel, its pure-torch
fallback, and the old padded path (a second reference)."""
import shutil

import pytest

from engines.torch import cpu_kernels
from engines.torch.attention_padded import PaddedAttention
from engines.torch.paged_attention import TorchAttention

BACKENDS = ["kernel", "torch", "padded"]


def attention_backend(name: str):
    if name == "kernel":
        why = cpu_kernels.load()
        if why is not None:
            if shutil.which("c++") is None and shutil.which("g++") is None:
                pytest.skip(f"no C++ compiler, so no decode kernel ({why})")
            pytest.fail(f"a C++ compiler is here but the decode kernel did not build: {why}")
        return TorchAttention(decode_kernel=True)
    if name == "torch":
        return TorchAttention(decode_kernel=False)
    assert name == "padded", name
    return PaddedAttention()
