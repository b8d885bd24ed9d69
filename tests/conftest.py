import os

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertForMaskedLM, TrainerCallback

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


# Recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")
FAST = ["--model_name_or_path", "tiny", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--drift_num_orders", "0", "--logging_steps", "1", "--disable_tqdm", "true", "--save_steps", "1"]


# Trainers on the tiny model


def prompts_dataset(n=16):
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": f"{i}{(3 * i) % 10}{(7 * i) % 10}"}] for i in range(n)],
            "answer": [str(i % 10) for i in range(n)],
        }
    )


def count_sevens(completions, **kwargs):
    """Share of completion characters that are '7': a reward a random tiny model can learn quickly."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("7") / max(len(t), 1) for t in texts]


def text_hash(completions, **kwargs):
    """A deterministic score with spread across any completions, so that every batch carries advantages."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [(sum(map(ord, t)) % 7) / 7 for t in texts]


def make_trainer(tokenizer, tmp_path, reward=count_sevens, model=None, dataset=None, eval_dataset=None, **overrides):
    from dipod_trl import DiPODConfig, DiPODTrainer  # on first use: most tests need no trainer

    config = dict(
        output_dir=str(tmp_path / "run"),
        max_completion_length=8,
        block_length=4,
        diffusion_steps=8,
        num_generations=4,
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        drift_num_orders=2,
        drift_num_sequences=2,
    )
    config.update(overrides)
    model = model if model is not None else make_tiny_model(
        len(tokenizer), seed=0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.05,
    ).train()
    return DiPODTrainer(
        model, reward, args=DiPODConfig(**config), train_dataset=dataset or prompts_dataset(),
        eval_dataset=eval_dataset, processing_class=tokenizer,
    )


def generation_batch(trainer):
    """One generation batch as the trainer builds it (rewards, advantages, masks, old/reference scores)."""
    trainer.model.train()
    batch_size = trainer.args.per_device_train_batch_size
    rows = [trainer.train_dataset[i // trainer.num_generations] for i in range(batch_size)]
    return trainer._generate_and_score_completions(rows)


def gradients(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after `step` optimizer steps (after the checkpoint is written)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


# Hugging Face masked LMs


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


# Logits of a fixed batch with masks (saved and reloaded models must agree on them)

IDS = torch.tensor([[5, 40, 41, 42, 108, 108, 108, 2], [9, 60, 61, 108, 108, 108, 2, 3]])  # 108: <mask>


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS).logits
