"""Regenerate tests/fixtures/{sdar_tiny,sdar_moe_tiny,llada2_tiny}: tiny random SDAR, SDAR-30B-A3B-shaped and
LLaDA2-shaped checkpoints in the hub layout, with the logits the published modeling code computes on fixed inputs.

The published code runs under transformers 4.x only, so this script runs in throwaway environments, never the
project's. SDAR's code needs transformers 4.52.x (4.57 removed `LossKwargs`, which it imports); LLaDA2's runs under
4.57.1:

    python3 -m venv /tmp/t452 && /tmp/t452/bin/pip install torch==2.13.0 transformers==4.52.4 einops
    python3 -m venv /tmp/t4571 && /tmp/t4571/bin/pip install torch==2.13.0 transformers==4.57.1 einops
    git clone https://github.com/yjyddq/DARE /tmp/DARE   # models/SDAR-4B-Chat, SDAR-30B-A3B-Chat, LLaDA2.0-mini
    git -C /tmp/DARE checkout 83ae8a305a53a914cce563aedceeac88566891cb   # the version the fixtures were made with
    /tmp/t452/bin/python scripts/make_block_parity_fixtures.py sdar --code /tmp/DARE/models/SDAR-4B-Chat
    /tmp/t452/bin/python scripts/make_block_parity_fixtures.py sdar_moe --code /tmp/DARE/models/SDAR-30B-A3B-Chat
    /tmp/t4571/bin/python scripts/make_block_parity_fixtures.py llada2 --code /tmp/DARE/models/LLaDA2.0-mini

(SDAR's `training/model/SDAR-4B-Chat/modeling_sdar.py` in JetAstra/SDAR @c2041a8 has the same inference path.
LLaDA2.1-mini's modeling file differs from LLaDA2.0-mini's only in `generate`.)

Stand-ins, with the same math, for what does not run on a CPU (SDAR only; LLaDA2's code runs as published):
- flash-attn's triton `rms_norm_fn`: the plain RMSNorm formula the published file keeps in a comment beside the call;
- `flash_attn_func(q, k, v, causal=False, softmax_scale=s)`, used when the mask is all true: non-causal SDPA with
  grouped-query heads and the same scale;
- `fused_linear_diffusion_cross_entropy.py` (a triton training loss, imported at module level, unused by a forward):
  an empty module.

Each fixture holds what the hub holds (config.json with the official keys and `auto_map`, model.safetensors with the
published weight names, a byte-level tokenizer) plus `parity.safetensors`, the published code's float32 logits for:
- `input_ids` (2 x 16, a few mask tokens), full attention: `logits`;
- the same ids under the block-causal mask of the published samplers (block 4): `block_logits`;
- `padded_input_ids`: row 0 left-padded by 4 and row 1 alone, with `padded_attention_mask` (batch, length), the
  pairwise boolean mask `padded_pairwise_mask` (block-causal with blocks counted from each row's first real token,
  padded keys masked, each query keeping its own key) and positions counted from the first real token:
  `padded_logits`;
- the block-diffusion training input `[noisy || clean]` of SDAR's trainer (`bd_input_ids`, 2 x 32, positions
  `bd_position_ids` repeating 0..15, the published `block_diff_mask` as `bd_attention_mask`): `bd_logits`.
The repository holds none of the published code; `--code` points at a checkout of it.

`check-saved` loads a folder this package saved (for instance `dipod merge` of LoRA adapters on a fixture, with the
package's logits in `expected_logits.safetensors`) with the published code, as `trust_remote_code=True` would from
the hub repository its `auto_map` names, and prints the relative difference of the logits (docs/models.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

REPO = Path(__file__).resolve().parent.parent
BYTE_TOKENS = 256
BLOCK = 4  # block length of the recorded block-causal inputs
FUSED_LOSS_STAND_IN = "FusedLinearDiffusionCrossEntropyLoss = None\n"  # the training-only triton loss, unused

SDAR_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
SDAR_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLADA2_SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|mask|>", "<role>", "</role>", "<|role_end|>"]
LLADA2_CHAT_TEMPLATE = (
    "{% for message in messages %}<role>{{ message['role'] | upper }}</role>{{ message['content'] }}<|role_end|>"
    "{% endfor %}{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}"
)


def special_id(specials: list[str], token: str) -> int:
    return BYTE_TOKENS + specials.index(token)


def sdar_config(moe: bool) -> dict:
    """SDAR-4B-Chat's (or SDAR-30B-A3B-Chat's) config.json keys at tiny sizes, grouped-query attention."""
    vocab = BYTE_TOKENS + len(SDAR_SPECIALS)
    config = {
        "architectures": ["SDARMoeForCausalLM" if moe else "SDARForCausalLM"],
        "auto_map": {"AutoConfig": f"configuration_sdar{'_moe' if moe else ''}.SDAR{'Moe' if moe else ''}Config",
                     "AutoModel": f"modeling_sdar{'_moe' if moe else ''}.SDAR{'Moe' if moe else ''}Model",
                     "AutoModelForCausalLM":
                         f"modeling_sdar{'_moe' if moe else ''}.SDAR{'Moe' if moe else ''}ForCausalLM"},
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": special_id(SDAR_SPECIALS, "<|endoftext|>"),
        "eos_token_id": special_id(SDAR_SPECIALS, "<|endoftext|>"), "block_size": BLOCK,
        "mask_token_id": special_id(SDAR_SPECIALS, "<|MASK|>"), "head_dim": 16, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96, "max_position_embeddings": 64,
        "max_window_layers": 2, "model_type": "sdar_moe" if moe else "sdar", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "use_cache": False, "use_sliding_window": False, "vocab_size": vocab,
    }
    if moe:
        config.update({"decoder_sparse_step": 1, "mlp_only_layers": [], "moe_intermediate_size": 16,
                       "norm_topk_prob": True, "num_experts": 8, "num_experts_per_tok": 2,
                       "output_router_logits": False, "router_aux_loss_coef": 0.001})
    else:  # training-only keys of the dense config, kept as published
        config.update({"attn_implementation": "flex_attention", "debug": False, "ep_size": 1,
                       "fuse_cross_entropy": True, "micro_forward": False, "skip_checkpoint": False,
                       "use_deepep": False})
    return config


def llada2_config() -> dict:
    """LLaDA2.0-mini's config.json keys at tiny sizes: one dense layer, then one MoE layer with 8 experts in 4 groups
    (2 groups kept, 2 experts per token) and a shared expert; partial rotary embedding over half of each head."""
    vocab = BYTE_TOKENS + len(LLADA2_SPECIALS)
    eos = special_id(LLADA2_SPECIALS, "<|endoftext|>")
    return {
        "architectures": ["LLaDA2MoeModelLM"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                     "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                     "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
        "dtype": "float32", "embedding_dropout": 0.0, "eos_token_id": eos, "first_k_dense_replace": 1,
        "head_dim": 16, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
        "mask_token_id": special_id(LLADA2_SPECIALS, "<|mask|>"), "max_position_embeddings": 64,
        "max_window_layers": 2, "model_type": "llada2_moe", "moe_intermediate_size": 16,
        "moe_router_enable_expert_bias": True, "n_group": 4, "norm_head": False, "norm_softmax": False,
        "norm_topk_prob": True, "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 2,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "num_shared_experts": 1, "output_dropout": 0.0,
        "output_router_logits": False, "pad_token_id": eos, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 600000, "rotary_dim": 8, "routed_scaling_factor": 2.5,
        "router_dtype": "fp32", "score_function": "sigmoid", "sliding_window": 4096, "tie_word_embeddings": False,
        "topk_group": 2, "use_bias": False, "use_cache": False, "use_qk_norm": True, "use_qkv_bias": False,
        "use_rmsnorm": True, "use_sliding_window": False, "using_split_qkv_in_self_attention": False,
        "vocab_size": vocab,
    }


def write_tokenizer(out: Path, specials: list[str], chat_template: str, mask: str, bos: str | None) -> None:
    """A byte-level BPE without merges (every byte one token, as in Qwen's and LLaDA2's vocabularies), then the
    special tokens, for the standard fast tokenizer class (no remote code)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda c: ord(c)))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out / "tokenizer.json"))
    decoder = {str(BYTE_TOKENS + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                      "single_word": False, "special": True} for i, t in enumerate(specials)}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": decoder, "bos_token": bos, "chat_template": chat_template,
        "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>", "mask_token": mask,
        "model_max_length": 64, "pad_token": "<|endoftext|>", "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2))


def install_flash_attn_stand_ins(root: Path) -> None:
    """A `flash_attn` package with the same math as the two kernels SDAR's modeling file calls (see the docstring)."""
    package = root / "flash_attn"
    (package / "ops" / "triton").mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F

        def flash_attn_func(q, k, v, causal=False, softmax_scale=None, **kwargs):
            # (batch, length, heads, dim) in and out, as flash-attn; grouped-query heads as flash-attn broadcasts them
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=causal, scale=softmax_scale, enable_gqa=True)
            return out.transpose(1, 2)

        flash_attn_varlen_func = None
    '''))
    (package / "bert_padding.py").write_text("index_first_axis = pad_input = unpad_input = None\n")
    (package / "ops" / "__init__.py").write_text("")
    (package / "ops" / "triton" / "__init__.py").write_text("")
    (package / "ops" / "triton" / "layer_norm.py").write_text(textwrap.dedent('''
        import torch

        def rms_norm_fn(x, weight, bias=None, eps=1e-6, **kwargs):
            # the formula SDARRMSNorm keeps in a comment beside its call of the triton kernel
            input_dtype = x.dtype
            x = x.to(torch.float32)
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return weight * x.to(input_dtype)
    '''))
    sys.path.insert(0, str(root))


def load_published(code_dir: Path, config: dict, workdir: Path) -> torch.nn.Module:
    """Build the model through the hub route: config.json + the modeling files, `trust_remote_code=True`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for path in code_dir.glob("*.py"):
        if path.name not in ("__init__.py", "fused_linear_diffusion_cross_entropy.py"):
            shutil.copy(path, workdir / path.name)
    if (code_dir / "fused_linear_diffusion_cross_entropy.py").exists():  # training-only, imports triton
        (workdir / "fused_linear_diffusion_cross_entropy.py").write_text(FUSED_LOSS_STAND_IN)
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    hub_config = AutoConfig.from_pretrained(workdir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_config(hub_config, trust_remote_code=True, torch_dtype=torch.float32)
    return model.float().eval()


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, norms around 1, routers sharp enough that no two experts tie within rounding, and
    LLaDA2's expert bias nonzero, so the logits depend on every weight the checkpoint holds."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=generator)
        if "norm" in name:
            param.copy_(1.0 + 0.2 * noise)
        elif name.endswith("mlp.gate.weight"):
            param.copy_(3.0 * noise / param.shape[-1] ** 0.5)
        else:
            param.copy_(0.3 * noise / param.shape[-1] ** 0.5 if param.dim() > 1 else 0.1 * noise)
    for name, buffer in sorted(model.named_buffers()):
        if name.endswith("expert_bias"):
            buffer.copy_(0.3 * torch.randn(buffer.shape, generator=generator))


def block_causal(positions: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, 1, length, length) boolean: query q sees key k when k's block (position // BLOCK) is not after q's and
    k is a real token; every query keeps its own key."""
    block = positions // BLOCK
    keep = (block[:, :, None] >= block[:, None, :]) & real[:, None, :].bool()
    return (keep | torch.eye(positions.shape[1], dtype=torch.bool))[:, None]


def block_diffusion_mask(length: int) -> torch.Tensor:
    """SDAR's training mask over `[noisy || clean]` (its `block_diff_mask`, restated): noisy blocks see themselves
    and the clean blocks before them, clean blocks see the clean blocks up to their own."""
    q, k = torch.arange(2 * length)[:, None], torch.arange(2 * length)[None, :]
    clean_q, clean_k = q >= length, k >= length
    block_q, block_k = torch.where(clean_q, q - length, q) // BLOCK, torch.where(clean_k, k - length, k) // BLOCK
    diagonal = (block_q == block_k) & (clean_q == clean_k)
    offset = (block_q > block_k) & clean_k & ~clean_q
    causal = (block_q >= block_k) & clean_k & clean_q
    return diagonal | offset | causal


def as_published_mask(mask: torch.Tensor, family: str) -> torch.Tensor:
    """SDAR's code takes boolean masks (it calls `.bool()`); LLaDA2's adds its 4D mask to the scores (0 / -inf)."""
    if family == "llada2":
        return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    return mask


def record(model, family: str, config: dict, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    vocab, mask_id, pad = config["vocab_size"], config["mask_token_id"], config["eos_token_id"]
    ids = torch.randint(0, BYTE_TOKENS, (2, 16), generator=generator)
    ids[0, [3, 9, 10]] = mask_id
    ids[1, [0, 7, 15]] = mask_id
    positions = torch.arange(16).expand(2, -1)
    ones = torch.ones(2, 16, dtype=torch.long)

    def run(input_ids, mask, position_ids):
        mask = as_published_mask(mask, family)
        return model(input_ids, attention_mask=mask, position_ids=position_ids).logits.float()

    tensors = {"input_ids": ids, "logits": run(ids, torch.ones(2, 1, 16, 16, dtype=torch.bool), positions),
               "block_logits": run(ids, block_causal(positions, ones), positions)}
    padded = torch.cat([torch.cat([torch.full((1, 4), pad), ids[:1]], 1), torch.cat([ids[1:], ids[1:, :4]], 1)])
    attention_mask = torch.cat([torch.cat([torch.zeros(1, 4), torch.ones(1, 16)], 1), torch.ones(1, 20)]).long()
    padded_positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    pairwise = block_causal(padded_positions, attention_mask)
    tensors.update(padded_input_ids=padded, padded_attention_mask=attention_mask, padded_position_ids=padded_positions,
                   padded_pairwise_mask=pairwise, padded_logits=run(padded, pairwise, padded_positions))
    noisy = torch.where(torch.rand(2, 16, generator=generator) < 0.5, mask_id, ids)
    bd_ids = torch.cat([noisy, ids], dim=1)
    bd_mask = block_diffusion_mask(16).expand(2, 1, -1, -1)
    bd_positions = torch.cat([positions, positions], dim=1)
    tensors.update(bd_input_ids=bd_ids, bd_position_ids=bd_positions, bd_attention_mask=bd_mask,
                   bd_logits=run(bd_ids, bd_mask, bd_positions))
    assert vocab == tensors["logits"].shape[-1]
    return tensors


def make(family: str, code_dir: Path, out_root: Path, seed: int = 0) -> None:
    name = {"sdar": "sdar_tiny", "sdar_moe": "sdar_moe_tiny", "llada2": "llada2_tiny"}[family]
    config = llada2_config() if family == "llada2" else sdar_config(moe=family == "sdar_moe")
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        if family != "llada2":
            install_flash_attn_stand_ins(Path(tmp) / "stand_ins")
        code = Path(tmp) / "code"
        code.mkdir()
        model = load_published(code_dir, config, code)
        randomize(model, seed)
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
        with torch.no_grad():
            tensors = record(model, family, config, seed)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "parity.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config.get("bos_token_id"), "eos_token_id": config["eos_token_id"],
         "pad_token_id": config.get("pad_token_id", config["eos_token_id"])}, indent=2) + "\n")
    if family == "llada2":
        write_tokenizer(out, LLADA2_SPECIALS, LLADA2_CHAT_TEMPLATE, "<|mask|>", "<|startoftext|>")
    else:
        write_tokenizer(out, SDAR_SPECIALS, SDAR_CHAT_TEMPLATE, "<|MASK|>", None)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out.relative_to(REPO)}: {size / 1024:.0f} KiB")


def check_saved(folder: Path, code_dir: Path) -> float:
    """Load a folder this package saved (`save_pretrained` / `dipod merge`; its `auto_map` names the family's hub
    repository) with the published code, as the hub would serve it, and return the relative difference between the
    published model's logits and the ones the package recorded in `folder/expected_logits.safetensors` (`input_ids`,
    `logits`)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "folder"
        shutil.copytree(folder, work)
        config = json.loads((work / "config.json").read_text())
        config["auto_map"] = {k: v.rpartition("--")[2] for k, v in config["auto_map"].items()}  # the hub's files
        (work / "config.json").write_text(json.dumps(config))
        if config["model_type"] != "llada2_moe":
            install_flash_attn_stand_ins(Path(tmp) / "stand_ins")
        for path in code_dir.glob("*.py"):
            shutil.copy(path, work / path.name)
        (work / "fused_linear_diffusion_cross_entropy.py").write_text(FUSED_LOSS_STAND_IN)
        model = AutoModelForCausalLM.from_pretrained(work, trust_remote_code=True, torch_dtype=torch.float32).eval()
        expected = load_file(str(folder / "expected_logits.safetensors"))
        ids = expected["input_ids"]
        with torch.no_grad():
            logits = model(ids, attention_mask=as_published_mask(torch.ones(ids.shape[0], 1, ids.shape[1],
                                                                              ids.shape[1], dtype=torch.bool),
                                                                   "llada2" if config["model_type"] == "llada2_moe"
                                                                   else "sdar")).logits.float()
        return ((logits - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=["sdar", "sdar_moe", "llada2", "check-saved"])
    parser.add_argument("--code", type=Path, required=True, help="the published model folder (modeling + config .py)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    parser.add_argument("--folder", type=Path, help="check-saved: the saved folder, with expected_logits.safetensors")
    args = parser.parse_args()
    if args.family == "check-saved":
        print(f"{args.folder}: published code's logits, relative difference {check_saved(args.folder, args.code):.2e}")
    else:
        make(args.family, args.code, args.out)


if __name__ == "__main__":
    main()
