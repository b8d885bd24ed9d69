"""LLaDA (GSAI-ML/LLaDA-8B-Base, -Instruct, LLaDA-1.5) as a plain transformers model, without remote code.

The architecture is a Llama-style encoder with full (bidirectional) attention: RMSNorm before attention and MLP, rotary
position embeddings, a SiLU-gated MLP, no biases, an untied output layer. The config reads the keys of the published
`config.json` (OLMo style: `d_model`, `n_heads`, `n_layers`, `mlp_hidden_size`, ...) and the modules carry the published
parameter names (`model.transformer.blocks.N.q_proj`, `ff_proj`, `up_proj`, `ff_out`, ...), so the hub checkpoints load
with `from_pretrained` and LoRA adapters trained on the published code (d1's `target_modules`) load unchanged.

Differences from the published code that change no logits of unpadded inputs: `attention_mask` is honoured (padded keys
are masked and positions count from each row's first real token, so a left-padded row's logits equal the unpadded
row's); activation checkpointing works through `gradient_checkpointing_enable()`; the block key/value cache of
[`BlockKVCache`] is supported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .kv_cache import BlockKVCache, span_start

# Values of the published config keys that this implementation covers (every released LLaDA checkpoint uses them).
_SUPPORTED = {
    "block_type": ("llama",),
    "layer_norm_type": ("rms",),
    "activation_type": ("silu",),
    "rope": (True,),
    "alibi": (False,),
    "attention_layer_norm": (False,),
    "input_emb_norm": (False,),
    "scale_logits": (False,),
    "block_group_size": (1,),
}


@dataclass
class DiffusionLMOutput(ModelOutput):
    """Logits aligned with the inputs, and the [`BlockKVCache`] of a full forward run with `use_cache=True`.

    transformers 5 names the cache field `cache`; `output.past_key_values` reads the same field.
    """

    logits: torch.Tensor | None = None
    cache: BlockKVCache | None = None


class LLaDAConfig(PreTrainedConfig):
    """Configuration of [`LLaDAModelLM`], with the key names of LLaDA's published `config.json`.

    Defaults are LLaDA-8B's. Keys of the published config that only concern its training code (`init_fn`,
    `precision`, dropouts, `flash_attention`, ...) are kept as attributes and otherwise ignored; keys that would change
    the architecture are checked against the values this implementation covers.
    """

    model_type = "llada"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = None
    n_layers: int = 32
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    weight_tying: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False
    init_std: float = 0.02
    init_device: str | None = "cpu"
    mask_token_id: int = 126336
    eos_token_id: int | list[int] | None = 126081
    pad_token_id: int | None = 126081
    bos_token_id: int | None = None
    block_type: str = "llama"
    layer_norm_type: str = "rms"
    activation_type: str = "silu"
    rope: bool = True
    alibi: bool = False
    attention_layer_norm: bool = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    block_group_size: int = 1
    use_cache: bool = False
    tie_word_embeddings: bool = False  # `weight_tying` is LLaDA's name for it; the model ties by itself

    def __post_init__(self, **kwargs):
        for key, allowed in _SUPPORTED.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{key}={getattr(self, key)!r}: this LLaDA implementation covers {key} in {allowed} (every "
                    "released LLaDA checkpoint); the config asks for an architecture it does not implement."
                )
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}: d_model must be a "
                "multiple of n_heads and n_heads a multiple of n_kv_heads."
            )
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ValueError(f"embedding_size={self.embedding_size} must be at least vocab_size={self.vocab_size}.")
        self.tie_word_embeddings = False
        super().__post_init__(**kwargs)

    @property
    def intermediate_size(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then scaled by the weight in the input's dtype (as published)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin of shape (batch, 1, length, head_dim) for the rotary embedding at `position_ids`."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float) / head_dim)
    angles = position_ids.float().unsqueeze(-1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (batch, heads, length, head_dim) in float32 and return it in its own dtype."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    return (x32 * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


def default_positions(attention_mask: torch.Tensor | None, length: int, device) -> torch.Tensor:
    """Positions counted from each row's first real token (0 for a row without padding)."""
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.arange(length, device=device).unsqueeze(0)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def attention_keep_mask(
    attention_mask: torch.Tensor | None, query_length: int, start: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """The SDPA mask of queries `[start, start + query_length)` over all keys, or None when nothing is masked.

    A (batch, keys) padding mask masks padded keys; each query keeps its own key so that no attention row is empty (an
    empty row is NaN and would leak through the values). A (batch, 1, queries, keys) boolean mask is used as given
    (Dream's published convention); a float one is an additive bias.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() == 4:
        mask = attention_mask
        if mask.shape[-2] != query_length:
            mask = mask[..., start : start + query_length, :]
        return mask if mask.dtype == torch.bool else mask.to(dtype)
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must be (batch, length) or (batch, 1, query, key), got {tuple(attention_mask.shape)}."
        )
    if bool(attention_mask.all()):
        return None  # no padding: leave SDPA free to pick the fused kernels
    keys = attention_mask.shape[-1]
    own_key = torch.arange(keys, device=attention_mask.device) == torch.arange(
        start, start + query_length, device=attention_mask.device
    ).unsqueeze(-1)
    return attention_mask.bool()[:, None, None, :] | own_key


def bidirectional_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    layer: int,
    cache: BlockKVCache | None,
    start: int | None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Full attention over all keys. A full forward with a cache records this layer's keys/values into it; a span
    forward (`start` set) reads the keys/values outside the span from it."""
    if cache is not None and start is None:
        cache.store(layer, k, v)
    elif cache is not None:
        k, v = cache.with_span(layer, k, v, start)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=q.shape[1] != k.shape[1]
    )


class LLaDALlamaBlock(GradientCheckpointingLayer):
    """Pre-norm block: full attention, then a SiLU-gated MLP (`ff_out(silu(ff_proj(x)) * up_proj(x))`)."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.d_model // config.n_heads
        self.rope_theta = config.rope_theta
        qkv_bias = config.include_bias or config.include_qkv_bias
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=config.include_bias)
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_proj = nn.Linear(config.d_model, config.intermediate_size, bias=config.include_bias)
        self.up_proj = nn.Linear(config.d_model, config.intermediate_size, bias=config.include_bias)
        self.ff_out = nn.Linear(config.intermediate_size, config.d_model, bias=config.include_bias)

    def forward(self, x, cos, sin, mask=None, cache: BlockKVCache | None = None, start: int | None = None):
        batch, length, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        att = bidirectional_attention(q, k, v, mask, self.layer_idx, cache, start)
        x = x + self.attn_out(att.transpose(1, 2).reshape(batch, length, -1))
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDAModel(nn.Module):
    """The published `LLaDAModel`'s module layout: `transformer.{wte, blocks, ln_f, ff_out}`."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        vocab = config.embedding_size or config.vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab, config.d_model),
                blocks=nn.ModuleList(LLaDALlamaBlock(config, i) for i in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
            )
        )
        if not config.weight_tying:
            self.transformer["ff_out"] = nn.Linear(config.d_model, vocab, bias=config.include_bias)


class LLaDAModelLM(PreTrainedModel):
    """LLaDA: `forward(input_ids, attention_mask=None, position_ids=None)` returns logits aligned with the inputs
    (`logits[:, i]` scores the token at position i), over `embedding_size` ids.

    Positions default to the running count of attended tokens, so left padding does not shift them. With
    `use_cache=True` the output's `past_key_values` is a [`BlockKVCache`]; a forward over a span of the sequence
    with `past_key_values=cache, cache_position=torch.arange(start, end)` recomputes only the span (see `kv_cache`).
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    supports_block_kv_cache = True
    _supports_sdpa = True
    _no_split_modules = ["LLaDALlamaBlock"]

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def set_input_embeddings(self, value):
        self.model.transformer.wte = value

    def get_output_embeddings(self):
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def set_output_embeddings(self, value):
        self.model.transformer.ff_out = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: BlockKVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        cache: BlockKVCache | None = None,
        **kwargs,
    ) -> DiffusionLMOutput:
        transformer = self.model.transformer
        past_key_values = past_key_values if past_key_values is not None else cache
        start = span_start(cache_position) if past_key_values is not None else None
        length = input_ids.shape[1]
        if position_ids is None:
            full_length = attention_mask.shape[-1] if attention_mask is not None else (start or 0) + length
            position_ids = default_positions(attention_mask, full_length, input_ids.device)
            position_ids = position_ids[:, (start or 0) : (start or 0) + length]
        cos, sin = rotary_cos_sin(position_ids, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        x = transformer.wte(input_ids)
        mask = attention_keep_mask(attention_mask, length, start or 0, x.dtype)
        cache = past_key_values if start is not None else (BlockKVCache() if use_cache else None)
        for block in transformer.blocks:
            x = block(x, cos, sin, mask, cache=cache, start=start)
        x = transformer.ln_f(x)
        logits = F.linear(x, transformer.wte.weight) if self.config.weight_tying else transformer.ff_out(x)
        return DiffusionLMOutput(logits=logits, cache=cache if start is None else None)
