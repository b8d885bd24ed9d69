"""Arguments of `dipod eval`: one model or a checkpoint sweep, the sampler settings, the scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..guards.non_finite import check_finite_fields
from ..options import FastDecodingArguments, SamplerArguments
from ..tasks import PROMPT_STYLES
from .model_setup import DTYPE_HELP

SCORINGS = ("both", "d1", "project")


@dataclass
class EvalArguments(SamplerArguments, FastDecodingArguments):
    """Arguments of `dipod eval`: one model (`--model`) or a checkpoint sweep (`--checkpoints`)."""

    task: str = field(metadata={"help": "Task to evaluate: gsm8k, math500, countdown, sudoku or digit_sort."})
    model: str | None = field(
        default=None, metadata={"help": "Model directory or hub id (LLaDA and Dream load without remote code)."}
    )
    checkpoints: list[str] | None = field(
        default=None,
        metadata={"help": "Checkpoint directories to sweep (e.g. DIR/checkpoint-*, globs are expanded): each is "
                  "evaluated at every --gen_length; writes d1's JSON files, a summary table and a plot."},
    )
    dataset_source: str | None = field(default=None, metadata={"help": "Hub id or local file; default: the task's."})
    split: str = field(default="test", metadata={"help": "Dataset split to evaluate."})
    num_examples: int | None = field(default=None, metadata={"help": "Evaluate only the first N examples."})
    scoring: str = field(
        default="both",
        metadata={"help": "`project` (the project's strict rules), `d1` (d1's evaluation parser, as the published "
                  "tables) or `both`."},
    )
    prompt_style: str | None = field(
        default=None,
        metadata={"help": f"Prompt layout, one of {PROMPT_STYLES}. Default: d1's evaluation prompts (`d1_eval`) when "
                  "d1 scoring is asked for and the task has it, else `project`."},
    )
    few_shot: int = field(default=0, metadata={"help": "Worked examples before each question (Sudoku: up to 3)."})
    d1_subset: bool = field(
        default=False,
        metadata={"help": "Evaluate the examples d1's evaluation draws: 256 rows of the Countdown and Sudoku test "
                  "files (NumPy's seed 42, as d1's `subsample`; give d1's files as --dataset_source), all of GSM8K "
                  "and MATH-500."},
    )
    gen_length: list[int] = field(
        default_factory=lambda: [256], metadata={"help": "Completion length(s), the generation canvas."}
    )
    steps: int | None = field(
        default=None, metadata={"help": "Denoising steps per completion; default: gen_length / 2 (d1's evaluation)."}
    )
    num_generations: int = field(default=1, metadata={"help": "Generations per question (accuracy averages them)."})
    batch_size: int = field(default=16, metadata={"help": "Questions generated per batch (per process)."})
    output: str | None = field(
        default=None,
        metadata={"help": "JSON-lines file of records (one model). Default: <model dir>/eval/<task>_<split>_<setup>"
                  ".jsonl, or ./eval/<hub id>/... for a hub model; <setup> is a hash of the settings."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of a sweep's results; default: <checkpoints' folder>/eval_<task>."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampler's generators (matters when temperature > 0)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship modeling code."})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})

    def __post_init__(self):
        check_finite_fields(self)
        self.check_sampler()
        self.check_fast_decoding()
        if isinstance(self.gen_length, int):
            self.gen_length = [self.gen_length]
        for name in ("batch_size", "num_generations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}; e.g. --{name} 1.")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}; or leave it out for gen_length / 2.")
        if not self.gen_length or min(self.gen_length) < 1:
            raise ValueError(f"gen_length must be one or more positive lengths, got {self.gen_length}.")
        if self.num_examples is not None and self.num_examples < 1:
            raise ValueError(f"num_examples must be at least 1, got {self.num_examples}; leave it out for all.")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {self.scoring!r}.")
        if (self.model is None) == (not self.checkpoints):
            raise ValueError("give either --model (one model) or --checkpoints (a sweep), not both or neither.")
        if self.checkpoints and self.output is not None:
            raise ValueError("--output names one model's records file; a sweep writes under --output_dir.")
        if self.model is not None and self.output_dir is not None:
            raise ValueError("--output_dir is the folder of a --checkpoints sweep; for one model use --output FILE.")
        if self.model is not None and len(self.gen_length) > 1 and self.output is not None:
            raise ValueError("--output names one file; with several --gen_length leave it out (one file per length).")

    def steps_for(self, gen_length: int) -> int:
        return self.steps if self.steps is not None else max(gen_length // 2, 1)

