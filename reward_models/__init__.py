"""Reward functions for RL post-training of diffusion LMs, in TRL's reward-function form.

Every rule-based reward is `f(completions, **columns) -> list[float]`, one float per completion, and ignores the
extra keywords TRL passes (`prompts`, `completion_ids`, `trainer_state`, `log_extra`, `log_metric`, other dataset
columns). Completions may be strings or TRL chat-message lists. Accuracy rewards are 1.0 / 0.0 (Sudoku: the share of
empty cells filled correctly); format rewards are in [0, 1].

    from reward_models import gsm8k_accuracy, xml_count_reward
    trainer = DiPODTrainer(..., reward_funcs=[gsm8k_accuracy, xml_count_reward], ...)

Model-based rewards (imported on first use, so this package stays light): `SequenceClassifierReward` (a Hugging Face
sequence-classification reward model) and `JudgeReward` (an LLM judge behind an OpenAI-compatible server such as
`vllm serve`; needs only httpx).
"""

from importlib import import_module

from .countdown import countdown_accuracy, evaluate_arithmetic, extract_countdown_expression
from .exact_match import exact_match_accuracy
from .format import (
    answer_tag_reward,
    boxed_in_answer_reward,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)
from .math_rewards import (
    extract_gsm8k_answer,
    extract_math_answer,
    gsm8k_accuracy,
    integer_answer_reward,
    is_math_equivalent,
    math500_accuracy,
)
from .sudoku import is_valid_sudoku, parse_sudoku_answer, sudoku_accuracy, sudoku_solved

# The reward mixes of d1 (and SPG, which reuses them) per task, as (reward, weight) pairs in this package's 0-to-1
# units: e.g. d1's GSM8K correctness pays 2.0 and its XML count at most 0.5. Countdown's 0.9/0.1 split reproduces
# d1's 1.0 for a correct answer and 0.1 for a well-formed wrong one. Use with TRL's `reward_weights`.
D1_REWARD_WEIGHTS = {
    "gsm8k": [
        (xml_count_reward, 0.5),
        (soft_format_reward, 0.5),
        (strict_format_reward, 0.5),
        (integer_answer_reward, 0.5),
        (gsm8k_accuracy, 2.0),
    ],
    "math500": [(math500_accuracy, 2.0), (boxed_in_answer_reward, 1.0)],
    "countdown": [(countdown_accuracy, 0.9), (answer_tag_reward, 0.1)],
    "sudoku": [(sudoku_accuracy, 1.0)],
}

_LAZY = {
    "SequenceClassifierReward": "reward_models.hf_model",
    "JudgeReward": "reward_models.judge",
    "JudgeUnavailableError": "reward_models.judge",
    "JudgeReplyError": "reward_models.judge",
    "DEFAULT_JUDGE_TEMPLATE": "reward_models.judge",
    "parse_score": "reward_models.judge",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reward_models' has no attribute {name!r}")


def rewards_for(task: str) -> tuple[list, list[float]]:
    """`(reward_funcs, reward_weights)` of d1's setup for a task ("gsm8k", "math500", "countdown", "sudoku")."""
    if task not in D1_REWARD_WEIGHTS:
        raise ValueError(f"task: unknown task {task!r}; expected one of {sorted(D1_REWARD_WEIGHTS)}.")
    funcs, weights = zip(*D1_REWARD_WEIGHTS[task])
    return list(funcs), list(weights)


__all__ = [
    "D1_REWARD_WEIGHTS",
    "DEFAULT_JUDGE_TEMPLATE",
    "JudgeReplyError",
    "JudgeReward",
    "JudgeUnavailableError",
    "SequenceClassifierReward",
    "answer_tag_reward",
    "boxed_in_answer_reward",
    "countdown_accuracy",
    "evaluate_arithmetic",
    "exact_match_accuracy",
    "extract_countdown_expression",
    "extract_gsm8k_answer",
    "extract_math_answer",
    "gsm8k_accuracy",
    "integer_answer_reward",
    "is_math_equivalent",
    "is_valid_sudoku",
    "math500_accuracy",
    "parse_score",
    "parse_sudoku_answer",
    "rewards_for",
    "soft_format_reward",
    "strict_format_reward",
    "sudoku_accuracy",
    "sudoku_solved",
    "xml_count_reward",
]
