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

`reward_models.d1` scores as d1's evaluation does (looser parsing, for comparing with published tables). Each task's
training mix of these rewards, with d1's weights, is `dipod_trl.tasks.get_task(name).rewards()`.
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

_LAZY = {
    "SequenceClassifierReward": "reward_models.hf_model",
    "JudgeReward": "reward_models.judge",
    "JudgeUnavailableError": "reward_models.judge",
    "JudgeReplyError": "reward_models.judge",
    "DEFAULT_JUDGE_TEMPLATE": "reward_models.judge",
    "parse_score": "reward_models.judge",
}


def __getattr__(name):
    if name == "d1":  # d1's evaluation scoring, a submodule loaded on first use
        return import_module("reward_models.d1")
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reward_models' has no attribute {name!r}")


__all__ = [
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
    "soft_format_reward",
    "strict_format_reward",
    "sudoku_accuracy",
    "sudoku_solved",
    "xml_count_reward",
]
