"""Tiny models and tokenizers: the project's tiny masked diffusion LM, BERT masked LMs and a BERT reward model, and
brute-force likelihoods to check the batched code against."""

import torch
from transformers import BertConfig, BertForMaskedLM

from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion


def make_tiny_model(vocab_size: int, seed: int = 0, **overrides) -> TinyMDLMForMaskedDiffusion:
    """A randomly initialised tiny model; a large init scale makes its predictions context-dependent and peaked."""
    torch.manual_seed(seed)
    config = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
    )
    config.update(overrides)
    return TinyMDLMForMaskedDiffusion(TinyMDLMConfig(**config)).eval()



def tiny_bert(with_mask_token: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[SEP]", "[MASK]", "a", "b", "c", "d"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = dict(pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]")
    if with_mask_token:
        specials["mask_token"] = "[MASK]"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **specials)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return BertForMaskedLM(config).eval(), tokenizer


IDS = torch.tensor([[5, 40, 41, 42, 108, 108, 108, 2], [9, 60, 61, 108, 108, 108, 2, 3]])  # 108: <mask>


def masked_batch_logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    """The float32 logits of `ids` (by default a fixed batch with masks) in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(ids).logits.float()


def sequential_order_probability(model, prompt: list[int], completion: list[int], order, mask_id: int) -> float:
    """p_sigma(y) by explicit unmasking: a forward pass per step on the unpadded sequence, probabilities multiplied."""
    canvas = prompt + [mask_id] * len(completion)
    probability = 1.0
    for position in order:
        with torch.no_grad():
            probs = model(torch.tensor([canvas])).logits[0, len(prompt) + position].double().softmax(-1)
        probability *= probs[completion[position]].item()
        canvas[len(prompt) + position] = completion[position]
    return probability


WORDS = "the answer is 72 clips she sold in april and may half as many total good bad question".split()


def save_tiny_reward_model(path) -> None:
    """A randomly initialised tiny BERT reward model and its word-level tokenizer, saved in `path` like a hub
    checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=1,
        initializer_range=0.3,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def direct_scores(path, texts, add_special_tokens=True):
    """One unpadded forward pass per text: what the wrapper's batched, padded scores must equal."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return [
            model(**tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)).logits[0, 0].item()
            for text in texts
        ]
