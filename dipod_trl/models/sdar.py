"""SDAR (JetAstra/SDAR-1.7B/4B/8B-Chat, and TraDo-4B/8B, RL-trained SDAR checkpoints) and SDAR-30B-A3B as plain
transformers models, without remote code.

SDAR is the Qwen3 architecture trained as a block diffusion LM: attention is causal across blocks of `block_size`
tokens and bidirectional inside one, the logits score the token at their own position (masked diffusion, not next
token: the published sampler reads the logits of the masked positions themselves), and the mask token is
`<|MASK|>` (151669). The config reads the keys of the published `config.json` (Qwen3's, plus `block_size`,
`mask_token_id` and training-only keys that are kept and ignored) and the modules carry the published names
(`model.layers.N.self_attn.{q,k,v,o}_proj`, `q_norm`, `k_norm`, `mlp.{gate,up,down}_proj`; for `sdar_moe`
`mlp.gate` and `mlp.experts.E.*`, see `moe.py`).

Attention takes the mask the caller gives: a (batch, 1, query, key) boolean mask (the block-causal mask of SDAR's
sampler and trainer, see `block_mask.py`) is used as given, a (batch, length) padding mask masks padded keys; the
block key/value cache and default positions are those of [`DiffusionPreTrainedModel`]. The published code's
differences that change no logits: flash-attn's fused RMSNorm (the published file keeps the plain formula beside the
kernel call; this is that formula), `flash_attn_func` for an all-true mask (this is SDPA without a mask), and its
fused training loss (not needed: the likelihood is computed from the logits).
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

SDAR_MASK_TOKEN_ID = 151669  # <|MASK|>
# Qwen's end of text and end of turn; SDAR's generation_config lists both as EOS.
SDAR_STOP_TOKENS = {"<|endoftext|>": 151643, "<|im_end|>": 151645}
SDAR_BLOCK_LENGTH = 4  # config `block_size` of every released SDAR / TraDo checkpoint, and generate.py's default


class SDARConfig(PreTrainedConfig):
    """Configuration of [`SDARForCausalLM`], with the keys of SDAR's published `config.json` (Qwen3's). Defaults are
    SDAR-4B-Chat's."""

    model_type = "sdar"

    vocab_size: int = 151936
    hidden_size: int = 2560
    intermediate_size: int = 9728
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    head_dim: int | None = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    attention_bias: bool = False
    attention_dropout: float = 0.0
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int = 36
    block_size: int = SDAR_BLOCK_LENGTH
    mask_token_id: int = SDAR_MASK_TOKEN_ID
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151643
    pad_token_id: int | None = None
    use_cache: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}.")
        rope_scaling = kwargs.pop("rope_scaling", None)  # null in every released SDAR config
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) != "default":
            raise ValueError(f"rope_scaling={rope_scaling}: this SDAR implementation covers plain rotary embeddings "
                             "(rope_scaling null, as in every released SDAR checkpoint).")
        if self.use_sliding_window:
            raise ValueError("use_sliding_window=True: SDAR attends to its whole context; set it to false.")
        # The published config names flex attention for its training kernel; the attention here is SDPA.
        kwargs.pop("attn_implementation", None)
        super().__post_init__(**kwargs)


class SDARMoeConfig(SDARConfig):
    """Configuration of [`SDARMoeForCausalLM`] (SDAR-30B-A3B, Qwen3-MoE): SDAR's keys plus the experts'. Defaults are
    SDAR-30B-A3B-Chat's."""

    model_type = "sdar_moe"

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 48
    num_key_value_heads: int | None = 4
    max_window_layers: int = 48
    num_experts: int = 128
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] | None = None
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001

    def __post_init__(self, **kwargs):
        if self.mlp_only_layers is None:
            self.mlp_only_layers = []
        if self.output_router_logits:
            raise ValueError("output_router_logits=True: the router's load-balancing loss is not implemented here "
                             "(RL post-training leaves it off, as the published configs do); set it to false.")
        super().__post_init__(**kwargs)

    def is_sparse_layer(self, layer: int) -> bool:
        return (layer not in self.mlp_only_layers and self.num_experts > 0
                and (layer + 1) % self.decoder_sparse_step == 0)


class SDARAttention(nn.Module):
    """Qwen3 attention: per-head RMSNorm of queries and keys before the rotary embedding, grouped-query SDPA."""

    def __init__(self, config: SDARConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                            config.head_dim)
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache: BlockKVCache | None, start: int | None):
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        att = bidirectional_attention(q, k, v, mask, self.layer_idx, cache, start,
                                      self.dropout if self.training else 0.0)
        return self.o_proj(att.transpose(1, 2).reshape(batch, length, -1))


def _sdar_mlp(config: SDARConfig, layer_idx: int) -> nn.Module:
    if isinstance(config, SDARMoeConfig) and config.is_sparse_layer(layer_idx):
        router = TopKRouter(config.num_experts, config.hidden_size, config.num_experts_per_tok,
                            score_function="softmax", norm_topk_prob=config.norm_topk_prob)
        return SparseMoeBlock(router, config.hidden_size, config.moe_intermediate_size, config.hidden_act)
    return SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_act)


class SDARDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: SDARConfig, layer_idx: int):
        super().__init__()
        self.self_attn = SDARAttention(config, layer_idx)
        self.mlp = _sdar_mlp(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: BlockKVCache | None = None, start: int | None = None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class SDARModel(nn.Module):
    """The published `SDARModel`'s module layout: `embed_tokens`, `layers`, `norm`."""

    def __init__(self, config: SDARConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(SDARDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class SDARForCausalLM(DiffusionPreTrainedModel):
    """SDAR: `forward(input_ids, attention_mask=None, position_ids=None)` returns logits aligned with the inputs
    (`logits[:, i]` scores the token at position i). Pass the block-causal pairwise mask (`block_mask.py`) for
    SDAR's own factorisation; a (batch, length) padding mask gives full attention over the real tokens."""

    config_class = SDARConfig
    base_model_prefix = "model"
    _no_split_modules = ["SDARDecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    input_embeddings_path = "model.embed_tokens"
    output_embeddings_path = "lm_head"
    diffusion_traits = FamilyTraits(default_mask_token_id=SDAR_MASK_TOKEN_ID,
                                    stop_tokens=tuple(SDAR_STOP_TOKENS.items()), block_causal=True,
                                    default_block_length=SDAR_BLOCK_LENGTH)
    published_code_repo = "JetLM/SDAR-4B-Chat"
    family_name = "SDAR (block diffusion, Qwen3 architecture)"
    family_tokenizer_class = LLaDATokenizer  # tokenizer.json: the standard fast tokenizer, no remote code
    # LoRA targets: every published linear layer but the output head (attention, dense MLPs); the routed experts of
    # `sdar_moe` are stacked tensors and its router is no linear layer, so neither gets adapters
    lora_target_modules: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj")

    def __init__(self, config: SDARConfig):
        super().__init__(config)
        self.model = SDARModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        init_moe_weights(module, self.config.initializer_range)

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def head_dim_and_theta(self) -> tuple[int, float]:
        return self.config.head_dim, self.config.rope_theta

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(hidden))


class SDARMoeForCausalLM(SDARForCausalLM):
    """SDAR-30B-A3B: SDAR with Qwen3-MoE feed-forward layers (softmax router, top-k renormalised, no shared expert)."""

    config_class = SDARMoeConfig
    published_code_repo = "JetLM/SDAR-30B-A3B-Chat"
    family_name = "SDAR-MoE (block diffusion, Qwen3-MoE architecture)"


register_expert_weight_conversion(SDARMoeConfig.model_type)
