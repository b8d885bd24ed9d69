"""Rule-based and reward-model rewards on realistic completions: exact values, TRL's calling convention."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import pytest

import reward_models
from reward_models import (
    answer_tag_reward,
    boxed_in_answer_reward,
    countdown_accuracy,
    evaluate_arithmetic,
    extract_gsm8k_answer,
    gsm8k_accuracy,
    integer_answer_reward,
    math500_accuracy,
    soft_format_reward,
    strict_format_reward,
    sudoku_accuracy,
    sudoku_solved,
    xml_count_reward,
)
from tests.helpers.models import direct_scores

# Keywords TRL adds to every reward call (besides the dataset columns).
TRL_EXTRAS = {"trainer_state": object(), "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}


def chat(text: str) -> list[dict]:
    """A completion as TRL passes it for conversational datasets."""
    return [{"role": "assistant", "content": text}]


LONG_GSM8K = """<reasoning>
Natalia sold 48 clips in April. In May she sold half as many, so 48 / 2 = 24 clips.
Let me double-check: 24 * 2 = 48, yes. Altogether she sold 48 + 24 = 72 clips.
Some people might think the answer is 48, or even 96 if they doubled instead of halved.
</reasoning>
<answer>
72
</answer>
"""

# ---------------------------------------------------------------------------------------------------------------------
# Public signatures and TRL's calling convention
# ---------------------------------------------------------------------------------------------------------------------


def test_rewards_accept_trl_keywords_and_other_columns():
    completions = [chat(LONG_GSM8K), chat("<answer>71</answer>")]
    scores = gsm8k_accuracy(
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=completions,
        completion_ids=[[1, 2], [3]],
        answer=["72", "72"],
        question=["q", "q"],
        **TRL_EXTRAS,
    )
    assert scores == [1.0, 0.0]
    for func in (strict_format_reward, soft_format_reward, xml_count_reward, answer_tag_reward, integer_answer_reward):
        assert len(func(completions=completions, prompts=None, answer=["72", "72"], **TRL_EXTRAS)) == 2


def test_column_length_mismatch_names_the_column():
    with pytest.raises(ValueError, match="answer"):
        gsm8k_accuracy(["<answer>1</answer>", "<answer>2</answer>"], answer=["1"])
    with pytest.raises(ValueError, match="target"):
        countdown_accuracy(["<answer>1+2</answer>"], numbers=[[1, 2]], target=None)


# ---------------------------------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------------------------------


def test_gsm8k_long_reasoning_with_raw_gsm8k_reference():
    raw = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert gsm8k_accuracy([LONG_GSM8K, chat(LONG_GSM8K)], answer=[raw, raw]) == [1.0, 1.0]
    assert gsm8k_accuracy([LONG_GSM8K], answer=["48"]) == [0.0]


@pytest.mark.parametrize(
    "answer_text, reference",
    [
        ("$1,200", "1200"),
        ("1200.00", "#### 1,200"),
        ("She pays 1,200 dollars in total.", 1200),
        ("-3", "-3"),
        ("−3", "-3"),  # Unicode minus
        ("2.50", "2.5"),
        ("$2.5", "#### 2.50"),
        ("18 dollars", "18"),
        ("\\$18", "18"),
        ("50%", "50"),
        ("1{,}000", "1000"),
    ],
)
def test_gsm8k_number_formats(answer_text, reference):
    completion = f"<reasoning>\nWork it out.\n</reasoning>\n<answer>\n{answer_text}\n</answer>"
    assert gsm8k_accuracy([completion], answer=[reference]) == [1.0]


def test_gsm8k_binary_minus_is_not_a_sign():
    # "20-3" ends with the number 3, not -3; "x = -3" is a negative answer.
    assert extract_gsm8k_answer("<answer>20-3</answer>") == Fraction(3)
    assert extract_gsm8k_answer("<answer>x = -3</answer>") == Fraction(-3)


def test_gsm8k_candidate_precedence():
    # The answer block beats a \boxed{} in the reasoning, which beats the last number.
    boxed_then_block = "I first got \\boxed{70}, then fixed a mistake: 72.\n<answer>72</answer>\nCheck: 71 is wrong."
    assert gsm8k_accuracy([boxed_then_block], answer=["72"]) == [1.0]
    # Two answer blocks: the last one counts.
    revised = "<answer>70</answer>\nWait, I forgot the 2 extra.\n<answer>72</answer>"
    assert gsm8k_accuracy([revised, revised], answer=["72", "70"]) == [1.0, 0.0]
    # A box inside the answer block beats other numbers in the block.
    assert gsm8k_accuracy(["<answer>3 * 24 = \\boxed{72}, i.e. 72.0 of 100</answer>"], answer=["72"]) == [1.0]
    # No block: the last box counts even if numbers follow it.
    assert gsm8k_accuracy(["So the total is \\boxed{72}. That is 3 boxes of 24."], answer=["72"]) == [1.0]
    # Neither: the last number of the text.
    assert gsm8k_accuracy(["48 + 24 = 72"], answer=["72"]) == [1.0]
    assert gsm8k_accuracy(["72 is the total, from 48 and 24"], answer=["72"]) == [0.0]


def test_gsm8k_malformed_and_missing_tags():
    truncated = "<reasoning>\n48 + 24 = 72\n</reasoning>\n<answer>\n72"  # generation cut before </answer>
    no_number_in_block = "<reasoning>48 + 24 = 72</reasoning><answer>seventy-two</answer>"
    close_only = "The clips add up to 72.</answer>"
    nothing = "I am not sure how to solve this."
    upper_tags = "<ANSWER>72</ANSWER>"
    assert gsm8k_accuracy(
        [truncated, no_number_in_block, close_only, nothing, upper_tags, "", chat("")], answer=["72"] * 7
    ) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_gsm8k_unreadable_reference_raises():
    with pytest.raises(ValueError, match="answer"):
        gsm8k_accuracy(["<answer>1</answer>"], answer=["#### none"])


def test_integer_answer_reward():
    completions = [
        "<answer>\n72\n</answer>",
        "<answer>72.5</answer>",
        "<answer>-3</answer>",
        "72",  # no answer block
        "<answer>$72</answer>",
    ]
    assert integer_answer_reward(completions) == [1.0, 0.0, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------------
# MATH-500
# ---------------------------------------------------------------------------------------------------------------------


def test_math500_nested_boxed_and_equivalent_forms():
    completions = [
        "<reasoning>\nsin 60 = \\frac{\\sqrt{3}}{2}\n</reasoning>\n<answer>\n\\boxed{\\frac{\\sqrt{3}}{2}}\n</answer>",
        "The value is $\\boxed{\\dfrac{\\sqrt3}{2}}$.",
        "<answer>\\boxed{\\frac{1}{2}}</answer>",
    ]
    assert math500_accuracy(completions, answer=["\\frac{\\sqrt{3}}{2}"] * 3) == [1.0, 1.0, 0.0]


def test_math500_answer_block_without_box_and_tuples():
    completions = [
        "<reasoning>Convert to polar.</reasoning><answer>The answer is $\\left(3, \\frac{\\pi}{2}\\right)$</answer>",
        "<answer>\\dfrac{14}{3}</answer>",
        "<answer>14/3</answer>",
        "<answer>4.6667</answer>",
    ]
    references = ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\frac{14}{3}", "\\frac{14}{3}", "\\frac{14}{3}"]
    assert math500_accuracy(completions, answer=references) == [1.0, 1.0, 1.0, 0.0]


def test_math500_block_beats_earlier_boxes_and_cut_off_box_is_skipped():
    block_wins = "First try: \\boxed{5}. Actually it is 6.\n<answer>\\boxed{6}</answer>"
    cut_off = "We get \\boxed{6}. To double check, \\boxed{\\frac{12}{"  # last box never closes
    no_answer = "The answer is 6."  # no box, no block: MATH answers are not guessed from loose text
    assert math500_accuracy([block_wins, cut_off, no_answer, chat(block_wins)], answer=["6"] * 4) == [
        1.0,
        1.0,
        0.0,
        1.0,
    ]


def test_math500_reference_given_as_full_solution():
    solution = "We have $x = 2 + 3 = 5$, so the answer is $\\boxed{5}$."
    assert math500_accuracy(["<answer>\\boxed{5}</answer>", "<answer>\\boxed{2}</answer>"], answer=[solution] * 2) == [
        1.0,
        0.0,
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Countdown
# ---------------------------------------------------------------------------------------------------------------------


def countdown(expression: str) -> str:
    return f"<reasoning>\nTry combinations of the numbers.\n</reasoning>\n<answer>\n{expression}\n</answer>"


@pytest.mark.parametrize(
    "expression, numbers, target, expected",
    [
        ("2*4-3", [2, 3, 4], 5, 1.0),
        ("(4 - 2)\n * 3", [2, 3, 4], 6, 1.0),  # newlines inside the block
        ("2 × 4 − 3", [2, 3, 4], 5, 1.0),  # Unicode operators
        ("\\frac{8}{3} \\times 3", [8, 3, 3], 8, 1.0),  # LaTeX; exact arithmetic: 8/3 * 3 == 8
        ("8 / 3 * 3", [8, 3, 3], 8, 1.0),
        ("2*4-3 = 5", [2, 3, 4], 5, 1.0),  # an equation is read by its left side
        ("-2 + 3 + 4", [2, 3, 4], 5, 1.0),  # unary minus
        ("2*4-3 = 5 + 0", [2, 3, 4], 5, 0.0),  # right side is not a bare number
        ("(2+3)/4", [2, 3, 4], 5, 0.0),  # wrong value
        ("2*2+1", [2, 1, 4], 5, 0.0),  # reuses 2, never uses 4
        ("2*4", [2, 3, 4], 8, 0.0),  # misses 3
        ("2*4-3+1", [2, 3, 4], 6, 0.0),  # an extra number
        ("4/(3-3)+2", [2, 3, 3, 4], 5, 0.0),  # division by zero
        ("2**3-4+1", [2, 3, 4, 1], 5, 0.0),  # power is not allowed
        ("9**9**9**9", [9, 9, 9, 9], 5, 0.0),  # huge exponent: rejected before evaluation
        ("4 // 3 + 2", [2, 3, 4], 3, 0.0),
        ("4 % 3 + 2", [2, 3, 4], 3, 0.0),
        ("2.0*4-3", [2, 3, 4], 5, 0.0),  # float literals are not the given integers
        ("__import__('os').getpid()", [2, 3, 4], 5, 0.0),
        ("abs(-5) + 0*2*3*4", [2, 3, 4], 5, 0.0),
        ("x = 2*4-3", [2, 3, 4], 5, 0.0),
        ("", [2, 3, 4], 5, 0.0),
        ("(" * 150 + "2*4-3" + ")" * 150, [2, 3, 4], 5, 0.0),  # longer than MAX_EXPRESSION_LENGTH
    ],
)
def test_countdown_cases(expression, numbers, target, expected):
    assert countdown_accuracy([countdown(expression)], numbers=[numbers], target=[target]) == [expected]


def test_countdown_huge_exponent_is_fast():
    start = time.perf_counter()
    assert countdown_accuracy([countdown("9**9**9**9**9")], numbers=[[9] * 5], target=[1]) == [0.0]
    assert time.perf_counter() - start < 1.0


def test_countdown_answer_location_and_column_types():
    completions = [
        "<reasoning>44 + 19 = 63, then 63 + 35 = 98</reasoning>",  # no answer block
        "I think 44 + 19 + 35 works.",
        "<answer>2*4-3</answer> ... wait <answer>\\boxed{44 + 19 + 35}</answer>",  # last block, box inside
        chat(countdown("44 + 19 + 35")),
        countdown("44+19+35"),
    ]
    numbers = [[44, 19, 35]] * 4 + [["44", "19", "35"]]  # numbers saved as strings still work
    targets = [98, 98, 98, 98, "98"]
    assert countdown_accuracy(completions, numbers=numbers, target=targets) == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_evaluate_arithmetic_rejects_everything_but_arithmetic():
    assert evaluate_arithmetic("(1 + 2) * -3 / 4") == (Fraction(-9, 4), [1, 2, 3, 4])
    for bad in ["1 / 0", "2 ** 2", "a + 1", "[1, 2]", "1 if 2 else 3", "1 < 2", "f(1)", "1;2"]:
        with pytest.raises(ValueError):
            evaluate_arithmetic(bad)


# ---------------------------------------------------------------------------------------------------------------------
# Sudoku
# ---------------------------------------------------------------------------------------------------------------------

SOLUTION = "1234341221434321"
PUZZLE = "1030040221000001"  # 7 clues, 9 empty cells


def sudoku(answer: str) -> str:
    return f"<reasoning>\nR1 misses 2 and 4...\n</reasoning>\n<answer>\n{answer}\n</answer>"


def test_sudoku_exact_solution_in_many_layouts():
    layouts = [
        SOLUTION,
        "1234\n3412\n2143\n4321",
        "1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1",
        "1,2,3,4,3,4,1,2,2,1,4,3,4,3,2,1",
        "|1|2|3|4|\n|3|4|1|2|\n|2|1|4|3|\n|4|3|2|1|",
        "[[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]",
        "\\boxed{1234341221434321}",
    ]
    completions = [sudoku(layout) for layout in layouts] + [chat(sudoku(SOLUTION))]
    n = len(completions)
    assert sudoku_accuracy(completions, puzzle=[PUZZLE] * n, solution=[SOLUTION] * n) == [1.0] * n


def test_sudoku_partial_credit_counts_empty_cells_only():
    two_swapped = "1432341221434321"  # cells 1 and 3 (both empty in the puzzle) swapped: 7 of 9 right
    unfilled = PUZZLE  # the puzzle echoed back: no empty cell filled
    out_of_range = "1934341221434321"  # a 9 in an empty cell is just a wrong cell
    assert sudoku_accuracy(
        [sudoku(two_swapped), sudoku(unfilled), sudoku(out_of_range)], puzzle=[PUZZLE] * 3, solution=[SOLUTION] * 3
    ) == [7 / 9, 0.0, 8 / 9]


def test_sudoku_rule_breaking_and_wrong_size_grids_score_zero():
    changed_clue = "2234341221434321"  # cell 0 is the clue 1
    too_short = SOLUTION[:15]
    too_long = SOLUTION + "1"
    row_labels = "R1: 1234\nR2: 3412\nR3: 2143\nR4: 4321"
    completions = [
        sudoku(changed_clue),
        sudoku(too_short),
        sudoku(too_long),
        sudoku(row_labels),
        f"The grid is {SOLUTION}.",  # no answer block
        "<answer>\n1234\n3412\n2143\n4321",  # cut off before </answer>: still read
    ]
    n = len(completions)
    assert sudoku_accuracy(completions, puzzle=[PUZZLE] * n, solution=[SOLUTION] * n) == [0.0] * 5 + [1.0]


def test_sudoku_int_columns_get_their_leading_zeros_back():
    puzzle = "0030040221000001"
    assert sudoku_accuracy([sudoku(SOLUTION)], puzzle=[int(puzzle)], solution=[int(SOLUTION)]) == [1.0]
    with pytest.raises(ValueError, match="puzzle"):
        sudoku_accuracy([sudoku(SOLUTION)], puzzle=["12ab"], solution=[SOLUTION])


def test_sudoku_solved_is_all_or_nothing():
    keeps_clues_but_invalid = "1232341221434321"  # row 1 repeats 2
    valid_but_changes_clues = SOLUTION.translate(str.maketrans("12", "21"))  # digits relabelled: cell 0 is now 2
    completions = [sudoku(SOLUTION), sudoku(keeps_clues_but_invalid), sudoku(valid_but_changes_clues), "none"]
    assert sudoku_solved(completions, puzzle=[PUZZLE] * 4, solution=[SOLUTION] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert reward_models.is_valid_sudoku(valid_but_changes_clues)
    assert not reward_models.is_valid_sudoku(keeps_clues_but_invalid)
    assert not reward_models.is_valid_sudoku("1234")


# ---------------------------------------------------------------------------------------------------------------------
# Format rewards
# ---------------------------------------------------------------------------------------------------------------------

PERFECT = "<reasoning>\nStep one.\nStep two.\n</reasoning>\n<answer>\n72\n</answer>"


def test_strict_format():
    completions = [
        PERFECT,  # multi-line reasoning (d1's regex missed these)
        PERFECT + "\n",
        "<reasoning>Step one.</reasoning><answer>72</answer>",  # no newlines
        PERFECT + "\nExtra text.",
        "<reasoning>\n\n</reasoning>\n<answer>\n72\n</answer>",  # empty reasoning
        "<answer>\n72\n</answer>",
        chat(PERFECT),
    ]
    assert strict_format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_soft_format():
    completions = [
        PERFECT,
        "  <reasoning>Step one.\nStep two.</reasoning> <answer>72</answer> trailing words",
        "<answer>72</answer><reasoning>why</reasoning>",
        "Preamble <reasoning>x</reasoning><answer>1</answer>",
        "<reasoning>x</reasoning>",
    ]
    assert soft_format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_xml_count():
    completions = [
        PERFECT,
        PERFECT + "\nblah",  # 4 trailing characters: 0.002 each
        PERFECT + " " + "x" * 500,  # the trailing penalty is capped at 0.25
        "<reasoning>\nabc\n</reasoning>\n<answer>\n72",  # no </answer>
        "<answer>1</answer><answer>2</answer>",  # repeated tags earn nothing
        "no tags at all",
    ]
    assert xml_count_reward(completions) == pytest.approx([1.0, 0.992, 0.75, 0.75, 0.0, 0.0])


def test_answer_tag_and_boxed_in_answer():
    completions = [
        "<answer>\\boxed{5}</answer>",
        "<answer>5</answer>",
        "<answer>\\boxed{5}",  # never closed
        "\\boxed{5}",
        "<answer></answer>",
    ]
    assert answer_tag_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert boxed_in_answer_reward(completions) == [1.0, 0.5, 0.0, 0.0, 0.5]


def d1_countdown_rule(text: str, numbers: list[int], target: int) -> float:
    """d1's Countdown score as its rule states it: 0 without a closed <answer> block; otherwise the last block's
    equation scores 1.0 if it uses each given number exactly once and evaluates to the target (within 1e-5), else
    0.1, the format score (also for an equation that does not evaluate)."""
    blocks = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if not blocks:
        return 0.0
    equation = blocks[-1].strip()
    if sorted(int(n) for n in re.findall(r"\d+", equation)) != sorted(numbers):
        return 0.1
    if not re.fullmatch(r"[\d+\-*/().\s]+", equation):
        return 0.1
    try:
        value = eval(equation, {"__builtins__": {}}, {})  # digits, + - * / and brackets only, checked above
    except (ZeroDivisionError, SyntaxError):
        return 0.1
    return 1.0 if abs(value - target) < 1e-5 else 0.1


def test_d1_countdown_mix_reproduces_d1s_rule():
    from dipod_trl.tasks import get_task

    funcs, weights = get_task("countdown").rewards()
    cases = [  # (completion, numbers, target): plain-arithmetic answers, where d1's rule is defined
        (countdown("2*4-3"), [2, 3, 4], 5),
        (countdown("(4 - 3) * 2 + 3"), [2, 3, 3, 4], 5),
        (countdown("4/2+3"), [2, 3, 4], 5),
        (countdown("2+3+4"), [2, 3, 4], 5),  # wrong value
        (countdown("2*2+1"), [2, 1, 4], 5),  # reuses 2, never uses 4
        (countdown("2*4"), [2, 3, 4], 8),  # misses 3
        (countdown("4/(3-3)+2"), [2, 3, 3, 4], 5),  # division by zero
        (countdown("(2+3"), [2, 3], 5),  # does not parse
        ("<answer>2+3+4</answer> no: <answer>2*4-3</answer>", [2, 3, 4], 5),  # the last block counts
        ("<answer>2*4-3</answer> no: <answer>2+3+4</answer>", [2, 3, 4], 5),
        ("2*4-3", [2, 3, 4], 5),  # no answer block
        ("<reasoning>2*4-3</reasoning>", [2, 3, 4], 5),
    ]  # Not here: an answer block never closed, which d1 scores 0 and countdown_accuracy reads (0.9 in the mix).
    completions, numbers, targets = (list(column) for column in zip(*cases))
    per_func = [f(completions, numbers=numbers, target=targets) for f in funcs]
    totals = [sum(w * scores[i] for w, scores in zip(weights, per_func)) for i in range(len(cases))]
    expected = [d1_countdown_rule(*case) for case in cases]
    assert {1.0, 0.1, 0.0} <= set(expected)  # every outcome of the rule is exercised
    assert totals == pytest.approx(expected)
    with pytest.raises(ValueError, match="task"):
        get_task("chess")


# ---------------------------------------------------------------------------------------------------------------------
# Sequence-classification reward model
# ---------------------------------------------------------------------------------------------------------------------

def test_reward_model_matches_direct_forward_pass(tiny_reward_model_dir):
    from reward_models import SequenceClassifierReward

    reward = SequenceClassifierReward(tiny_reward_model_dir, batch_size=2, device="cpu")
    prompts = ["the question ", "she sold ", "half as many "]
    completions = ["the answer is 72", "72 clips in april and may", "bad"]  # different lengths: padding matters
    scores = reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 3, answer=["72"] * 3, **TRL_EXTRAS)
    expected = direct_scores(tiny_reward_model_dir, [p + c for p, c in zip(prompts, completions)])
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 4) for s in scores)) == 3  # the random model does tell the texts apart
    assert reward.__name__ == f"reward_model_{tiny_reward_model_dir.name}"


def test_reward_model_conversational_inputs(tiny_reward_model_dir):
    from reward_models import SequenceClassifierReward

    prompts = [[{"role": "user", "content": "the question"}]] * 2
    completions = [chat("the answer is 72"), chat("bad")]
    plain = SequenceClassifierReward(tiny_reward_model_dir, device="cpu")  # the tokenizer has no chat template
    assert plain(prompts=prompts, completions=completions) == pytest.approx(
        direct_scores(tiny_reward_model_dir, ["the question" + "the answer is 72", "the question" + "bad"]), abs=1e-5
    )

    templated = SequenceClassifierReward(tiny_reward_model_dir, device="cpu")
    templated.tokenizer.chat_template = (
        "[CLS]{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}[SEP]"
    )
    rendered = [templated.tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
    assert rendered[0] == "[CLS]user the question assistant the answer is 72 [SEP]"
    assert templated(prompts=prompts, completions=completions) == pytest.approx(
        direct_scores(tiny_reward_model_dir, rendered, add_special_tokens=False), abs=1e-5
    )


def test_reward_model_argument_errors(tiny_reward_model_dir):
    from reward_models import SequenceClassifierReward

    with pytest.raises(ValueError, match="batch_size"):
        SequenceClassifierReward(tiny_reward_model_dir, batch_size=0)
    with pytest.raises(ValueError, match="label_index"):
        SequenceClassifierReward(tiny_reward_model_dir, label_index=3)
    reward = SequenceClassifierReward(tiny_reward_model_dir, device="cpu")
    with pytest.raises(ValueError, match="prompts"):
        reward(prompts=["a"], completions=["b", "c"])


def test_exact_match_reads_the_answer_block_or_the_whole_completion():
    from reward_models import exact_match_accuracy

    completions = ["11345", " 11345\n", [{"role": "assistant", "content": "<answer>11345</answer>"}], "1134", "113456"]
    assert exact_match_accuracy(completions, answer=["11345"] * 5, prompts=["p"] * 5) == [1.0, 1.0, 1.0, 0.0, 0.0]
