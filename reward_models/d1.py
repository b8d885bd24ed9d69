"""d1's evaluation scoring, for numbers comparable with published tables (d1, SPG, the DiPOD paper).

The rules below are those of the evaluation parser that the DiPOD paper's release ships with d1's evaluation
(`language/d1/eval/parse_and_get_acc.py` in Astro-Eric/DiPOD-release): d1's parser plus a GSM8K fallback for an answer
block that was never closed. They are looser than the project's own scoring (`reward_models.gsm8k_accuracy` etc.):
use these to compare with papers, the project's to train and to judge a model strictly. Quirks are kept on purpose,
since agreeing with the published numbers item by item is the point (the tests check it on the release's files):

* GSM8K: the FIRST `\\boxed{...}` (no nested braces, one line) holding a number wins, then the first closed
  `<answer>` block, then whatever follows the last `<answer>` up to a `</answer>`; the value read is the whole text as
  a float, else the first (box) or last (answer block) number; it must equal the reference as a float.
* MATH-500: the last `\\boxed{}` (balanced braces), else, when there is no box, the WHOLE completion (so the answer
  block is read only when the box is empty); compared after Hendrycks' MATH string normalisation (`is_equiv`), which
  falls back to exact string equality when normalising fails.
* Countdown: the expression is the last `\\boxed{}`, else the whole completion; "expr = 51" keeps "expr"; the integers
  in it must be the given numbers (as a multiset) and its value (Python arithmetic: `+ - * / // **`) the target.
* Sudoku: the first of d1's answer patterns that matches, whitespace removed, padded with 0s or cut to 16 characters;
  the score is the share of the puzzle's empty cells it fills correctly (clues are not checked). d1's table reports
  the cells over all puzzles (total correct / total empty): see `sudoku_cells`.

Every function takes completions as text (strings or TRL chat messages); LLaDA's special tokens (`<|eot_id|>`) may be
left in, as d1's evaluation decodes them, and the Sudoku patterns use them.
"""

from __future__ import annotations

import ast
import operator
import re

from ._text import check_column, texts_of

__all__ = [
    "countdown_accuracy",
    "extract_countdown_equation",
    "extract_gsm8k_value",
    "extract_math_answer",
    "extract_sudoku_grid",
    "gsm8k_accuracy",
    "gsm8k_d1_reference",
    "is_equiv",
    "math500_accuracy",
    "strip_math_string",
    "sudoku_accuracy",
    "sudoku_cells",
]

# ---------------------------------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------------------------------

_ONE_LINE_BOX = re.compile(r"\\boxed{(.*?)}")
_D1_NUMBER = re.compile(r"-?\d+\.?\d*")
_CLOSED_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _float_of(text: str, which: int) -> float | None:
    """`float(text)`, else the `which`-th number in it (0: first, -1: last), else None."""
    try:
        return float(text)
    except ValueError:
        numbers = _D1_NUMBER.findall(text)
        return float(numbers[which]) if numbers else None


def extract_gsm8k_value(text: str) -> float | None:
    """The number d1 reads from a GSM8K completion (rules in the module docstring), or None."""
    for content in _ONE_LINE_BOX.findall(text):
        content = content.strip()
        if content.strip("."):  # neither empty nor a placeholder like "..."
            value = _float_of(content, 0)
            if value is not None:
                return value
    closed = _CLOSED_ANSWER.search(text)
    if closed and closed.group(1).strip():
        value = _float_of(closed.group(1).strip(), -1)
        if value is not None:
            return value
    tail = text.split("<answer>")[-1].split("</answer>")[0].strip()
    return _float_of(tail, -1) if tail else None


_D1_REFERENCE = re.compile(r"####\s*\$?([\d,]+(?:\.\d+)?)")


def gsm8k_d1_reference(answer) -> float | None:
    """The reference as d1 reads it: a float as it is; text (a raw "... #### 72" answer or a bare "72") through d1's
    pattern, the number after "####" without a sign, so a negative reference is None and never matches (two of
    GSM8K's test questions, counted wrong in d1's tables)."""
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return float(answer)
    text = str(answer)
    match = _D1_REFERENCE.search(text if "####" in text else "#### " + text.strip())
    return float(match.group(1).replace(",", "")) if match else None


def gsm8k_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 where d1's parser reads the reference number from the completion, else 0.0."""
    references = [gsm8k_d1_reference(ref) for ref in check_column("answer", answer, len(completions))]
    return [
        float(ref is not None and extract_gsm8k_value(text) == ref)
        for text, ref in zip(texts_of(completions), references)
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Boxes as d1 reads them (MATH-500 and Countdown)
# ---------------------------------------------------------------------------------------------------------------------


def _last_box(text: str) -> str | None:
    """d1's last box: `\\boxed x` up to a `$`, else the last `\\boxed{..}` (or `\\fbox{..}`) with balanced braces,
    else the whole text when it has no box at all; None when the last box never closes."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return text
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _unbox(box: str) -> str:
    """The content of a `\\boxed{..}` / `\\boxed x`; anything else (an `\\fbox`, the whole text) as it is."""
    if "\\boxed " in box:
        return box[len("\\boxed ") :]
    if box.startswith("\\boxed{") and box.endswith("}"):
        return box[len("\\boxed{") : -1]
    return box


# ---------------------------------------------------------------------------------------------------------------------
# MATH-500: Hendrycks' MATH normalisation
# ---------------------------------------------------------------------------------------------------------------------


class _Unnormalisable(Exception):
    """The string trips the normaliser; `is_equiv` then compares the raw strings."""


def _fix_sqrt(text: str) -> str:
    """`\\sqrt3` -> `\\sqrt{3}`."""
    if "\\sqrt" not in text:
        return text
    first, *rest = text.split("\\sqrt")
    out = first
    for piece in rest:
        if not piece:
            raise _Unnormalisable("\\sqrt at the end")
        out += "\\sqrt" + (piece if piece[0] == "{" else "{" + piece[0] + "}" + piece[1:])
    return out


def _fix_fracs(text: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac1{2}` -> `\\frac{1}{2}`; a `\\frac` followed by one character leaves the
    whole string as it was."""
    first, *rest = text.split("\\frac")
    out = first
    for piece in rest:
        out += "\\frac"
        if not piece:
            raise _Unnormalisable("\\frac at the end")
        if piece[0] == "{":
            out += piece
        elif len(piece) < 2:
            return text
        elif piece[1] != "{":
            out += "{" + piece[0] + "}{" + piece[1] + "}" + piece[2:]
        else:
            out += "{" + piece[0] + "}" + piece[1:]
    return out


def _fix_slash(text: str) -> str:
    """`3/4` -> `\\frac{3}{4}` for two plain integers; a side that is not an integer cannot be normalised."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        raise _Unnormalisable("a/b with a non-integer side") from None
    return f"\\frac{{{a}}}{{{b}}}" if text == f"{a}/{b}" else text


def strip_math_string(text: str) -> str:
    """Hendrycks' MATH normalisation of an answer (raises `_Unnormalisable` where the original fails)."""
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        text = text.replace(old, new)
    if "\\text{ " in text:  # units on the right
        parts = text.split("\\text{ ")
        if len(parts) != 2:
            raise _Unnormalisable("several \\text{ } units")
        text = parts[0]
    text = text.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not text:
        return text
    if text[0] == ".":
        text = "0" + text
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:  # "x = 3" -> "3"
        text = sides[1]
    text = _fix_fracs(_fix_sqrt(text).replace(" ", ""))
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _fix_slash(text)


def is_equiv(prediction, reference) -> bool:
    """MATH equivalence as d1 checks it: equal after normalisation, or equal as raw strings if normalising fails."""
    if isinstance(prediction, float) or isinstance(reference, float):
        try:
            return abs(float(prediction) - float(reference)) < 1e-6
        except (TypeError, ValueError):
            return False
    if prediction is None or reference is None:
        return prediction is None and reference is None
    try:
        return strip_math_string(prediction) == strip_math_string(reference)
    except Exception:  # the normaliser's own failures, and any other, as d1 catches them
        return prediction == reference


def extract_math_answer(text: str) -> str | None:
    """The MATH answer d1 reads (module docstring); None when the last box never closes and no block is closed."""
    box = _last_box(text)
    answer = _unbox(box) if box is not None else None
    if not answer:
        closed = _CLOSED_ANSWER.search(text)
        if closed:
            answer = closed.group(1).strip()
    return answer


def math500_accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 where d1's parser finds the completion's answer equivalent to the reference, else 0.0."""
    references = check_column("answer", answer, len(completions))
    scores = []
    for text, ref in zip(texts_of(completions), references):
        prediction = extract_math_answer(text)
        scores.append(float(prediction is not None and is_equiv(prediction, str(ref))))
    return scores


# ---------------------------------------------------------------------------------------------------------------------
# Countdown
# ---------------------------------------------------------------------------------------------------------------------

_EQUATION = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")
_ARITHMETIC_CHARS = re.compile(r"^[\d+\-*/().\s]+$")
_INTEGERS = re.compile(r"\d+")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_EXPONENT = 4096  # larger powers of |base| >= 2 are astronomically far from any target (and would hang Python)


class _NotANumber(Exception):
    """The expression has no numeric value (d1 scores it as infinity)."""


def extract_countdown_equation(text: str) -> str:
    """The expression d1 reads: the last box (else the first closed answer block, else the whole text when the last
    box never closes), LaTeX operators as Python's, and the left side of "expr = number"."""
    box = _last_box(text)
    if box is not None:
        equation = _unbox(box)
    else:
        closed = _CLOSED_ANSWER.search(text)
        equation = closed.group(1).strip() if closed else text
    equation = equation.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    match = _EQUATION.search(equation)
    return match.group(1).strip() if match else equation


def _value(node: ast.AST):
    """Python's value of an arithmetic node (int, float or complex), as `eval` would compute it."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, int) and right > _MAX_EXPONENT and abs(left) > 1:
            raise _NotANumber("power too large")
        return _BINARY[type(node.op)](left, right)
    raise _NotANumber(type(node).__name__)  # e.g. `(3)(4)` calls an int, `...` is Ellipsis: errors under eval


def _evaluate(equation: str):
    if not _ARITHMETIC_CHARS.match(equation):
        return float("inf")
    try:
        return _value(ast.parse(equation.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ArithmeticError, _NotANumber, RecursionError, MemoryError):
        return float("inf")


def countdown_accuracy(completions, numbers, target, **kwargs) -> list[float]:
    """1.0 where the expression d1 reads uses exactly `numbers` and evaluates to `target` (within 1e-5), else 0.0."""
    n = len(completions)
    numbers = check_column("numbers", numbers, n)
    targets = check_column("target", target, n)
    scores = []
    for text, nums, goal in zip(texts_of(completions), numbers, targets):
        equation = extract_countdown_equation(text)
        used = sorted(int(x) for x in _INTEGERS.findall(equation))
        scores.append(float(used == sorted(int(x) for x in nums) and _hits(_evaluate(equation), goal)))
    return scores


def _hits(value, target) -> bool:
    """`|value - target| < 1e-5` with Python's numbers (an int target stays exact against a huge int value)."""
    text = str(target).strip()
    goal = int(text) if text.lstrip("+-").isdigit() else float(text)
    try:
        return abs(value - goal) < 1e-5
    except OverflowError:
        return False


# ---------------------------------------------------------------------------------------------------------------------
# Sudoku
# ---------------------------------------------------------------------------------------------------------------------

_SUDOKU_PATTERNS = [
    re.compile(pattern, re.DOTALL)
    for pattern in (
        r"<answer>.*?```\s*([\d\s]+)```",
        r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
        r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)",
        r".*?(\d{16})\s*</answer>",
        r"\b(\d{16})\b",
    )
]


def extract_sudoku_grid(text: str) -> str:
    """The 16 characters d1 compares with the solution ("" when no pattern matches): the first matching pattern's
    text without whitespace, padded with "0" or cut to 16."""
    for pattern in _SUDOKU_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).strip():
            grid = re.sub(r"\s", "", match.group(1).strip())
            return grid[:16].ljust(16, "0")
    return ""


def sudoku_cells(text: str, puzzle: str, solution: str) -> tuple[int, int]:
    """`(correct, empty)`: how many of the puzzle's empty cells the answer fills as `solution` does, and how many
    empty cells there are. d1's table sums both over the test set."""
    puzzle, solution = str(puzzle).strip(), str(solution).strip()
    empty = [i for i, cell in enumerate(puzzle[:16]) if cell == "0"]
    grid = extract_sudoku_grid(text)
    correct = sum(grid[i] == solution[i] for i in empty) if grid else 0
    return correct, len(empty)


def sudoku_accuracy(completions, puzzle, solution, **kwargs) -> list[float]:
    """Per completion, the share of the puzzle's empty cells filled correctly (0.0 for a puzzle without any)."""
    n = len(completions)
    puzzles = check_column("puzzle", puzzle, n)
    solutions = check_column("solution", solution, n)
    scores = []
    for text, p, s in zip(texts_of(completions), puzzles, solutions):
        correct, empty = sudoku_cells(text, p, s)
        scores.append(correct / empty if empty else 0.0)
    return scores
