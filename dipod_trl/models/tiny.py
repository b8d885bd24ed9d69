"""A tiny masked diffusion language model: a bidirectional transformer encoder with RoPE and tied embeddings.

It is a real `transformers` model (config, `PreTrainedModel`, Auto-class registration), small enough that every test
and the demo run offline on a CPU, and plain enough to read in one sitting. The same network serves as a tiny
block-diffusion model ([`TinyBlockMDLMForBlockDiffusion`]): what makes a model block-causal is the attention mask its
sampler and likelihood pass (causal across blocks, bidirectional inside one), declared by its family's traits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedTokenizerBase
from transformers.modeling_layers import GradientCheckpointingLayer

from .kv_cache import BlockKVCache
from .layers import DiffusionPreTrainedModel, apply_rotary, bidirectional_attention
from .protocol import FamilyTraits
from .tokenizer import build_tiny_tokenizer


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


class TinyMDLMBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block with full (bidirectional) self-attention and a GELU MLP."""

    def __init__(self, config: TinyMDLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden, cos, sin, mask=None, cache: BlockKVCache | None = None, start: int | None = None):
        batch, length, _ = hidden.shape
        q, k, v = self.qkv(self.attn_norm(hidden)).view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, length, head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = bidirectional_attention(q, k, v, mask, self.layer_idx, cache, start)
        hidden = hidden + self.out(attn.transpose(1, 2).reshape(batch, length, -1))
        return hidden + self.down(F.gelu(self.up(self.mlp_norm(hidden))))


class TinyMDLMForMaskedDiffusion(DiffusionPreTrainedModel):
    """Bidirectional transformer that predicts every position's token; masked positions hold `mask_token_id`.

    `forward(input_ids, attention_mask=None, position_ids=None)` returns logits aligned with the input positions
    (padding, positions and the block key/value cache as in [`DiffusionPreTrainedModel`]). The mask token itself is
    never predicted.
    """

    config_class = TinyMDLMConfig
    base_model_prefix = "tiny_mdlm"
    _no_split_modules = ["TinyMDLMBlock"]
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}
    input_embeddings_path = "embed_tokens"
    output_embeddings_path = "lm_head"

    def __init__(self, config: TinyMDLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TinyMDLMBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def blocks(self) -> nn.ModuleList:
        return self.layers

    def head_dim_and_theta(self) -> tuple[int, float]:
        return self.config.hidden_size // self.config.num_attention_heads, self.config.rope_theta

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.norm(hidden))
        logits[..., self.config.mask_token_id] = torch.finfo(logits.dtype).min
        return logits


class TinyBlockMDLMConfig(TinyMDLMConfig):
    """Configuration of [`TinyBlockMDLMForBlockDiffusion`]: the tiny model's, under its own `model_type`."""

    model_type = "tiny_block_mdlm"


class TinyBlockMDLMForBlockDiffusion(TinyMDLMForMaskedDiffusion):
    """The tiny network as a block-diffusion LM (the SDAR / LLaDA2 way of decoding and scoring, at test size): the
    weights and forward are the tiny model's; its traits make samplers and the likelihood attend causally across blocks
    of `default_block_length` tokens (unless told another length) and bidirectionally inside one."""

    config_class = TinyBlockMDLMConfig
    base_model_prefix = "tiny_block_mdlm"
    diffusion_traits = FamilyTraits(block_causal=True, default_block_length=4)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase | None = None, seed: int = 0, block_causal: bool = False, **config_overrides
) -> TinyMDLMForMaskedDiffusion:
    """A freshly initialised tiny model (2 layers, width 64) over `tokenizer` (default: `build_tiny_tokenizer()`); with
    `block_causal=True` the same network as a [`TinyBlockMDLMForBlockDiffusion`]."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    config.update(config_overrides)
    torch.manual_seed(seed)
    if block_causal:
        return TinyBlockMDLMForBlockDiffusion(TinyBlockMDLMConfig(**config))
    return TinyMDLMForMaskedDiffusion(TinyMDLMConfig(**config))
