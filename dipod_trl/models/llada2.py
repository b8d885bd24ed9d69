"""LLaDA2.0 / LLaDA2.1 (inclusionAI/LLaDA2.0-mini, LLaDA2.1-mini, `model_type` `llada2_moe`) as a plain transformers
model, without remote code.

A block diffusion mixture-of-experts LM (16B total, about 1.4B active for the minis): fused `query_key_value`
projection, per-head RMSNorm of queries and keys, a rotary embedding on the first `partial_rotary_factor` of each head
only, dense SwiGLU MLPs in the first `first_k_dense_replace` layers and sparse ones after (a sigmoid router with an
expert bias and grouped top-k, `num_experts_per_tok` routed experts scaled by `routed_scaling_factor`, plus a shared
expert; see `moe.py`). The logits score the token at their own position (the published `generate` reads the logits of
the current block's masked positions), the mask token is `<|mask|>` (156895) and EOS `<|endoftext|>` (156892).

The config reads the keys of the published `config.json`, and the modules carry the published names
(`model.word_embeddings`, `model.layers.N.attention.{query_key_value, dense, query_layernorm, key_layernorm}`,
`mlp.{gate_proj, up_proj, down_proj}`, `mlp.gate.{weight, expert_bias}`, `mlp.experts.E.*`, `mlp.shared_experts.*`,
`lm_head`). Attention takes the mask the caller gives (the published forward takes the block-causal 4D mask as given
too) and the block key/value cache of [`DiffusionPreTrainedModel`].
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer

from .kv_cache import BlockKVCache
from .layers import DiffusionPreTrainedModel, RMSNorm, apply_rotary, bidirectional_attention
from .moe import SparseMoeBlock, SwiGLU, TopKRouter, init_moe_weights, register_expert_weight_conversion
from .protocol import FamilyTraits
from .published_code_compat import LLaDATokenizer

LLADA2_MASK_TOKEN_ID = 156895  # <|mask|>, the `mask_id` default of the published generate
LLADA2_EOS_TOKEN_ID = 156892  # <|endoftext|>, the `eos_id` default of the published generate (also the pad id)
LLADA2_BLOCK_LENGTH = 32  # the published generate's `block_length` default

# Values of published config keys that this implementation covers (every released LLaDA2 checkpoint uses them).
_SUPPORTED = {
    "score_function": ("sigmoid",),
    "router_dtype": ("fp32",),
    "use_rmsnorm": (True,),
    "norm_head": (False,),
    "use_sliding_window": (False,),
    "using_split_qkv_in_self_attention": (False,),
}


class LLaDA2MoeConfig(PreTrainedConfig):
    """Configuration of [`LLaDA2MoeModelLM`], with the keys of LLaDA2's published `config.json`. Defaults are
    LLaDA2.0-mini's (LLaDA2.1-mini's config is the same)."""

    model_type = "llada2_moe"

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int | None = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 4
    head_dim: int | None = 128
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    use_qk_norm: bool = True
    use_bias: bool = False
    rms_norm_eps: float = 1e-6
    norm_head: bool = False
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    output_dropout: float = 0.0
    initializer_range: float = 0.02
    max_position_embeddings: int = 32768
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    rotary_dim: int | None = None
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    num_experts: int | None = 256
    num_shared_experts: int | None = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    moe_intermediate_size: int | None = 512
    first_k_dense_replace: int = 1
    moe_router_enable_expert_bias: bool = True
    norm_topk_prob: bool = True
    norm_softmax: bool = False
    score_function: str = "sigmoid"
    router_dtype: str = "fp32"
    use_rmsnorm: bool = True
    using_split_qkv_in_self_attention: bool = False
    output_router_logits: bool = False
    mask_token_id: int = LLADA2_MASK_TOKEN_ID
    pad_token_id: int | None = LLADA2_EOS_TOKEN_ID
    eos_token_id: int | list[int] | None = LLADA2_EOS_TOKEN_ID
    bos_token_id: int | None = None
    use_cache: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for key, allowed in _SUPPORTED.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r}: this LLaDA2 implementation covers {key} in {allowed} "
                                 "(every released LLaDA2 checkpoint); the config asks for another architecture.")
        if self.output_router_logits:
            raise ValueError("output_router_logits=True: the router's load-balancing loss is not implemented here "
                             "(RL post-training leaves it off, as the published configs do); set it to false.")
        if not self.num_key_value_heads:  # the published default 0 means one key/value head per query head
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}.")
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) != "default":
            raise ValueError(f"rope_scaling={rope_scaling}: this LLaDA2 implementation covers plain rotary "
                             "embeddings (rope_scaling null, as in every released LLaDA2 checkpoint).")
        kwargs.pop("attn_implementation", None)
        super().__post_init__(**kwargs)

    @property
    def rope_dim(self) -> int:
        """Dimensions of each head that the rotary embedding turns (the published `int(head_dim * factor)`)."""
        return int(self.head_dim * self.partial_rotary_factor)


class LLaDA2MoeAttention(nn.Module):
    """Fused QKV projection, query/key RMSNorm per head, partial rotary embedding, grouped-query SDPA, `dense`."""

    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                            config.head_dim)
        self.rope_dim = config.rope_dim
        self.dropout = config.attention_dropout
        self.query_key_value = nn.Linear(config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
                                         bias=config.use_qkv_bias)
        self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def _rotate(self, x, cos, sin):
        return torch.cat([apply_rotary(x[..., : self.rope_dim], cos, sin), x[..., self.rope_dim :]], dim=-1)

    def forward(self, x, cos, sin, mask, cache: BlockKVCache | None, start: int | None):
        batch, length, _ = x.shape
        qkv = self.query_key_value(x).view(batch, length, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=-2)
        q = self.query_layernorm(q.transpose(1, 2))
        k = self.key_layernorm(k.transpose(1, 2))
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        att = bidirectional_attention(q, k, v.transpose(1, 2), mask, self.layer_idx, cache, start,
                                      self.dropout if self.training else 0.0)
        return self.dense(att.transpose(1, 2).reshape(batch, length, -1))


def _llada2_mlp(config: LLaDA2MoeConfig, layer_idx: int) -> nn.Module:
    if config.num_experts is None or layer_idx < config.first_k_dense_replace:
        return SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_act)
    router = TopKRouter(config.num_experts, config.hidden_size, config.num_experts_per_tok, score_function="sigmoid",
                        n_group=config.n_group, topk_group=config.topk_group,
                        routed_scaling_factor=config.routed_scaling_factor, expert_bias=True)
    shared = config.moe_intermediate_size * (config.num_shared_experts or 0)
    return SparseMoeBlock(router, config.hidden_size, config.moe_intermediate_size, config.hidden_act, shared)


class LLaDA2MoeDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.attention = LLaDA2MoeAttention(config, layer_idx)
        self.mlp = _llada2_mlp(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: BlockKVCache | None = None, start: int | None = None):
        x = x + self.attention(self.input_layernorm(x), cos, sin, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaDA2MoeModel(nn.Module):
    """The published `LLaDA2MoeModel`'s module layout: `word_embeddings`, `layers`, `norm`."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LLaDA2MoeDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LLaDA2MoeModelLM(DiffusionPreTrainedModel):
    """LLaDA2: `forward(input_ids, attention_mask=None, position_ids=None)` returns logits aligned with the inputs
    (`logits[:, i]` scores the token at position i). Pass the block-causal pairwise mask (`block_mask.py`)
    for LLaDA2's own factorisation; a (batch, length) padding mask gives full attention over the real tokens."""

    config_class = LLaDA2MoeConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDA2MoeDecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.word_embeddings.weight"}
    input_embeddings_path = "model.word_embeddings"
    output_embeddings_path = "lm_head"
    diffusion_traits = FamilyTraits(default_mask_token_id=LLADA2_MASK_TOKEN_ID,
                                    stop_tokens=(("<|endoftext|>", LLADA2_EOS_TOKEN_ID),), block_causal=True,
                                    default_block_length=LLADA2_BLOCK_LENGTH)
    published_code_repo = "inclusionAI/LLaDA2.0-mini"
    family_name = "LLaDA2 (block diffusion, mixture of experts)"
    family_tokenizer_class = LLaDATokenizer  # tokenizer.json: the standard fast tokenizer, no remote code
    # LoRA targets: every published linear layer but the output head (fused QKV, attention output, dense MLP, shared
    # expert); the routed experts are stacked tensors and the router is no linear layer, so neither gets adapters
    lora_target_modules: ClassVar[tuple[str, ...]] = ("query_key_value", "dense", "gate_proj", "up_proj",
                                                      "down_proj")

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        self.model = LLaDA2MoeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        init_moe_weights(module, self.config.initializer_range)

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def head_dim_and_theta(self) -> tuple[int, float]:
        return self.config.rope_dim, self.config.rope_theta

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(hidden))


register_expert_weight_conversion(LLaDA2MoeConfig.model_type)
