"""A tiny masked diffusion language model: a bidirectional transformer encoder with RoPE and tied embeddings.

It is a real `transformers` model (config, `PreTrainedModel`, Auto-class registration), small enough that every test
and the demo run offline on a CPU, and plain enough to read in one sitting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from .kv_cache import BlockKVCache, span_start


class TinyMDLMConfig(PreTrainedConfig):
    """Configuration of [`TinyMDLMForMaskedDiffusion`].

    Takes the usual transformers size arguments. `mask_token_id` defaults to the last id of the vocabulary, which is
    where [`build_tiny_tokenizer`] puts its `<mask>` token.
    """

    model_type = "tiny_mdlm"

    vocab_size: int = 128
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.mask_token_id is None:
            self.mask_token_id = self.vocab_size - 1
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the vocabulary (size {self.vocab_size}).")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}."
            )
        if (self.hidden_size // self.num_attention_heads) % 2 != 0:
            raise ValueError("The attention head dimension must be even for rotary position embeddings.")
        super().__post_init__(**kwargs)


@dataclass
class TinyMDLMOutput(MaskedLMOutput):
    """`MaskedLMOutput` plus the block key/value cache of a full forward with `use_cache=True`.

    transformers names the field `cache`; `output.past_key_values` reads the same field."""

    cache: BlockKVCache | None = None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class TinyMDLMBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block with full (bidirectional) self-attention and a GELU MLP."""

    def __init__(self, config: TinyMDLMConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden, cos, sin, attn_bias, kv_cache: BlockKVCache | None = None, layer: int = 0,
                start: int | None = None):
        """`start` set: `hidden` is the span `[start, start + length)` and the other keys/values come from `kv_cache`.
        `start` None with a `kv_cache`: a full forward that records this layer's keys/values in it."""
        batch, length, _ = hidden.shape
        q, k, v = self.qkv(self.attn_norm(hidden)).view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, length, head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if kv_cache is not None and start is not None:
            k, v = kv_cache.with_span(layer, k, v, start)
        elif kv_cache is not None:
            kv_cache.store(layer, k, v)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        hidden = hidden + self.out(attn.transpose(1, 2).reshape(batch, length, -1))
        return hidden + self.down(F.gelu(self.up(self.mlp_norm(hidden))))


class TinyMDLMForMaskedDiffusion(PreTrainedModel):
    """Bidirectional transformer that predicts every position's token; masked positions hold `mask_token_id`.

    `forward(input_ids, attention_mask=None, position_ids=None)` returns a `MaskedLMOutput` whose `logits` are aligned
    with the input positions. Positions default to the running count of attended tokens, so a left-padded row gets the
    same positions (and the same logits) as the unpadded row. The mask token itself is never predicted.

    It supports the block key/value cache of `dipod_trl.models.kv_cache`: `use_cache=True` returns the keys/values of
    a full forward in `past_key_values`, and a span forward (`past_key_values=cache`, `cache_position` of the span)
    recomputes the span only.
    """

    config_class = TinyMDLMConfig
    base_model_prefix = "tiny_mdlm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TinyMDLMBlock"]
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    supports_block_kv_cache = True

    def __init__(self, config: TinyMDLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TinyMDLMBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        head_dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif module is self:
            head_dim = self.config.hidden_size // self.config.num_attention_heads
            steps = torch.arange(0, head_dim, 2, dtype=torch.float32, device=self.inv_freq.device)
            self.inv_freq.copy_(1.0 / (self.config.rope_theta ** (steps / head_dim)))

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: BlockKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        start = span_start(cache_position) if past_key_values is not None else None
        if start is None and past_key_values is not None:
            raise ValueError("past_key_values: a span forward needs the span's cache_position (see kv_cache.py).")
        if position_ids is None:
            if attention_mask is None:
                full = torch.arange(start or 0, (start or 0) + input_ids.shape[1], device=input_ids.device)
                position_ids = full.expand_as(input_ids)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
                if start is not None:
                    position_ids = position_ids[:, start:start + input_ids.shape[1]]
        angles = position_ids.unsqueeze(-1).float() * self.inv_freq  # (batch, length, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # (batch, 1, length, head_dim)
        hidden = self.embed_tokens(input_ids)
        cos, sin = angles.cos().to(hidden.dtype), angles.sin().to(hidden.dtype)

        attn_bias = None
        if attention_mask is not None:
            # Additive bias over keys; padded keys get -inf. A padded query attends to its own key too, so that a fully
            # padded row stays finite. Queries are the span's positions, keys the whole sequence.
            length = attention_mask.shape[1]
            queries = torch.arange(start or 0, (start or 0) + input_ids.shape[1], device=input_ids.device)
            own_key = queries[:, None] == torch.arange(length, device=input_ids.device)
            keep = attention_mask.bool()[:, None, None, :] | own_key
            attn_bias = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
            attn_bias = attn_bias.masked_fill(~keep, torch.finfo(hidden.dtype).min)

        cache = BlockKVCache() if use_cache and past_key_values is None else None
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, cos, sin, attn_bias, past_key_values if start is not None else cache, index, start)
        logits = self.lm_head(self.norm(hidden))
        logits[..., self.config.mask_token_id] = torch.finfo(logits.dtype).min
        return TinyMDLMOutput(logits=logits, cache=cache)
