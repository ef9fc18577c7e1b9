"""A Llama-family decoder that runs one step (many sequences) as ONE flat batch.

All new tokens of all sequences are concatenated (vLLM-style varlen). Per layer, the new
K/V go into the paged cache at the step's slots, and the attention backend reads each
sequence's context + new tokens back from the cache. Only the rows that sample a token
go through the final norm and LM head, since for long prompts the LM head would
otherwise dominate the step (vocab 128256).

Weights are kept fused (qkv_proj = [q; k; v], gate_up_proj = [gate; up]) so that a layer
costs 4 matmuls; checkpoint.py maps Hugging Face names onto them.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from engines.torch.config import LlamaConfig
from engines.torch.paged_attention import KVCache, write_kv
from engines.torch.fused import TorchOps
from engines.torch.rope import cos_sin, inv_frequencies


class AttentionBackend(Protocol):
    """Orders a step's seqs, builds per-step metadata (with `positions` and
    `slot_mapping`) and attends. See paged_attention.TorchAttention."""

    def order(self, seqs) -> list[int]: ...

    def build(self, seqs, block_size: int): ...

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pages: torch.Tensor,
               v_pages: torch.Tensor, meta, scale: float) -> torch.Tensor: ...


def linear(module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """x @ W.T for the weight `name` of `module`, through its CPU-packed copy if any."""
    packed = module.packed.get(name)
    if packed is None:
        return F.linear(x, getattr(module, name))
    if packed.dtype != x.dtype:  # a float32 copy of bf16 weights (see pack_cpu_weights)
        return torch.ops.mkldnn._linear_pointwise(x.float(), packed, None, "none", [], "").to(x.dtype)
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def native_bf16_matmul() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BW/VL/DQ, AVX-NE-CONVERT, or
    newer). Without them torch's bf16 GEMM is emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_cpu_weights(model: "LlamaModel", batch_hint: int = 32) -> bool:
    """Give every linear layer a oneDNN-packed copy of its weight; False if unsupported.

    On CPU, oneDNN's blocked weight layout makes the vocab-sized LM head GEMM ~1.5x
    (bf16) to ~2.5x (float32) faster than F.linear. The copies are opaque, per-process
    tensors: the plain parameters stay the canonical (shareable, savable) weights, and
    packing costs one extra copy of the weights in memory.

    A bf16 model on a CPU without native bf16 matmul (`native_bf16_matmul`; e.g. AVX2
    only) gets float32 copies instead: its linears upcast the input, multiply in float32
    and round the output to bf16. The weights' bf16 values upcast exactly, so this is a
    bf16 GEMM with float32 accumulation, as oneDNN's is; torch's emulated bf16 GEMM took
    257 ms for the 128k-vocab LM head at batch 48 on 2 AVX2 cores, this path 38 ms. The
    float32 copies take twice the memory of bf16 ones.
    """
    if (model.embed_tokens.device.type != "cpu" or not torch.backends.mkldnn.is_available()
            or model.dtype not in (torch.float32, torch.bfloat16)):
        return False
    upcast = model.dtype == torch.bfloat16 and not native_bf16_matmul()
    try:
        with torch.inference_mode():
            for module, names in model.linear_weights():
                module.packed = {n: torch.ops.mkldnn._reorder_linear_weight(
                    getattr(module, n).detach().float() if upcast else getattr(module, n).detach(),
                    batch_hint) for n in names}
    except (RuntimeError, AttributeError):  # op missing or dtype unsupported: stay plain
        for module, _ in model.linear_weights():
            module.packed = {}
        return False
    return True


def _empty(*shape: int, dtype, device) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device), requires_grad=False)


class LlamaLayer(nn.Module):
    def __init__(self, c: LlamaConfig, dtype: torch.dtype, device):
        super().__init__()
        h = c.hidden_size
        self.input_layernorm = _empty(h, dtype=dtype, device=device)
        self.qkv_proj = _empty(c.q_size + 2 * c.kv_size, h, dtype=dtype, device=device)
        self.o_proj = _empty(h, c.q_size, dtype=dtype, device=device)
        # Qwen2's q, k, v biases ([q; k; v]) and Llama's attention_bias (also o); None without.
        self.qkv_bias = _empty(c.q_size + 2 * c.kv_size, dtype=dtype, device=device) if c.qkv_bias else None
        self.o_bias = _empty(h, dtype=dtype, device=device) if c.o_bias else None
        self.post_attention_layernorm = _empty(h, dtype=dtype, device=device)
        self.gate_up_proj = _empty(2 * c.intermediate_size, h, dtype=dtype, device=device)
        self.down_proj = _empty(h, c.intermediate_size, dtype=dtype, device=device)
        self.packed: dict[str, torch.Tensor] = {}  # see pack_cpu_weights


class LlamaModel(nn.Module):
    """Weights + forward. Build with checkpoint.load_model(); weights start uninitialised."""

    def __init__(self, config: LlamaConfig, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.config = config
        c = config
        self.embed_tokens = _empty(c.vocab_size, c.hidden_size, dtype=dtype, device=device)
        self.layers = nn.ModuleList(LlamaLayer(c, dtype, device)
                                    for _ in range(c.num_hidden_layers))
        self.norm = _empty(c.hidden_size, dtype=dtype, device=device)
        self.lm_head = (self.embed_tokens if c.tie_word_embeddings else
                        _empty(c.vocab_size, c.hidden_size, dtype=dtype, device=device))
        # A plain attribute, not a buffer, so that casting the model leaves it float32.
        self.inv_freq = inv_frequencies(c)
        self.scale = c.head_dim ** -0.5
        self.packed: dict[str, torch.Tensor] = {}

    def linear_weights(self):
        """(module, weight names) of every matmul, for pack_cpu_weights."""
        yield self, ("lm_head",)
        for layer in self.layers:
            yield layer, ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

    def _apply(self, fn, *args, **kwargs):
        # Packed copies would go stale when .to() replaces the weights: drop them.
        for module, _ in self.linear_weights():
            module.packed = {}
        return super()._apply(fn, *args, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.dtype

    def forward(self, input_ids: torch.Tensor, meta, kv_cache: KVCache,
                attention: AttentionBackend, sample_rows: torch.Tensor, ops=TorchOps) -> torch.Tensor:
        """Logits [len(sample_rows), vocab] (model dtype) for the flat batch `input_ids`.

        `meta` comes from attention.build(); `sample_rows` are flat-batch rows whose
        next-token logits are wanted; `ops` the elementwise ops (fused.py: TorchOps or
        FusedOps). Each residual add is fused with the norm that follows it.
        """
        eps, layers = self.config.rms_norm_eps, self.layers
        cos, sin = cos_sin(self.inv_freq, meta.positions, self.dtype)
        h = F.embedding(input_ids, self.embed_tokens)
        x = ops.rms_norm(h, layers[0].input_layernorm, eps)
        for i, layer in enumerate(layers):
            attn = self._attention(layer, x, cos, sin, *kv_cache.layer(i), meta, attention, ops)
            h, x = ops.add_rms_norm(h, attn, layer.post_attention_layernorm, eps)
            mlp = linear(layer, "down_proj", ops.silu_and_mul(linear(layer, "gate_up_proj", x)))
            if i + 1 < len(layers):
                h, x = ops.add_rms_norm(h, mlp, layers[i + 1].input_layernorm, eps)
        # The last residual add and the final norm only for the rows that sample.
        h = h[sample_rows] + mlp[sample_rows]
        return linear(self, "lm_head", ops.rms_norm(h, self.norm, eps))

    def _attention(self, layer: LlamaLayer, x, cos, sin, k_pages, v_pages, meta, attention, ops):
        c, n = self.config, x.shape[0]
        qkv = linear(layer, "qkv_proj", x)
        if layer.qkv_bias is not None:  # before RoPE, as in Qwen2Attention
            qkv = qkv + layer.qkv_bias
        # q and k are rotated together: one view over the first q_size + kv_size columns.
        qk = ops.rope(qkv[:, :c.q_size + c.kv_size].view(n, -1, c.head_dim), cos, sin)
        q, k = qk[:, :c.num_attention_heads], qk[:, c.num_attention_heads:]
        v = qkv[:, c.q_size + c.kv_size:].view(n, c.num_key_value_heads, c.head_dim)
        write_kv(k_pages, v_pages, meta.slot_mapping, k, v)
        o = attention.attend(q, k, v, k_pages, v_pages, meta, self.scale)
        out = linear(layer, "o_proj", o.reshape(n, c.q_size))
        return out if layer.o_bias is None else out + layer.o_bias
