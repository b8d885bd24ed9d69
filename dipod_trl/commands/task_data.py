"""The data of a training recipe: which task or dataset, which splits and rows (`TaskArguments`), loaded as datasets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskArguments:
    """Which data to train on and how to score it."""

    task: str | None = field(
        default=None,
        metadata={"help": "Task: gsm8k, math500, countdown, sudoku or digit_sort (the demo's synthetic task)."},
    )
    dataset_source: str | None = field(
        default=None, metadata={"help": "Hub id or local file/directory; default: the task's own source."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Held-out split evaluated during training (with eval_strategy != 'no')."}
    )
    num_train_examples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    num_eval_examples: int | None = field(default=None, metadata={"help": "Use only the first N held-out rows."})
    prompt_style: str = field(
        default="project",
        metadata={"help": "Prompt layout: `project` (instructions in a system message), `d1` (d1's training prompts: "
                  "everything in the user message); `d1_eval`, d1's evaluation prompts, is for `dipod eval`. See "
                  "dipod_trl.tasks."},
    )
    few_shot: int = field(
        default=0, metadata={"help": "Worked examples put before each question (SPG's Sudoku runs use 3; tasks "
                             "without examples accept only 0)."}
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions (weights: `reward_weights`), each one of: a function of `reward_models`; "
            "`judge` for an LLM judge served with `vllm serve` (see judge_base_url); an import path "
            "(`my_rewards:f` or `my_rewards.f`, the working directory is importable); a sequence-classification "
            "reward model by local directory or hub id, as `trl grpo` takes them. Default: the task's d1 reward mix "
            "with d1's weights."
        },
    )
    judge_base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible server of the `judge` reward (default: $DIPOD_JUDGE_URL)."},
    )
    judge_model: str | None = field(default=None, metadata={"help": "Model name the judge server serves."})
    judge_api_key: str | None = field(
        default=None,
        metadata={"help": "API key of the judge server (vLLM's --api-key), sent as a bearer token; never saved or "
                  "shown. Default: $DIPOD_JUDGE_API_KEY (what recipes/slurm/launch.sh sets), else $OPENAI_API_KEY. "
                  "Prefer the environment to writing it in a recipe."},
    )
    judge_timeout: float = field(
        default=60.0,
        metadata={"help": "Seconds, wall clock, allowed for each judge request, retries included; then the request "
                  "fails (or scores no reward with reward_nan_policy='skip')."},
    )
    judge_max_reply_bytes: int = field(
        default=4 * 2**20,
        metadata={"help": "Longest judge reply read, in bytes (default 4 MiB; a score takes a few hundred): a longer "
                  "one is cut off as it streams in and stops the run, so a wrong or hostile server cannot fill the "
                  "memory."},
    )


def _limit(dataset, n):
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


def load_datasets(task_args: TaskArguments):
    """The train (and eval) datasets of a recipe."""
    from ..tasks import load_source, load_task

    if task_args.task is not None:
        if task_args.prompt_style == "d1_eval":
            raise ValueError(
                "prompt_style: 'd1_eval' opens the answer with <reasoning> for `dipod eval`; TRL's trainer adds its "
                "own generation prompt after it. Train with 'd1' (d1's training prompts) or 'project'."
            )
        options = {"prompt_style": task_args.prompt_style, "few_shot": task_args.few_shot}
        train = load_task(task_args.task, task_args.dataset_source, task_args.train_split, **options)
        evaluation = (
            load_task(task_args.task, task_args.dataset_source, task_args.eval_split, **options)
            if task_args.eval_split else None
        )
    elif task_args.dataset_source is not None:
        train = load_source(task_args.dataset_source, task_args.train_split)
        evaluation = load_source(task_args.dataset_source, task_args.eval_split) if task_args.eval_split else None
    else:
        raise ValueError("task or dataset_source: a recipe needs a task name or a dataset to train on.")
    return _limit(train, task_args.num_train_examples), (
        _limit(evaluation, task_args.num_eval_examples) if evaluation is not None else None
    )


def sft_datasets(task_args: TaskArguments):
    """The train (and eval) datasets of an SFT recipe, with a `completion` column: the dataset's own, or the task's
    SFT target for each row."""
    from ..tasks import TASKS

    train_data, eval_data = load_datasets(task_args)
    if len(train_data) == 0:
        raise ValueError("the SFT dataset has no rows; check task, dataset_source, train_split and num_train_examples.")
    if "completion" not in train_data.column_names:
        with_targets = sorted(name for name, task in TASKS.items() if task.sft_completion is not None)
        if task_args.task not in with_targets:
            raise ValueError(
                f"the SFT data has no 'completion' column (columns: {train_data.column_names}); give a "
                f"dataset_source with prompt and completion columns, or a task among {with_targets}."
            )
        make = TASKS[task_args.task].sft_completion
        train_data = train_data.map(lambda row: {"completion": make(row)})
        eval_data = eval_data.map(lambda row: {"completion": make(row)}) if eval_data is not None else None
    return train_data, eval_data
