"""Regenerate tests/fixtures/{llada_tiny,dream_tiny}: tiny random LLaDA and Dream checkpoints in the hub layout, with
the logits that the models' published modeling code (hub remote code) computes on fixed inputs.

The published code runs under transformers 4.x only, so this script runs in a throwaway environment, never the
project's:

    python3 -m venv /tmp/t457 && /tmp/t457/bin/pip install torch==2.13.0 transformers==4.57.1 einops
    git clone https://github.com/NVlabs/Fast-dLLM /tmp/Fast-dLLM   # the published llada/model and dream/model code
    git -C /tmp/Fast-dLLM checkout 24cc59e75f20a6384bae8c905965bb090b96388e   # the version the fixtures were made with
    /tmp/t457/bin/python scripts/make_parity_fixtures.py --code /tmp/Fast-dLLM

Each fixture directory holds what the hub holds (config.json with the official keys and `auto_map`, the weights as
model.safetensors, tokenizer files) plus `parity.safetensors`: the input ids and the published code's float32 logits.
The repository holds none of the published code; `--code` points at a checkout of it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModel

REPO = Path(__file__).resolve().parent.parent
BYTE_TOKENS = 256  # the byte-level alphabet, one token per byte; special tokens follow

LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>"]
LLADA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def special_id(specials: list[str], token: str) -> int:
    return BYTE_TOKENS + specials.index(token)


def llada_config(vocab_size: int) -> dict:
    """LLaDA-8B-Instruct's config.json keys, at tiny sizes."""
    return {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
        "embedding_dropout": 0.0, "embedding_size": vocab_size,
        "eos_token_id": special_id(LLADA_SPECIALS, "<|endoftext|>"),
        "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
        "init_device": "cpu", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True,
        "mask_token_id": special_id(LLADA_SPECIALS, "<|mdm_mask|>"), "max_sequence_length": 64,
        "mlp_hidden_size": 64, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 4,
        "n_kv_heads": 4, "n_layers": 2, "pad_token_id": special_id(LLADA_SPECIALS, "<|endoftext|>"),
        "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
        "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "use_cache": False,
        "vocab_size": vocab_size, "weight_tying": False,
    }


def dream_config(vocab_size: int) -> dict:
    """Dream-v0-Instruct-7B's config.json keys (Qwen2 style), at tiny sizes with grouped-query attention."""
    return {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": special_id(DREAM_SPECIALS, "<|beginoftext|>"),
        "eos_token_id": special_id(DREAM_SPECIALS, "<|endoftext|>"), "hidden_act": "silu", "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 64, "mask_token_id": special_id(DREAM_SPECIALS, "<|mask|>"),
        "max_position_embeddings": 64, "max_window_layers": 2, "model_type": "Dream", "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": special_id(DREAM_SPECIALS, "<|endoftext|>"),
        "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": False, "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def byte_level_tokenizer(specials: list[str]) -> Tokenizer:
    """A byte-level BPE without merges: every byte is one token (as in Qwen2's and LLaDA's vocabularies), then the
    special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda c: ord(c)))}
    assert len(vocab) == BYTE_TOKENS
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    for i, token in enumerate(specials):
        assert tokenizer.token_to_id(token) == BYTE_TOKENS + i
    return tokenizer


def added_tokens_decoder(specials: list[str]) -> dict:
    return {str(BYTE_TOKENS + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True} for i, t in enumerate(specials)}


def write_llada_tokenizer(out: Path) -> None:
    """LLaDA ships tokenizer.json for the standard fast tokenizer (no remote code)."""
    byte_level_tokenizer(LLADA_SPECIALS).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added_tokens_decoder(LLADA_SPECIALS), "bos_token": "<|startoftext|>",
        "chat_template": LLADA_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|eot_id|>",
        "model_max_length": 64, "pad_token": "<|endoftext|>", "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }, indent=2))


def write_dream_tokenizer(out: Path) -> None:
    """Dream ships vocab.json + merges.txt for its remote-code DreamTokenizer (a copy of Qwen2's)."""
    tokenizer = byte_level_tokenizer(DREAM_SPECIALS)
    vocab = {token: i for token, i in tokenizer.get_vocab(with_added_tokens=False).items()}
    (out / "vocab.json").write_text(json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added_tokens_decoder(DREAM_SPECIALS),
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}, "bos_token": "<|beginoftext|>",
        "chat_template": DREAM_CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 64, "pad_token": "<|endoftext|>",
        "padding_side": "left", "split_special_tokens": False, "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    }, indent=2))


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random, norms around 1, so the logits depend on every weight the checkpoint holds."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=generator)
        param.copy_(1.0 + 0.2 * noise if "norm" in name or "ln_f" in name else 0.3 * noise / param.shape[-1] ** 0.5
                    if param.dim() > 1 else 0.1 * noise)


def load_published(code_dir: Path, config: dict, workdir: Path) -> torch.nn.Module:
    """Build the model through the hub route: config.json + the modeling files, `trust_remote_code=True`."""
    for path in code_dir.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copy(path, workdir / path.name)
    (workdir / "config.json").write_text(json.dumps(config, indent=2))
    hub_config = AutoConfig.from_pretrained(workdir, trust_remote_code=True)
    model = AutoModel.from_config(hub_config, trust_remote_code=True, torch_dtype=torch.float32)
    module = sys.modules[type(model).__module__]
    if hasattr(module, "scaled_dot_product_attention"):  # Fast-dLLM wraps SDPA in torch.compile; same math without
        module.scaled_dot_product_attention = F.scaled_dot_product_attention
    return model.float().eval()


def fixed_inputs(vocab: int, mask_id: int, seed: int) -> torch.Tensor:
    """Two rows of 16 token ids with a few mask tokens in each."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 16), generator=generator)
    ids[0, [3, 9, 10]] = mask_id
    ids[1, [0, 7, 15]] = mask_id
    return ids


def make(name: str, code_dir: Path, config: dict, write_tokenizer, seed: int, out_root: Path) -> None:
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_published(code_dir, config, Path(tmp))
        randomize(model, seed)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        ids = fixed_inputs(config["vocab_size"], config["mask_token_id"], seed)
        tensors = {"input_ids": ids, "logits": model(ids).logits.float()}
        if config["model_type"] == "Dream":
            # The published Dream code takes a pairwise boolean mask and explicit positions for padded rows: record
            # row 0 left-padded by 4 the way Dream's own sampler feeds it.
            padded = torch.cat([torch.full((1, 4), config["pad_token_id"]), ids[:1]], dim=1)
            attention_mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 16, dtype=torch.long)], 1)
            pairwise = attention_mask.bool()[:, None, None, :] | torch.eye(20, dtype=torch.bool)
            positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            tensors["padded_input_ids"] = padded
            tensors["padded_attention_mask"] = attention_mask
            tensors["padded_logits"] = model(padded, attention_mask=pairwise, position_ids=positions).logits.float()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "parity.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config.get("bos_token_id"), "eos_token_id": config["eos_token_id"],
         "pad_token_id": config["pad_token_id"]}, indent=2) + "\n")
    write_tokenizer(out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out.relative_to(REPO)}: {size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, required=True,
                        help="checkout of NVlabs/Fast-dLLM (its llada/model and dream/model directories)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = parser.parse_args()
    make("llada_tiny", args.code / "llada" / "model", llada_config(320), write_llada_tokenizer, 0, args.out)
    make("dream_tiny", args.code / "dream" / "model", dream_config(288), write_dream_tokenizer, 1, args.out)


if __name__ == "__main__":
    main()
