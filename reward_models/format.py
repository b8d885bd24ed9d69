"""Format rewards for the `<reasoning>...</reasoning><answer>...</answer>` layout that d1's prompts ask for.

They reproduce what d1 (and SPG, which reuses its rewards) reward, on a 0-to-1 scale, and fix two weak spots of the
originals: d1's regexes had no DOTALL, so multi-line reasoning never matched the "strict" or "soft" format, and its
tag count penalised the length of the whole text when the answer was not followed by a newline. The paper's weights
in those units are in each task's `reward_mix` (`dipod_trl.tasks`).
"""

from __future__ import annotations

import re

from ._text import answer_block, has_closed_answer_block, last_boxed, texts_of

__all__ = [
    "answer_tag_reward",
    "boxed_in_answer_reward",
    "soft_format_reward",
    "strict_format_reward",
    "xml_count_reward",
]

# Exactly the layout the system prompt shows, newlines included; content may span lines but must not be empty.
_STRICT = re.compile(
    r"<reasoning>\n(?!\s*\n</reasoning>)(?:(?!</?reasoning>|</?answer>).)+?\n</reasoning>\n"
    r"<answer>\n(?:(?!</?reasoning>|</?answer>).)+?\n</answer>",
    re.DOTALL,
)
# A reasoning block then an answer block, any whitespace around and between them, text after the answer allowed.
_SOFT = re.compile(r"\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)

_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
_TRAILING_PENALTY_PER_CHAR = 0.002
_MAX_TRAILING_PENALTY = 0.25


def strict_format_reward(completions, **kwargs) -> list[float]:
    """1.0 where the whole completion is exactly the prompted layout (a trailing newline or spaces allowed), else 0.0.

    The layout is `<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>`, both blocks non-empty, no nested
    or repeated tags.
    """
    return [float(_STRICT.fullmatch(text.rstrip()) is not None) for text in texts_of(completions)]


def soft_format_reward(completions, **kwargs) -> list[float]:
    """1.0 where the completion opens with a reasoning block followed by an answer block (any spacing), else 0.0."""
    return [float(_SOFT.match(text) is not None) for text in texts_of(completions)]


def xml_tag_score(text: str) -> float:
    """0.25 for each of the four tags that appears exactly once, minus 0.002 per character written after `</answer>`.

    The trailing-text penalty (at most 0.25, whitespace ignored) discourages rambling past the answer; the score is
    never negative.
    """
    score = sum(0.25 for tag in _TAGS if text.count(tag) == 1)
    if text.count("</answer>") == 1:
        trailing = "".join(text.split("</answer>", 1)[1].split())
        score -= min(_MAX_TRAILING_PENALTY, _TRAILING_PENALTY_PER_CHAR * len(trailing))
    return max(0.0, score)


def xml_count_reward(completions, **kwargs) -> list[float]:
    """Partial credit for the format tags (d1's `xmlcount_reward_func`, doubled to reach 1.0): see `xml_tag_score`."""
    return [xml_tag_score(text) for text in texts_of(completions)]


def answer_tag_reward(completions, **kwargs) -> list[float]:
    """1.0 where the completion has a closed `<answer>...</answer>` block with something in it, else 0.0.

    With weight 0.1 next to Countdown accuracy at 0.9 it reproduces d1's Countdown score (1.0 correct, 0.1 for a
    well-formed wrong answer, 0.0 without an answer).
    """
    return [
        float(has_closed_answer_block(text) and bool(answer_block(text))) for text in texts_of(completions)
    ]


def boxed_in_answer_reward(completions, **kwargs) -> list[float]:
    """0.5 for a closed `<answer>` block, plus 0.5 if that block holds a complete `\\boxed{...}` (SPG/d1 MATH format).

    d1's version meant to check for `\\boxed` but tested a string with a backspace character (`"\\b"`), so its
    boxed bonus never fired; this one does.
    """
    scores = []
    for text in texts_of(completions):
        if not has_closed_answer_block(text):
            scores.append(0.0)
            continue
        scores.append(0.5 + 0.5 * (last_boxed(answer_block(text) or "") is not None))
    return scores
