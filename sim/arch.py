"""Layer shapes of the decoders the simulator knows, as weight matrices.

Two attention kinds and two MLP kinds:
- GQA attention (Llama): fused QKV and O projections.
- MLA attention (DeepSeek-V2/V3, DeepSeek-V2 paper, arXiv:2405.04434, section 2.1):
  queries either projected directly (V2-Lite) or through a low-rank q_a -> RMSNorm ->
  q_b (V3, q_lora_rank 1536); keys/values compressed by kv_a into one latent of
  kv_lora_rank (512) plus a shared RoPE key of qk_rope_head_dim (64) = 576 elements,
  which is all the KV cache holds; kv_b decompresses the latent into per-head k_nope
  (128) and v (128); O maps heads x v_head_dim back to hidden.
- Dense SwiGLU MLP, or a DeepSeekMoE layer: a router (hidden x E), shared experts
  (SGLang and vLLM build them as ONE SwiGLU MLP of width n_shared x expert_intermediate)
  and E routed experts (SwiGLU, expert_intermediate wide) of which top-k run per token.
  The first `num_dense_layers` layers (config.json first_k_dense_replace) are dense.

TP sharding follows vLLM/SGLang: column-parallel layers split their output, row-parallel
their input; kv_a (and V3's q_a) and the router are ReplicatedLinear on every rank (they
are small and their outputs are needed whole); routed experts are sharded as in SGLang's
default TP-MoE: every GPU holds 1/tp of EVERY expert's intermediate dimension.

One source for parameter counts (specs.py), weights per GPU (memory.py) and GEMM shapes
(cost model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.specs import ModelSpec


@dataclass(frozen=True, slots=True)
class MLASpec:
    """Multi-head latent attention dims (config.json names in comments)."""

    q_lora_rank: int          # q_lora_rank; 0 = no query compression (V2-Lite: null)
    kv_lora_rank: int         # kv_lora_rank
    qk_nope_head_dim: int     # qk_nope_head_dim
    qk_rope_head_dim: int     # qk_rope_head_dim
    v_head_dim: int           # v_head_dim

    @property
    def latent_dim(self) -> int:
        """Elements cached per token per layer: the KV latent plus the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True)
class MoESpec:
    """DeepSeekMoE layer dims (config.json names in comments)."""

    num_routed_experts: int   # n_routed_experts (E)
    num_active_experts: int   # num_experts_per_tok (k, routed experts per token)
    num_shared_experts: int   # n_shared_experts
    expert_intermediate: int  # moe_intermediate_size
    num_dense_layers: int     # first_k_dense_replace: leading layers with the dense MLP


@dataclass(frozen=True, slots=True)
class Linear:
    """A [k x n] weight. shard: 'col' splits n over TP, 'row' splits k, 'rep' replicates.
    quantized: stored in the model's weight dtype (False: in the activation dtype, e.g.
    DeepSeek-V3's FP8 checkpoint keeps the router gate in bf16)."""

    k: int
    n: int
    shard: str = "col"
    quantized: bool = True

    @property
    def params(self) -> int:
        return self.k * self.n

    def local_kn(self, tp: int) -> tuple[float, float]:
        if self.shard == "col":
            return self.k, self.n / tp
        if self.shard == "row":
            return self.k / tp, self.n
        return self.k, self.n


def expected_touched_experts(num_tokens: float, num_active: int, num_experts: int) -> float:
    """Distinct routed experts a batch of `num_tokens` tokens touches in one MoE layer,
    each token picking `num_active` of `num_experts`, ASSUMING uniform independent routing:
    an expert is missed by one token with probability 1 - k/E, by all m with (1 - k/E)^m.
    m = 1 gives k; large m tends to E. Real routers are skewed (fewer distinct, hotter
    experts); DeepSeek's load balancing pushes them towards uniform over a batch."""
    if num_tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - num_active / num_experts) ** num_tokens)


def attention_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """Per-token projections of one attention block (MLA: without kv_b, see kv_up_linear)."""
    if m.mla is None:
        q_dim, kv_dim = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
        return Linear(m.hidden, q_dim + 2 * kv_dim, "col"), Linear(q_dim, m.hidden, "row")
    a = m.mla
    q_out = m.num_heads * a.qk_head_dim
    if a.q_lora_rank:
        q = (Linear(m.hidden, a.q_lora_rank, "rep"), Linear(a.q_lora_rank, q_out, "col"))
    else:
        q = (Linear(m.hidden, q_out, "col"),)
    return q + (Linear(m.hidden, a.latent_dim, "rep"),
                Linear(m.num_heads * a.v_head_dim, m.hidden, "row"))


def kv_up_linear(m: ModelSpec) -> Linear | None:
    """MLA's kv_b: latent -> per-head k_nope and v (None for GQA)."""
    if m.mla is None:
        return None
    a = m.mla
    return Linear(a.kv_lora_rank, m.num_heads * (a.qk_nope_head_dim + a.v_head_dim), "col")


def mlp_linears(m: ModelSpec, moe_layer: bool) -> tuple[Linear, ...]:
    """Dense SwiGLU (fused gate+up, down); for an MoE layer the router and the shared
    experts (routed experts: expert_linears)."""
    if not moe_layer:
        width = m.intermediate
        return Linear(m.hidden, 2 * width, "col"), Linear(width, m.hidden, "row")
    e = m.moe
    router = (Linear(m.hidden, e.num_routed_experts, "rep", quantized=False),)
    width = e.num_shared_experts * e.expert_intermediate
    if not width:
        return router
    return router + (Linear(m.hidden, 2 * width, "col"), Linear(width, m.hidden, "row"))


def expert_linears(m: ModelSpec) -> tuple[Linear, ...]:
    """One routed expert: fused gate+up (column) and down (row), 1/tp of each per GPU."""
    i = m.moe.expert_intermediate
    return Linear(m.hidden, 2 * i, "col"), Linear(i, m.hidden, "row")


def norm_params_per_layer(m: ModelSpec) -> int:
    """Two RMSNorms on the residual stream, plus MLA's kv_a (and q_a) norms, plus Qwen3's
    per-head query and key norms (one head_dim weight each, shared by the heads)."""
    extra = m.mla.kv_lora_rank + m.mla.q_lora_rank if m.mla else 0
    return 2 * m.hidden + extra + (2 * m.head_dim if m.qk_norm else 0)


def bias_params_per_layer(m: ModelSpec) -> int:
    """Attention biases: q, k and v (Qwen2; Llama and Qwen3 with attention_bias) and o."""
    qkv = (m.num_heads + 2 * m.num_kv_heads) * m.head_dim if m.qkv_bias else 0
    return qkv + (m.hidden if m.o_bias else 0)


def num_moe_layers(m: ModelSpec) -> int:
    return 0 if m.moe is None else m.num_layers - m.moe.num_dense_layers


def layer_params(m: ModelSpec, moe_layer: bool, num_experts: float | None = None) -> float:
    """Parameters of one layer counting `num_experts` routed experts (None: all of them)."""
    lins = attention_linears(m) + mlp_linears(m, moe_layer)
    kv_up = kv_up_linear(m)
    total = sum(x.params for x in lins) + (kv_up.params if kv_up else 0)
    if moe_layer:
        e = m.moe.num_routed_experts if num_experts is None else num_experts
        total += e * sum(x.params for x in expert_linears(m))
    return total + norm_params_per_layer(m) + bias_params_per_layer(m)


def layer_linears(m: ModelSpec, moe_layer: bool) -> tuple[Linear, ...]:
    """Every weight matrix of one layer, each routed expert's included."""
    kv_up = kv_up_linear(m)
    lins = attention_linears(m) + ((kv_up,) if kv_up else ()) + mlp_linears(m, moe_layer)
    if moe_layer:
        lins += expert_linears(m) * m.moe.num_routed_experts
    return lins


def activation_elems_per_token(m: ModelSpec, tp: int) -> int:
    """Widest live activation set of one layer's forward per token on one TP rank:
    hidden states + residual, the attention inputs, the MLP intermediates."""
    mlp = 3 * m.intermediate // tp
    if m.mla is None:  # q, k, v; gate+up and the SiLU output
        heads, kv_heads = m.num_heads // tp, max(1, m.num_kv_heads // tp)
        attn = (heads + 2 * kv_heads) * m.head_dim
        if m.moe is None:
            return 2 * m.hidden + attn + mlp
    else:
        a, heads = m.mla, m.num_heads // tp
        # q, q latent, kv latent, and the prefill path's decompressed k_nope + v per head.
        attn = heads * a.qk_head_dim + a.q_lora_rank + a.latent_dim \
            + heads * (a.qk_nope_head_dim + a.v_head_dim)
    if m.moe is not None:  # fused-MoE caches per (token, expert): gate+up, SiLU out, down out
        e = m.moe
        routed = e.num_active_experts * (3 * e.expert_intermediate // tp + m.hidden)
        mlp = max(mlp, routed + 3 * e.num_shared_experts * e.expert_intermediate // tp)
    return 2 * m.hidden + attn + mlp


def pipeline_stages(num_layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    """[first, end) layers of each pipeline stage, by vLLM 0.6.0's get_pp_indices (the
    paper's baseline): num_layers // pp each, the remainder to the last stage (126 layers
    over 4 -> 31, 31, 31, 33). Later vLLM spreads the remainder over middle stages."""
    if pp < 1 or pp > num_layers:
        raise ValueError(f"pp={pp} must be in [1, num_layers={num_layers}]")
    per = num_layers // pp
    return tuple((i * per, num_layers if i == pp - 1 else (i + 1) * per) for i in range(pp))
