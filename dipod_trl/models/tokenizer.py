"""A character-level tokenizer for the tiny model, built offline with `tokenizers`.

Printable ASCII, newline and tab are one token each; the reasoning/answer tags are single tokens so that short tasks
stay short; `<mask>` is the last id, matching [`TinyMDLMConfig`]'s default `mask_token_id`.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
TAG_TOKENS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]
MASK_TOKEN = "<mask>"

# Roles are rendered as single tokens; every turn ends with <eos>, so a completion stops where the turn ends.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Return the tiny model's tokenizer: printable ASCII plus the special, role, tag and mask tokens."""
    characters = [c for c in string.printable if c not in "\r\x0b\x0c"]  # printable ASCII, space, \t, \n
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS.values(), *ROLE_TOKENS, *TAG_TOKENS, *characters, MASK_TOKEN]:
        vocab[token] = len(vocab)
    # BPE with no merges is a character-level model; Fuse joins decoded characters without separators.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([*SPECIAL_TOKENS.values(), *ROLE_TOKENS, MASK_TOKEN])
    tokenizer.add_tokens(TAG_TOKENS)  # not special: they are part of the text that rewards read
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        mask_token=MASK_TOKEN,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        truncation_side="left",
        model_max_length=1024,
        **SPECIAL_TOKENS,
    )
