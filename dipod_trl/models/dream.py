"""Dream (Dream-org/Dream-v0-Base-7B, Dream-v0-Instruct-7B) as a plain transformers model, without remote code.

Dream is Qwen2.5 trained as a masked diffusion LM: RMSNorm, rotary embeddings, grouped-query attention with biases on
the query/key/value projections, a SiLU-gated MLP, all with full (bidirectional) attention. It keeps the autoregressive
model's output convention: the hidden state at position i scores the token at position i + 1 (the adapter in
`adapters.py` shifts the logits back onto their positions). The config reads the published `config.json` keys (Qwen2
style, `model_type` "Dream") and the modules carry the published parameter names (`model.layers.N.self_attn.q_proj`,
`mlp.gate_proj`, `lm_head`, ...), so the hub checkpoints load with `from_pretrained`.

Beyond the published code: a (batch, length) padding mask is honoured (padded keys are masked and positions count from
each row's first real token), activation checkpointing, and the block key/value cache of [`BlockKVCache`]. The
published (batch, 1, query, key) boolean mask with explicit `position_ids` works as before.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .kv_cache import BlockKVCache
from .layers import DiffusionPreTrainedModel, RMSNorm, apply_rotary, bidirectional_attention
from .protocol import FamilyTraits
from .published_code_compat import DreamTokenizer


class DreamConfig(PreTrainedConfig):
    """Configuration of [`DreamModel`], with the keys of Dream's published `config.json`; defaults are Dream-7B's."""

    model_type = "Dream"

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    attention_dropout: float = 0.0
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int = 28
    mask_token_id: int = 151666
    pad_token_id: int | None = 151643
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151643
    use_cache: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size}, num_attention_heads={self.num_attention_heads}, num_key_value_heads="
                f"{self.num_key_value_heads}: hidden_size must be a multiple of the heads, and the heads of the "
                "key/value heads."
            )
        rope_scaling = kwargs.pop("rope_scaling", None)  # null in every released Dream config
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) != "default":
            raise ValueError(
                f"rope_scaling={rope_scaling}: this Dream implementation covers plain rotary embeddings only "
                "(rope_scaling null, as in every released Dream checkpoint)."
            )
        if self.use_sliding_window:
            raise ValueError("use_sliding_window=True: Dream attends to the whole sequence; set it to false.")
        super().__post_init__(**kwargs)


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: BlockKVCache | None, start: int | None):
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        att = bidirectional_attention(q, k, v, mask, self.layer_idx, cache, start, dropout)
        return self.o_proj(att.transpose(1, 2).reshape(batch, length, -1))


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DreamDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.self_attn = DreamAttention(config, layer_idx)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: BlockKVCache | None = None, start: int | None = None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, start)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBaseModel(nn.Module):
    """The published `DreamBaseModel`'s module layout: `embed_tokens`, `layers`, `norm`."""

    def __init__(self, config: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(DiffusionPreTrainedModel):
    """Dream: `forward(input_ids, attention_mask=None, position_ids=None)` returns next-position logits
    (`logits[:, i]` scores the token at position i + 1; [`as_diffusion_lm`] aligns them).

    `attention_mask` is a (batch, length) padding mask (positions then default to the running count of attended
    tokens) or the published (batch, 1, query, key) boolean mask; the block key/value cache as in
    [`DiffusionPreTrainedModel`].
    """

    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["DreamDecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    input_embeddings_path = "model.embed_tokens"
    output_embeddings_path = "lm_head"
    diffusion_traits = FamilyTraits(shift_logits=True, pairwise_attention_mask=True)
    family_tokenizer_class = DreamTokenizer
    published_code_repo = "Dream-org/Dream-v0-Instruct-7B"
    family_name = "Dream (masked diffusion, full attention)"

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def head_dim_and_theta(self) -> tuple[int, float]:
        return self.config.hidden_size // self.config.num_attention_heads, self.config.rope_theta

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(hidden))
