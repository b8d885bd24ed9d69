import pytest
import torch

from dipod_trl.models import TinyMDLMConfig, TinyMDLMForMaskedDiffusion, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


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


@pytest.fixture(scope="session")
def tiny_lm(tokenizer):
    """The tiny model over the real tiny tokenizer (EOS and pad ids set), randomly initialised."""
    return make_tiny_model(
        len(tokenizer), seed=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )


# A sequence-classification reward model (reward_models.SequenceClassifierReward, rewards named by model)

WORDS = "the answer is 72 clips she sold in april and may half as many total good bad question".split()


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tmp_path_factory):
    """A randomly initialised tiny BERT reward model and its word-level tokenizer, saved like a hub checkpoint."""
    import torch
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
    path = tmp_path_factory.mktemp("tiny_reward_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def direct_scores(path, texts, add_special_tokens=True):
    """One unpadded forward pass per text: what the wrapper's batched, padded scores must equal."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return [
            model(**tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)).logits[0, 0].item()
            for text in texts
        ]
