"""Countdown: the expression in the last `<answer>` block must use each given number exactly once and hit the target.

The expression is read with a whitelist walk over Python's `ast` (integer literals, `+ - * /`, parentheses, unary
minus) and evaluated exactly with `Fraction`s, never with `eval`. Anything else (names, calls, `**`, `//`, `%`,
floats, a division by zero, an expression over `MAX_EXPRESSION_LENGTH` characters) scores 0.0. An answer written as
an equation ("2*4-3 = 5") is read by its left side when the right side is a bare number.
"""

from __future__ import annotations

import ast
import operator
import re
from collections import Counter
from fractions import Fraction

from ._text import answer_block, check_column, last_boxed, texts_of

__all__ = ["countdown_accuracy", "evaluate_arithmetic", "extract_countdown_expression", "MAX_EXPRESSION_LENGTH"]

MAX_EXPRESSION_LENGTH = 200  # a few numbers and operators; longer text is not an answer (and keeps `ast` cheap)
DEFAULT_TOLERANCE = 1e-6

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SYMBOLS = {"×": "*", "·": "*", "÷": "/", "−": "-", "\\times": "*", "\\cdot": "*", "\\div": "/"}
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_BARE_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")


class _Rejected(ValueError):
    """The expression is not plain arithmetic over integers, or cannot be evaluated."""


def extract_countdown_expression(text: str) -> str | None:
    """The expression the model answered: its last `<answer>` block (a `\\boxed{}` inside wins), normalised.

    LaTeX and Unicode operators become `* / -`, `\\frac{a}{b}` becomes `((a)/(b))`, other braces become
    parentheses, and "expr = 5" keeps "expr".
    """
    block = answer_block(text)
    if block is None:
        return None
    boxed = last_boxed(block)
    expression = boxed if boxed is not None else block
    for symbol, replacement in _SYMBOLS.items():
        expression = expression.replace(symbol, replacement)
    for _ in range(8):  # \frac{a}{b} -> ((a)/(b)), innermost first; a bounded number of nesting levels
        expression, found = _FRAC.subn(r"((\1)/(\2))", expression)
        if not found:
            break
    expression = expression.replace("\\left", "").replace("\\right", "").replace("{", "(").replace("}", ")")
    expression = " ".join(expression.replace("$", "").split())  # one line: `ast` rejects bare newlines
    if "=" in expression:
        left, *rights = expression.split("=")
        if not all(_BARE_NUMBER.fullmatch(r) for r in rights):
            return None
        expression = left.strip()
    return expression or None


def evaluate_arithmetic(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of an integer arithmetic expression and the integer literals it uses, in order.

    Raises `ValueError` for anything outside integers, `+ - * /`, parentheses and unary minus, or a division by zero.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise _Rejected(f"expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise _Rejected(f"not an expression: {error}") from None
    literals: list[int] = []
    return _evaluate(tree.body, literals), literals


def _evaluate(node: ast.AST, literals: list[int]) -> Fraction:
    """Evaluate one whitelisted node, recording the integer literals met on the way."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        literals.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, literals)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left = _evaluate(node.left, literals)
        right = _evaluate(node.right, literals)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Rejected("division by zero")
        return _OPERATORS[type(node.op)](left, right)
    raise _Rejected(f"{type(node).__name__} is not allowed")


def countdown_score(text: str, numbers, target, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """1.0 if the answer uses exactly the multiset `numbers` and evaluates to `target` (within `tolerance`)."""
    expression = extract_countdown_expression(text)
    if expression is None:
        return 0.0
    try:
        value, literals = evaluate_arithmetic(expression)
    except (ValueError, RecursionError):
        return 0.0
    if Counter(literals) != Counter(int(n) for n in numbers):
        return 0.0
    return float(abs(value - Fraction(target)) <= tolerance)


def countdown_accuracy(completions, numbers, target, **kwargs) -> list[float]:
    """1.0 where the answered expression uses each of `numbers` exactly once and equals `target`, else 0.0."""
    n = len(completions)
    numbers = check_column("numbers", numbers, n)
    targets = check_column("target", target, n)
    return [
        countdown_score(text, _as_int_list(nums, "numbers"), _as_number(t, "target"))
        for text, nums, t in zip(texts_of(completions), numbers, targets)
    ]


def _as_int_list(value, name: str) -> list[int]:
    """A row's numbers as ints (lists of ints or of digit strings both occur in saved data)."""
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a list of integers per row, got {value!r}.") from None


def _as_number(value, name: str) -> Fraction:
    """A row's target as an exact number."""
    try:
        return Fraction(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number per row, got {value!r}.") from None
