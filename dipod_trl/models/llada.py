"""LLaDA (GSAI-ML/LLaDA-8B-Base, -Instruct, LLaDA-1.5) as a plain transformers model, without remote code.

The architecture is a Llama-style encoder with full (bidirectional) attention: RMSNorm before attention and MLP, rotary
position embeddings, a SiLU-gated MLP, no biases, an untied output layer. The config reads the keys of the published
`config.json` (OLMo style: `d_model`, `n_heads`, `n_layers`, `mlp_hidden_size`, ...) and the modules carry the published
parameter names (`model.transformer.blocks.N.q_proj`, `ff_proj`, `up_proj`, `ff_out`, ...), so the hub checkpoints load
with `from_pretrained` and LoRA adapters trained on the published code (d1's `target_modules`) load unchanged.

Differences from the published code that change no logits of unpadded inputs: `attention_mask` is honoured (padded keys
are masked and positions count from each row's first real token, so a left-padded row's logits equal the unpadded
row's); activation checkpointing works through `activation_checkpointing_enable()` (or the `gradient_checkpointing`
training argument); the block key/value cache of [`BlockKVCache`] is supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_layers import GradientCheckpointingLayer

from .kv_cache import BlockKVCache
from .layers import DiffusionPreTrainedModel, RMSNorm, apply_rotary, bidirectional_attention
from .protocol import FamilyTraits
from .published_code_compat import LLaDATokenizer

LLADA_MASK_TOKEN_ID = 126336
# LLaDA ends a completion with <|endoftext|> (EOS, 126081) or, in chat turns, <|eot_id|> (EOT, 126348); its sampler
# fills the rest of the canvas with EOS.
LLADA_STOP_TOKENS = {"<|endoftext|>": 126081, "<|eot_id|>": 126348}

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
    mask_token_id: int = LLADA_MASK_TOKEN_ID
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


class LLaDALlamaBlock(GradientCheckpointingLayer):
    """Pre-norm block: full attention, then a SiLU-gated MLP (`ff_out(silu(ff_proj(x)) * up_proj(x))`)."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.d_model // config.n_heads
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


class LLaDAModelLM(DiffusionPreTrainedModel):
    """LLaDA: `forward(input_ids, attention_mask=None, position_ids=None)` returns logits aligned with the inputs
    (`logits[:, i]` scores the token at position i), over `embedding_size` ids; padding, positions and the block
    key/value cache as in [`DiffusionPreTrainedModel`].
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDALlamaBlock"]
    input_embeddings_path = "model.transformer.wte"
    output_embeddings_path = "model.transformer.ff_out"
    init_std_key = "init_std"
    diffusion_traits = FamilyTraits(default_mask_token_id=LLADA_MASK_TOKEN_ID,
                                    stop_tokens=tuple(LLADA_STOP_TOKENS.items()))
    family_tokenizer_class = LLaDATokenizer
    published_code_repo = "GSAI-ML/LLaDA-8B-Instruct"
    family_name = "LLaDA (masked diffusion, full attention)"

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.blocks

    def head_dim_and_theta(self) -> tuple[int, float]:
        return self.config.d_model // self.config.n_heads, self.config.rope_theta

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        transformer = self.model.transformer
        hidden = transformer.ln_f(hidden)
        return F.linear(hidden, transformer.wte.weight) if self.config.weight_tying else transformer.ff_out(hidden)
