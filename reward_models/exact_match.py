"""Exact-match accuracy: the answer (the last `<answer>` block if there is one, else the whole completion) equals the
reference after trimming whitespace. The reward of the synthetic `digit_sort` task of the demo."""

from __future__ import annotations

from ._text import answer_block, check_column, texts_of

__all__ = ["exact_match_accuracy"]


def exact_match_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion's answer equals `answer` exactly (surrounding whitespace ignored), else 0.0."""
    references = check_column("answer", answer, len(completions))
    scores = []
    for text, reference in zip(texts_of(completions), references):
        block = answer_block(text)
        predicted = block if block is not None else text
        scores.append(float(predicted.strip() == str(reference).strip()))
    return scores
