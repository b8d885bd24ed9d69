"""Accuracy rewards for GSM8K (a final number) and MATH-500 (a LaTeX expression checked with `math-verify`).

GSM8K answer extraction, in order of precedence (the first rule that applies decides; no falling back further):

1. the last `<answer>` block (cut-off blocks count): the last number inside its `\\boxed{}` if it has one, else the
   last number in the block;
2. else the last `\\boxed{}` of the completion: the last number inside it;
3. else the last number anywhere in the completion.

Numbers are compared exactly as rationals, so "$1,200", "1200.00" and "1200 dollars" all equal 1200, and "2.50"
equals 2.5. An answer block without a number scores 0.0 even if the reasoning mentions the right number: the block is
the model's commitment.

MATH-500: the predicted answer is the `\\boxed{}` inside the last `<answer>` block, else that block's text, else the
completion's last `\\boxed{}`; it is checked against the reference with `math_verify.verify`.
"""

from __future__ import annotations

import threading
from fractions import Fraction

from ._text import answer_block, check_column, last_boxed, last_number, texts_of

__all__ = [
    "extract_gsm8k_answer",
    "extract_math_answer",
    "gsm8k_accuracy",
    "gsm8k_reference",
    "integer_answer_reward",
    "is_math_equivalent",
    "math500_accuracy",
]


def extract_gsm8k_answer(text: str) -> Fraction | None:
    """The model's final number under the precedence in the module docstring, or None if it gave none."""
    block = answer_block(text)
    if block is not None:
        boxed = last_boxed(block)
        return last_number(boxed if boxed is not None else block)
    boxed = last_boxed(text)
    if boxed is not None:
        return last_number(boxed)
    return last_number(text)


def gsm8k_reference(answer) -> Fraction:
    """The reference number from the `answer` column: a raw GSM8K answer ("... #### 72") or a bare number.

    Raises a `ValueError` naming `answer` when there is no number: a reference we cannot read is a data bug, and
    scoring every completion 0.0 against it would silently train on noise.
    """
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"answer: expected a number or a GSM8K answer string, got {answer!r}.")
    if isinstance(answer, (int, float)):
        return Fraction(answer)
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    value = last_number(text)
    if value is None:
        raise ValueError(f"answer: no number in the reference answer {answer!r}.")
    return value


def gsm8k_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion's final number equals the reference, else 0.0 (extraction rules: module docstring)."""
    references = check_column("answer", answer, len(completions))
    return [
        float(extract_gsm8k_answer(text) == gsm8k_reference(ref))
        for text, ref in zip(texts_of(completions), references)
    ]


def integer_answer_reward(completions, **kwargs) -> list[float]:
    """1.0 where the last `<answer>` block holds just an integer (d1's `int_reward_func`), else 0.0.

    Rewards the answer shape GSM8K asks for; d1 weights it 0.5 next to correctness 2.0.
    """
    scores = []
    for text in texts_of(completions):
        block = answer_block(text)
        scores.append(float(block is not None and block.lstrip("+-−").isdigit()))
    return scores


def extract_math_answer(text: str) -> str | None:
    """The model's final MATH answer as LaTeX text (precedence in the module docstring), or None."""
    block = answer_block(text)
    if block is not None:
        boxed = last_boxed(block)
        if boxed is not None:
            return boxed
        return block or None
    return last_boxed(text)


def _math_verify_timeout() -> int | None:
    """math-verify bounds its work with `signal.alarm`, which only works in the main thread; elsewhere go without."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse_math(text: str):
    """Parse one rendering of an answer with math-verify; [] when nothing parses."""
    from math_verify import parse

    return parse(text, parsing_timeout=_math_verify_timeout())


def _renderings(latex: str) -> list[str]:
    """Ways to read an answer: as the content of a box (bare LaTeX such as `\\dfrac{14}{3}`), then as free text
    (an answer block like "The answer is $\\frac{14}{3}$"), then as inline math."""
    return [f"\\boxed{{{latex}}}", latex, f"${latex}$"]


def math_reference(answer) -> str:
    """The reference answer as LaTeX: the bare answer, or the last `\\boxed{}` of a full reference solution."""
    if answer is None:
        raise ValueError("answer: the MATH reference answer is missing (None).")
    text = str(answer)
    boxed = last_boxed(text)
    return boxed if boxed is not None else text.strip()


def is_math_equivalent(prediction: str | None, reference: str) -> bool:
    """Whether a predicted LaTeX answer equals the reference according to `math_verify.verify`."""
    from math_verify import verify

    if prediction is None or not prediction.strip():
        return False
    gold = _parse_math(_renderings(reference)[0])
    if not gold:
        return False
    timeout = _math_verify_timeout()
    for rendering in _renderings(prediction.strip()):
        pred = _parse_math(rendering)
        if pred and verify(gold, pred, timeout_seconds=timeout):
            return True
    return False


def math500_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion's final answer is mathematically equivalent to the reference, else 0.0."""
    references = check_column("answer", answer, len(completions))
    return [
        float(is_math_equivalent(extract_math_answer(text), math_reference(ref)))
        for text, ref in zip(texts_of(completions), references)
    ]
