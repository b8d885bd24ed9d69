"""A Hugging Face sequence-classification reward model, wrapped as a TRL reward function.

TRL can take such a model directly (`reward_funcs="org/reward-model"`), but then it is only ever fed the raw text.
The wrapper makes the scoring explicit and reusable outside the trainer (evaluation, offline relabelling): batched,
padding-safe, one float per completion, and callable with TRL's reward-function keywords.
"""

from __future__ import annotations

import os

from ._text import completion_text, prompt_text

__all__ = ["SequenceClassifierReward"]


class SequenceClassifierReward:
    """Score `prompt + completion` with `AutoModelForSequenceClassification`; the reward is one logit.

    Args:
        model: a local directory or hub id (loaded with `from_pretrained`), or an already loaded model.
        tokenizer: a tokenizer, or None to load it from `model`'s path.
        batch_size: texts per forward pass.
        max_length: truncate longer texts to this many tokens (the tokenizer's `truncation_side` decides which end).
        device: where to run; defaults to the model's device when it is already loaded, else CUDA if present.
        label_index: which logit is the reward (0 for the usual single-label reward model).
        use_chat_template: render conversational prompt/completion pairs with the tokenizer's chat template (as the
            reward model was trained on them); when False, or when there is no template, texts are joined plainly.
        name: the name TRL logs this reward under.
        **model_kwargs: passed to `from_pretrained` (e.g. `dtype`, `revision`).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        device=None,
        label_index: int = 0,
        use_chat_template: bool = True,
        name: str | None = None,
        **model_kwargs,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            model = AutoModelForSequenceClassification.from_pretrained(source, **model_kwargs)
            tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(source)
        elif tokenizer is None:
            raise ValueError("tokenizer: pass the tokenizer when `model` is an already loaded model.")
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("tokenizer: it has neither a pad nor an EOS token, so batches cannot be padded.")
            tokenizer.pad_token = tokenizer.eos_token
        if not 0 <= label_index < model.config.num_labels:
            raise ValueError(f"label_index={label_index} is outside the model's {model.config.num_labels} labels.")
        if device is None:
            device = "cuda" if torch.cuda.is_available() and model.device.type == "cpu" else model.device
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.label_index = label_index
        self.use_chat_template = use_chat_template
        self.__name__ = name or _model_name(model)

    def texts(self, prompts, completions) -> list[tuple[str, bool]]:
        """The text scored for each pair, and whether it was rendered by the chat template (which adds BOS itself)."""
        if prompts is None:
            prompts = [None] * len(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"prompts: got {len(prompts)} prompts for {len(completions)} completions.")
        return [self._text(p, c) for p, c in zip(prompts, completions)]

    def _text(self, prompt, completion) -> tuple[str, bool]:
        conversational = isinstance(completion, list) and (prompt is None or isinstance(prompt, list))
        if conversational and self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            messages = list(prompt or []) + list(completion)
            return self.tokenizer.apply_chat_template(messages, tokenize=False), True
        if isinstance(prompt, list):
            prompt = "\n".join(completion_text([m]) for m in prompt)
        return (prompt_text(prompt) if prompt else "") + completion_text(completion), False

    def score_texts(self, texts: list[str], templated: bool = False) -> list[float]:
        """Reward of each text, computed in batches of `batch_size` (right padding, attention-masked)."""
        import torch

        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=not templated,
                return_tensors="pt",
            ).to(self.model.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits
            scores.extend(logits[:, self.label_index].float().cpu().tolist())
        return scores

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        """TRL reward-function entry point: one reward per completion; other keywords are ignored."""
        if completions is None:
            raise ValueError("completions: the reward model needs the completions to score.")
        rendered = self.texts(prompts, completions)
        scores = [0.0] * len(rendered)
        # Templated and plain texts need different special-token handling, so they are batched separately.
        for templated in (True, False):
            indices = [i for i, (_, t) in enumerate(rendered) if t == templated]
            for i, score in zip(indices, self.score_texts([rendered[i][0] for i in indices], templated)):
                scores[i] = score
        return scores


def _model_name(model) -> str:
    """A short, loggable name from the model's path or hub id."""
    path = getattr(model.config, "_name_or_path", "") or type(model).__name__
    return "reward_model_" + os.path.basename(os.path.normpath(path))
