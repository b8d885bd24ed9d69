"""The `dipod` command line, and `python -m dipod_trl RECIPE` (what `accelerate launch -m dipod_trl ...` runs).

    dipod train RECIPE.yaml [--key value ...]    RL with DiPOD (also: python -m dipod_trl RECIPE.yaml ...)
    dipod sft RECIPE.yaml [--key value ...]      masked-diffusion SFT
    dipod eval --model DIR --task gsm8k [...]     accuracy on a test split, resumable
    dipod generate --model DIR --prompt TEXT      sample completions
    dipod merge ADAPTER_DIR OUTPUT_DIR           fold LoRA adapters into their base model, save the full model
    dipod demo [--seeds 0 1 2 ...]               the offline demo on the built-in tiny model
    dipod control RECIPE.yaml [--key value ...]  flow-matching policies on gymnasium (needs the `control` extra)
    dipod --version                              the installed versions of dipod-trl, TRL, transformers and torch

Recipe keys map one to one onto the fields of TRL's `ModelConfig` (model, LoRA), `TaskArguments` (data, rewards) and
`DiPODConfig` / `MaskedSFTConfig` (training); every command prints its fields with `--help`.

Only the chosen command imports what it needs (torch, transformers, TRL), so `dipod --help` answers at once.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager

from .output_dir import OutputArguments
from .recipe import parse_recipe
from .task_data import TaskArguments

COMMANDS = ("train", "sft", "eval", "generate", "merge", "demo", "control")
USAGE = {
    "train": "dipod train RECIPE.yaml [--key value ...]   (or: accelerate launch -m dipod_trl RECIPE.yaml ...)",
    "sft": "dipod sft RECIPE.yaml [--key value ...]",
    "eval": "dipod eval (--model DIR | --checkpoints DIR/checkpoint-*) --task TASK [--key value ...]",
    "generate": "dipod generate --model DIR --prompt TEXT [TEXT ...] [--key value ...]",
    "demo": "dipod demo [RECIPE.yaml] [--key value ...]",
}


def version() -> str:
    """The installed versions of dipod-trl and of what it builds on, read without importing them."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from .. import __version__

    def of(package):
        try:
            return installed(package)
        except PackageNotFoundError:
            return "not installed"

    return f"dipod-trl {__version__} (trl {of('trl')}, transformers {of('transformers')}, torch {of('torch')})"


def parse_command(command: str, dataclass_types, argv: list[str], help_order=None, refused=None):
    """`parse_recipe` for `dipod COMMAND`; with `-h`/`--help`, print the command's keys grouped (`help_order`: the
    order of the groups, the command's own keys first; `refused`: inherited keys the command refuses) and exit."""
    if "-h" in argv or "--help" in argv:
        from .recipe_help import recipe_help_parser

        recipe_help_parser(f"dipod {command}", USAGE[command], help_order or dataclass_types, refused).print_help()
        raise SystemExit(0)
    return parse_recipe(dataclass_types, argv)


def _finish_distributed() -> None:
    """Leave the process group before the interpreter exits: without it a gloo rank can abort at shutdown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def claimed_output_dir(config, output_args):
    """The checkpoint `config.resume_from_checkpoint` means (`true`: the last one in output_dir), while this run holds
    output_dir: refused when it holds an earlier run's files and the run neither resumes a checkpoint of it nor
    overwrites."""
    from ..saving.checkpoints import resolve_resume
    from .output_dir import claim_output_dir

    checkpoint = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    with claim_output_dir(config.output_dir, checkpoint, output_args.overwrite_output_dir,
                          main_process=config.process_index == 0):
        yield checkpoint


def _run_recipe(command: str, argv: list[str], config_class, run, refused=None):
    """Parse a training recipe, hold its output directory while `run(model_args, task_args, config, checkpoint)`
    trains, then leave the process group; returns the trainer."""
    from trl import ModelConfig

    model_args, task_args, config, output_args = parse_command(
        command, [ModelConfig, TaskArguments, config_class, OutputArguments], argv,
        help_order=[config_class, TaskArguments, ModelConfig, OutputArguments], refused=refused,
    )
    with claimed_output_dir(config, output_args) as checkpoint:
        trainer = run(model_args, task_args, config, checkpoint)
    _finish_distributed()
    return trainer


def train(argv: list[str]):
    """RL with DiPOD from a recipe; returns the trainer."""
    from ..config import REFUSED_GRPO_OPTIONS, DiPODConfig

    return _run_recipe("train", argv, DiPODConfig, _train, refused=REFUSED_GRPO_OPTIONS)


def _train(model_args, task_args, config, checkpoint):
    from ..guards.trainer_inputs import check_train_dataset
    from ..trainer import DiPODTrainer
    from .lora import diffusion_peft_config
    from .model_setup import load_model_and_tokenizer
    from .reward_resolution import resolve_rewards
    from .task_data import load_datasets

    train_data, eval_data = load_datasets(task_args)
    check_train_dataset(train_data, config)  # before the model loads
    model, tokenizer = load_model_and_tokenizer(model_args, config.trust_remote_code)
    funcs, weights = resolve_rewards(task_args, config.reward_weights, config.reward_nan_policy)
    config.reward_weights = weights
    trainer = DiPODTrainer(
        model, funcs, args=config, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer,
        peft_config=diffusion_peft_config(model_args, model),
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    return trainer


def sft(argv: list[str]):
    """Masked-diffusion SFT from a recipe; returns the trainer."""
    from ..sft import MaskedSFTConfig

    return _run_recipe("sft", argv, MaskedSFTConfig, _sft)


def _sft(model_args, task_args, config, checkpoint):
    from ..sft import MaskedDiffusionSFTTrainer
    from .lora import with_lora_adapters
    from .model_setup import load_model_and_tokenizer
    from .task_data import sft_datasets

    train_data, eval_data = sft_datasets(task_args)
    model, tokenizer = load_model_and_tokenizer(model_args, trust_remote_code=False)
    model = with_lora_adapters(model, model_args, bool(config.activation_checkpointing))
    trainer = MaskedDiffusionSFTTrainer(model, config, train_dataset=train_data, eval_dataset=eval_data,
                                        processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    return trainer


def evaluate(argv: list[str]) -> dict:
    """`dipod eval`: accuracy of a model (or a sweep of checkpoints) on a task's test split; prints the summaries."""
    from .eval_arguments import EvalArguments
    from .model_setup import check_dtype, load_for_inference

    (args,) = parse_command("eval", [EvalArguments], argv)
    check_dtype(args.dtype)
    load = functools.partial(load_for_inference, dtype=args.dtype)
    if args.checkpoints:
        from ..evaluation.sweep import run_sweep

        return run_sweep(args, load)
    from ..evaluation.one_model import run_evaluation

    return run_evaluation(args, load)


def generate_command(argv: list[str]) -> list[str]:
    """`dipod generate`: print completions of the prompts (`commands.generate`, imported here: it needs torch)."""
    from ..options import FastDecodingArguments
    from .generate import GenerateArguments, print_completions

    args, fast = parse_command("generate", [GenerateArguments, FastDecodingArguments], argv)
    return print_completions(args, fast)


def merge(argv: list[str]) -> str:
    """`dipod merge ADAPTER_DIR OUTPUT_DIR`: fold LoRA adapters into their base model; save the model and tokenizer."""
    import argparse
    import shutil
    import tempfile

    from ..models.loading import merge_adapters

    parser = argparse.ArgumentParser(prog="dipod merge", description=merge.__doc__)
    parser.add_argument("adapter_dir", help="Directory (or hub id) holding adapter_config.json and the adapters.")
    parser.add_argument("output_dir", help="Where the merged model and its tokenizer are written (a new or empty "
                        "directory).")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty output_dir: its old files are "
                        "deleted once the merged model is written.")
    parser.add_argument("--trust_remote_code", action="store_true", help="Allow a base model that ships code.")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.rstrip(os.sep) or os.sep
    if not _check_merge_output(args.adapter_dir, output_dir, args.overwrite):
        merge_adapters(args.adapter_dir, output_dir, trust_remote_code=args.trust_remote_code)
    else:  # merge beside it, then swap: the old folder stays whole if the merge fails, and no old file is left over
        parent = os.path.dirname(os.path.abspath(output_dir))
        staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.merging-")
        try:
            merge_adapters(args.adapter_dir, staging, trust_remote_code=args.trust_remote_code)
            shutil.copymode(output_dir, staging)  # the folder's permissions, not mkdtemp's 0700
            old = staging + ".old"
            os.replace(output_dir, old)
            os.replace(staging, output_dir)
            shutil.rmtree(old)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"merged {args.adapter_dir} -> {output_dir}")
    return output_dir


def _check_merge_output(adapter_dir: str, output_dir: str, overwrite: bool) -> bool:
    """Whether `output_dir` holds files to replace; refuses what would mix or lose files."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"output_dir {output_dir!r} is a file; choose a directory for the merged model.")
    existing = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if not existing:
        return False
    adapters, output = os.path.realpath(adapter_dir), os.path.realpath(output_dir)
    if os.path.isdir(adapter_dir) and (adapters + os.sep).startswith(output + os.sep):
        where = "is the adapter directory" if adapters == output else f"holds the adapter directory {adapter_dir!r}"
        raise ValueError(f"output_dir {output_dir!r} {where}: merging into it would mix the merged model with "
                         "the adapters (or delete them). Choose another output_dir.")
    if not overwrite:
        shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise FileExistsError(f"output_dir {output_dir!r} is not empty ({shown}). Choose a new or empty directory, "
                              "or pass --overwrite to replace its contents with the merged model.")
    return True


def demo(argv: list[str]) -> dict:
    from .demo import DemoConfig, run_demo

    (config,) = parse_command("demo", [DemoConfig], argv)
    return run_demo(config)


def control(argv: list[str]):
    from .control import main as control_main

    return control_main(argv)


def command_and_arguments(argv: list[str]) -> tuple[str, list[str]]:
    """The command `argv` names and its arguments. A bare recipe (`accelerate launch -m dipod_trl recipes/gsm8k.yaml`)
    or a bare `--key value` means `train`."""
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return command, rest
    if command.endswith((".yaml", ".yml")) or command.startswith("--"):
        return "train", list(argv)
    raise SystemExit(f"dipod: unknown command {command!r}; expected one of {', '.join(COMMANDS)} or a recipe.")


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    if argv[0] in ("-V", "--version"):
        print(version())
        return None
    command, rest = command_and_arguments(argv)
    handler = {"train": train, "sft": sft, "eval": evaluate, "generate": generate_command, "merge": merge,
               "demo": demo, "control": control}[command]
    return handler(rest)


def console_script() -> None:
    """The `dipod` executable: like `main`, but returns nothing (a returned value would become the exit status)."""
    main()


if __name__ == "__main__":
    console_script()
