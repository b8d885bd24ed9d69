"""The `dipod` command line, and `python -m dipod_trl RECIPE` (what `accelerate launch -m dipod_trl ...` runs).

    dipod train RECIPE.yaml [--key value ...]    RL with DiPOD (also: python -m dipod_trl RECIPE.yaml ...)
    dipod sft RECIPE.yaml [--key value ...]      masked-diffusion SFT
    dipod eval --model DIR --task gsm8k [...]     accuracy on a test split, resumable
    dipod generate --model DIR --prompt TEXT      sample completions
    dipod merge ADAPTER_DIR OUTPUT_DIR           fold LoRA adapters into their base model, save the full model
    dipod demo [--seeds 0 1 2 ...]               the offline demo on the built-in tiny model
    dipod control RECIPE.yaml [--key value ...]  flow-matching policies on gymnasium (needs the `control` extra)

Recipe keys map one to one onto the fields of TRL's `ModelConfig` (model, LoRA), `TaskArguments` (data, rewards) and
`DiPODConfig` / `MaskedSFTConfig` (training); every command prints its fields with `--help`.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

from .output_dir import OutputArguments
from .recipe import parse_recipe

COMMANDS = ("train", "sft", "eval", "generate", "merge", "demo", "control")


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
            "help": "Reward functions by name in `reward_models` (weights: `reward_weights`), or `judge` for an LLM "
            "judge served with `vllm serve` (see judge_base_url). Default: the task's d1 reward mix with d1's weights."
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


def _limit(dataset, n):
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


def load_datasets(task_args: TaskArguments):
    """The train (and eval) datasets of a recipe."""
    from .tasks import load_source, load_task

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


def resolve_rewards(task_args: TaskArguments, reward_weights, reward_nan_policy: str = "error"):
    """`(reward_funcs, reward_weights)`: the named functions, or the task's default mix.

    A judge reply without a score stops the run showing the reply, unless `reward_nan_policy` is 'skip' (then it is no
    reward, like a None from any other function)."""
    import reward_models

    from .tasks import get_task

    if task_args.reward_funcs:
        funcs = []
        for name in task_args.reward_funcs:
            if name == "judge":
                funcs.append(_judge(task_args, "default" if reward_nan_policy == "skip" else "raise"))
            elif callable(getattr(reward_models, name, None)):
                funcs.append(getattr(reward_models, name))
            else:
                raise ValueError(f"reward_funcs: {name!r} is neither 'judge' nor a function of reward_models.")
        return funcs, reward_weights
    if task_args.task is not None:
        funcs, weights = get_task(task_args.task).rewards()
        return funcs, reward_weights if reward_weights is not None else weights
    raise ValueError("reward_funcs: name the reward functions when training on a dataset_source without a task.")


def _judge(task_args: TaskArguments, on_unparsable: str = "raise"):
    from reward_models import JudgeReward

    base_url = task_args.judge_base_url or os.environ.get("DIPOD_JUDGE_URL")
    if not base_url or not task_args.judge_model:
        raise ValueError("reward_funcs: the `judge` reward needs judge_base_url (or $DIPOD_JUDGE_URL) and judge_model.")
    api_key = task_args.judge_api_key or os.environ.get("DIPOD_JUDGE_API_KEY")  # None: JudgeReward reads OPENAI_API_KEY
    return JudgeReward(base_url, task_args.judge_model, on_unparsable=on_unparsable, api_key=api_key,
                       timeout=task_args.judge_timeout)


def load_model_and_tokenizer(model_args, trust_remote_code: bool):
    """The model and tokenizer of a recipe. `model_name_or_path: tiny` builds the built-in tiny model, untrained."""
    import torch

    from .checkpoints import check_model_source, explain_load_failure
    from .models import build_tiny_model, build_tiny_tokenizer, load_diffusion_model
    from .models.loading import is_adapter_checkpoint, load_tokenizer, quantization_kwargs

    name = model_args.model_name_or_path
    if name is None:
        raise ValueError("model_name_or_path: the recipe names no model.")
    quantization = quantization_kwargs(model_args)
    if name == "tiny":
        if quantization:
            raise ValueError("load_in_4bit/load_in_8bit: the built-in tiny model is built in memory, not loaded; "
                             "quantise a saved checkpoint instead.")
        tokenizer = build_tiny_tokenizer()
        return build_tiny_model(tokenizer), tokenizer
    check_model_source(name)
    if model_args.use_peft and is_adapter_checkpoint(name, model_args.model_revision):
        raise ValueError(f"use_peft: {name} already holds LoRA adapters, which train on as they are; use_peft would "
                         "stack new ones on top. Remove use_peft, or merge first with `dipod merge`.")
    kwargs = {"revision": model_args.model_revision}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    kwargs.update(quantization)
    try:
        model = load_diffusion_model(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as error:
        raise explain_load_failure(name, error) from error
    if model_args.load_in_4bit:
        from .models.quantization import keep_4bit_layers_differentiable

        keep_4bit_layers_differentiable(model)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code, padding_side="left")
    return model, tokenizer


def diffusion_peft_config(model_args):
    """TRL's LoRA config from the recipe's `use_peft`/`lora_*` keys, fitted to a masked diffusion LM.

    TRL's `lora_task_type` defaults to CAUSAL_LM, whose PEFT wrapper needs the generation hooks of a causal LM; a
    diffusion LM gets the plain `PeftModel` (no task type). Without `lora_target_modules`, every linear layer but the
    output head gets an adapter (PEFT knows no default modules for these architectures).
    """
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is None:
        return None
    if config.task_type == "CAUSAL_LM":
        config.task_type = None
    if config.target_modules is None and not config.target_parameters:
        config.target_modules = "all-linear"
    return config


def _finish_distributed() -> None:
    """Leave the process group before the interpreter exits: without it a gloo rank can abort at shutdown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def claimed_output_dir(config, output_args):
    """The checkpoint `config.resume_from_checkpoint` means (`true`: the last one in output_dir), while this run holds
    output_dir: refused when it holds an earlier run's files and the run neither resumes nor overwrites."""
    from .checkpoints import resolve_resume
    from .output_dir import claim_output_dir

    checkpoint = resolve_resume(config.resume_from_checkpoint, config.output_dir)
    with claim_output_dir(config.output_dir, checkpoint is not None, output_args.overwrite_output_dir,
                          main_process=config.process_index == 0):
        yield checkpoint


def _run_recipe(argv: list[str], config_class, run):
    """Parse a training recipe, hold its output directory while `run(model_args, task_args, config, checkpoint)`
    trains, then leave the process group; returns the trainer."""
    from trl import ModelConfig

    model_args, task_args, config, output_args = parse_recipe(
        [ModelConfig, TaskArguments, config_class, OutputArguments], argv
    )
    with claimed_output_dir(config, output_args) as checkpoint:
        trainer = run(model_args, task_args, config, checkpoint)
    _finish_distributed()
    return trainer


def train(argv: list[str]):
    """RL with DiPOD from a recipe; returns the trainer."""
    from .config import DiPODConfig

    return _run_recipe(argv, DiPODConfig, _train)


def _train(model_args, task_args, config, checkpoint):
    from .trainer import DiPODTrainer, check_train_dataset

    train_data, eval_data = load_datasets(task_args)
    check_train_dataset(train_data, config)  # before the model loads
    model, tokenizer = load_model_and_tokenizer(model_args, config.trust_remote_code)
    funcs, weights = resolve_rewards(task_args, config.reward_weights, config.reward_nan_policy)
    config.reward_weights = weights
    trainer = DiPODTrainer(
        model, funcs, args=config, train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer,
        peft_config=diffusion_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    return trainer


def sft(argv: list[str]):
    """Masked-diffusion SFT from a recipe; returns the trainer."""
    from .sft import MaskedSFTConfig

    return _run_recipe(argv, MaskedSFTConfig, _sft)


def _sft(model_args, task_args, config, checkpoint):
    from .sft import MaskedDiffusionSFTTrainer

    train_data, eval_data = load_datasets(task_args)
    if len(train_data) == 0:
        raise ValueError("the SFT dataset has no rows; check task, dataset_source, train_split and num_train_examples.")
    if "completion" not in train_data.column_names:
        from .tasks import TASKS

        with_targets = sorted(name for name, task in TASKS.items() if task.sft_completion is not None)
        if task_args.task not in with_targets:
            raise ValueError(
                f"the SFT data has no 'completion' column (columns: {train_data.column_names}); give a "
                f"dataset_source with prompt and completion columns, or a task among {with_targets}."
            )
        make = TASKS[task_args.task].sft_completion
        train_data = train_data.map(lambda row: {"completion": make(row)})
        eval_data = eval_data.map(lambda row: {"completion": make(row)}) if eval_data is not None else None
    model, tokenizer = load_model_and_tokenizer(model_args, trust_remote_code=False)
    peft_config = diffusion_peft_config(model_args)
    if peft_config is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if model_args.load_in_4bit or model_args.load_in_8bit:  # QLoRA: norms in float32, inputs that need grads
            model = prepare_model_for_kbit_training(model, config.gradient_checkpointing)
        model = get_peft_model(model, peft_config)
    trainer = MaskedDiffusionSFTTrainer(model, config, train_dataset=train_data, eval_dataset=eval_data,
                                        processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    return trainer


def load_for_inference(path: str, trust_remote_code: bool):
    """A checkpoint in eval mode (on the GPU when there is one) and its left-padding tokenizer."""
    import torch

    from .checkpoints import check_model_source, explain_load_failure
    from .models import load_diffusion_model
    from .models.loading import load_tokenizer

    check_model_source(path)
    try:
        model = load_diffusion_model(path, trust_remote_code=trust_remote_code).eval()
    except OSError as error:
        raise explain_load_failure(path, error) from error
    if torch.cuda.is_available():
        model = model.cuda()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, padding_side="left")
    return model, tokenizer


def evaluate(argv: list[str]) -> dict:
    """`dipod eval`: accuracy of a model (or a sweep of checkpoints) on a task's test split; prints the summaries."""
    from .evaluation import EvalArguments, run_evaluation

    (args,) = parse_recipe([EvalArguments], argv)
    if args.checkpoints:
        from .sweep import run_sweep

        return run_sweep(args, load_for_inference)
    return run_evaluation(args, load_for_inference)


@dataclass
class GenerateArguments:
    """Arguments of `dipod generate`."""

    model: str = field(metadata={"help": "Model directory or hub id."})
    prompt: list[str] = field(metadata={"help": "One or more prompts."})
    chat: bool = field(default=True, metadata={"help": "Wrap each prompt as a user message in the chat template."})
    gen_length: int = field(default=64, metadata={"help": "Completion length."})
    block_length: int = field(default=32, metadata={"help": "Semi-autoregressive block length."})
    steps: int = field(default=64, metadata={"help": "Denoising steps."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0: greedy)."})
    remasking: str = field(default="low_confidence", metadata={"help": "Remasking rule."})
    cfg_scale: float = field(default=0.0, metadata={"help": "Classifier-free guidance scale."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow hub models that ship modeling code."})

    def __post_init__(self):
        from .finite import check_finite_fields

        check_finite_fields(self)


def generate_command(argv: list[str]) -> list[str]:
    from .sampling import FastDecodingArguments, generate

    args, fast = parse_recipe([GenerateArguments, FastDecodingArguments], argv)
    model, tokenizer = load_for_inference(args.model, args.trust_remote_code)
    if args.chat:
        batch = tokenizer.apply_chat_template([[{"role": "user", "content": p}] for p in args.prompt],
                                              add_generation_prompt=True, return_dict=True, return_tensors="pt",
                                              padding=True)
    else:
        batch = tokenizer(args.prompt, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    ids, mask = generate(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), tokenizer=tokenizer,
                         gen_length=args.gen_length, block_length=args.block_length, steps=args.steps,
                         temperature=args.temperature, remasking=args.remasking, cfg_scale=args.cfg_scale,
                         **fast.as_kwargs())
    texts = tokenizer.batch_decode([i[m.bool()] for i, m in zip(ids, mask)], skip_special_tokens=True)
    for prompt, text in zip(args.prompt, texts):
        print(f">>> {prompt}\n{text}\n")
    return texts


def merge(argv: list[str]) -> str:
    """`dipod merge ADAPTER_DIR OUTPUT_DIR`: fold LoRA adapters into their base model; save the model and tokenizer."""
    import argparse
    import shutil
    import tempfile

    from .models.loading import merge_adapters

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

    (config,) = parse_recipe([DemoConfig], argv)
    return run_demo(config)


def control(argv: list[str]):
    from .control.cli import main as control_main

    return control_main(argv)


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return None
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        if command.endswith((".yaml", ".yml")) or command.startswith("--"):
            command, rest = "train", argv  # python -m dipod_trl RECIPE.yaml [...]
        else:
            raise SystemExit(f"dipod: unknown command {command!r}; expected one of {', '.join(COMMANDS)} or a recipe.")
    handler = {"train": train, "sft": sft, "eval": evaluate, "generate": generate_command, "merge": merge,
               "demo": demo, "control": control}[command]
    return handler(rest)


def console_script() -> None:
    """The `dipod` executable: like `main`, but returns nothing (a returned value would become the exit status)."""
    main()


if __name__ == "__main__":
    console_script()
