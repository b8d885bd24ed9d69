"""Text helpers shared by the rule-based rewards: completion text, `<answer>` blocks, `\\boxed{}` contents, numbers.

Every reward reads the model's final answer the same way, so the rules live here once:

* `completion_text` turns a TRL completion (a string, or a list of chat messages) into the text the model wrote.
* `answer_block` is the content of the LAST `<answer>` block. A block the generation cut off (an `<answer>` with no
  `</answer>` after it) still counts: it runs to the end of the text.
* `last_boxed` is the content of the last `\\boxed{...}` with balanced (nested) braces.
* `last_number` is the last number written in a string: commas as thousands separators, a sign, decimals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")

# A number: optional sign (only when the minus is not a binary minus, i.e. not right after a digit, letter, `)` or
# `]`), then either comma-grouped thousands ("1,200") or plain digits, then optional decimals; or a bare ".5".
_NUMBER = re.compile(
    r"(?:(?<![\w.)\]}])[-−])?"  # sign; "−" is the Unicode minus some tokenizers produce
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
    r"|(?:(?<![\w.)\]}])[-−])?\.\d+"
)


def completion_text(completion) -> str:
    """The text the model wrote: a plain string as is, or the last assistant message of a chat-message list.

    TRL passes conversational completions as `[{"role": "assistant", "content": ...}]` (more messages after tool
    calls); the final answer is in the last assistant turn. Content given as a list of parts keeps its text parts.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_content(completion)
    messages = [m for m in completion if isinstance(m, dict)]
    if not messages:
        return "".join(str(part) for part in completion)
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
    return _message_content((assistant or messages)[-1])


def _message_content(message: dict) -> str:
    """A message's content as text; multimodal content lists keep only their text parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
    return "".join(parts)


def prompt_text(prompt) -> str:
    """The question a prompt asks: the last user message of a conversation, or a plain-text prompt as is."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return _message_content(users[-1]) if users else completion_text(prompt)


def answer_block(text: str) -> str | None:
    """Content of the last `<answer>` block (stripped); to the end of the text if it was never closed; else None."""
    opens = list(_ANSWER_OPEN.finditer(text))
    if not opens:
        return None
    rest = text[opens[-1].end() :]
    close = _ANSWER_CLOSE.search(rest)
    return (rest[: close.start()] if close else rest).strip()


def has_closed_answer_block(text: str) -> bool:
    """Whether an `<answer>` is followed by a `</answer>`: the model finished its answer."""
    opens = list(_ANSWER_OPEN.finditer(text))
    return bool(opens) and _ANSWER_CLOSE.search(text, opens[-1].end()) is not None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced, so `\\boxed{\\frac{1}{2}}` works.

    A box whose braces never close (a cut-off generation) is skipped in favour of the previous complete one.
    """
    for match in reversed(list(_BOXED.finditer(text))):
        content = _balanced_content(text, match.end())
        if content is not None:
            return content.strip()
    return None


def _balanced_content(text: str, start: int) -> str | None:
    """The text from `start` up to the brace that closes the `{` just before `start`; None if it never closes."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def numbers_in(text: str) -> list[str]:
    """All numbers written in `text`, in order, as found ("1,200", "-3", "2.50"); LaTeX `{,}` separators are read."""
    return _NUMBER.findall(text.replace("{,}", ","))


def to_fraction(number: str) -> Fraction | None:
    """An exact value for a number string ("1,200" -> 1200, "2.50" -> 5/2, "−3" -> -3); None if it is not one."""
    cleaned = number.strip().replace(",", "").replace("−", "-")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> Fraction | None:
    """The value of the last number written in `text`, or None if it has none."""
    found = numbers_in(text)
    return to_fraction(found[-1]) if found else None


def texts_of(completions: Sequence) -> list[str]:
    """`completion_text` of each completion."""
    return [completion_text(c) for c in completions]


def check_column(name: str, values, n: int) -> list:
    """The dataset column a reward reads, checked to hold one value per completion (TRL passes one per row)."""
    if values is None:
        raise ValueError(f"{name}: this reward needs the dataset column {name!r}, but it was not passed.")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name}: expected one value per completion (a list), got {type(values).__name__}.")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name}: got {len(values)} values for {n} completions; expected one per completion.")
    return values
