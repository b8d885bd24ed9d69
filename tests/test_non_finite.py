"""Non-finite numbers: NaN/inf config values are refused when the config is built, and a run whose loss or gradient
norm goes non-finite stops with an error naming the step and the quantity, before it steps the optimizer or saves,
with a non-zero exit code from `dipod train` and the last checkpoint left as it was; so does an optimizer step that
overflows the weights, before they are saved."""

import hashlib
import math
import os
import subprocess
import sys

import pytest
import torch

from dipod_trl import DiPODConfig
from dipod_trl.commands import cli
from dipod_trl.commands.demo import DemoConfig
from dipod_trl.commands.eval_arguments import EvalArguments
from dipod_trl.commands.generate import GenerateArguments
from dipod_trl.control import FlowPolicyConfig
from dipod_trl.guards.non_finite import NonFiniteError
from tests.helpers.trainers import FAST, TINY, make_trainer

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "build, name, value",
    [
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "dipod_beta", NAN),
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "dipod_beta", INF),
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "beta", NAN),
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "temperature", NAN),
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "learning_rate", -INF),
        (lambda **kw: DiPODConfig(output_dir="/tmp/unused", **kw), "reward_weights", [1.0, NAN]),
        (lambda **kw: FlowPolicyConfig(**kw), "dipod_beta", INF),
        (lambda **kw: FlowPolicyConfig(**kw), "vf_coef", NAN),
        (lambda **kw: EvalArguments(task="digit_sort", model="m", **kw), "temperature", NAN),
        (lambda **kw: GenerateArguments(model="m", prompt=["p"], **kw), "cfg_scale", INF),
        (lambda **kw: DemoConfig(**kw), "dipod_beta", NAN),
    ],
)
def test_non_finite_config_values_are_refused_naming_the_field(build, name, value):
    with pytest.raises(ValueError, match=rf"{name}=\[?.*(nan|inf).*: must be finite"):
        build(**{name: value})


def test_nan_from_the_command_line_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"DiPODConfig: dipod_beta=nan: must be finite"):
        cli.main(["train", TINY, "--output_dir", str(tmp_path), *FAST, "--max_steps", "1", "--dipod_beta", "nan"])
    assert not os.path.exists(tmp_path / "checkpoint-1")


def file_hashes(folder) -> dict[str, str]:
    hashes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != ".dipod.lock":
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    hashes[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def test_a_run_whose_loss_goes_nan_exits_non_zero_and_leaves_the_last_checkpoint_untouched(tmp_path):
    # One Adam step at a learning rate of 1e20 moves the weights to ~1e20: finite (a resume accepts them), but step 2's
    # forward overflows. (At 1e38 some weights already overflow in step 1, and the resume refuses the checkpoint.)
    diverging = ["--learning_rate", "1e20", "--lr_scheduler_type", "constant"]
    first = cli.main(["train", TINY, "--output_dir", str(tmp_path), *FAST, *diverging, "--max_steps", "1"])
    assert math.isfinite(first.state.log_history[0]["loss"])
    before = file_hashes(tmp_path)
    assert "checkpoint-1/model.safetensors" in before and "model.safetensors" in before

    dipod = os.path.join(os.path.dirname(sys.executable), "dipod")
    result = subprocess.run(
        [dipod, "train", TINY, "--output_dir", str(tmp_path), *FAST, *diverging, "--max_steps", "3",
         "--resume_from_checkpoint", "true"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode != 0
    assert "NonFiniteError: step 2: the training loss is nan" in result.stderr, result.stderr[-3000:]
    assert file_hashes(tmp_path) == before  # no checkpoint-2, no final model over the good one


def test_a_non_finite_gradient_norm_stops_before_the_optimizer_step(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer, tmp_path, max_steps=1)
    start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    # The loss stays finite; only the gradient reaching this weight overflows (as a float16 gradient can).
    weight = trainer.model.get_input_embeddings().weight
    weight.register_hook(lambda grad: torch.full_like(grad, INF))
    with pytest.raises(NonFiniteError, match=r"step 1: the gradient norm is (inf|nan)\. The run stops here"):
        trainer.train()
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, start[name]), name  # the optimizer never stepped


def test_an_optimizer_step_that_overflows_the_weights_is_not_saved_and_the_run_resumes_from_the_last_good_one(
        tmp_path):
    # The loss and gradients stay finite; Adam's step at 1e38 (about lr per weight) overflows some float32 weights.
    run = ["train", TINY, "--output_dir", str(tmp_path), *FAST, "--lr_scheduler_type", "constant"]
    cli.main([*run, "--learning_rate", "1e-3", "--max_steps", "1"])
    before = file_hashes(tmp_path)
    before.pop("dipod_run.json")  # the run's record: it notes the resume and its changed learning rate
    with pytest.raises(NonFiniteError, match=r"step 2: the weight \S+ holds NaN or infinite values after the "
                                             r"optimizer step\. The run stops here, before they are saved"):
        cli.main([*run, "--learning_rate", "1e38", "--max_steps", "2", "--resume_from_checkpoint", "true"])
    after = file_hashes(tmp_path)
    after.pop("dipod_run.json")
    assert after == before  # no checkpoint-2, no final model over the good one
    resumed = cli.main([*run, "--learning_rate", "1e-3", "--max_steps", "2", "--resume_from_checkpoint", "true"])
    assert resumed.state.global_step == 2
    assert all(bool(torch.isfinite(p).all()) for p in resumed.model.parameters())


def test_sft_refuses_to_save_overflowed_weights_too(tmp_path):
    sft = ["sft", os.path.join(os.path.dirname(TINY), "tiny_sft.yaml"), "--output_dir", str(tmp_path),
           "--save_strategy", "steps", "--save_steps", "1", "--disable_tqdm", "true", "--max_steps", "1",
           "--learning_rate", "1e38", "--lr_scheduler_type", "constant", "--warmup_steps", "0"]
    with pytest.raises(NonFiniteError, match=r"step 1: the weight \S+ holds NaN or infinite values"):
        cli.main(sft)
    assert not os.path.exists(tmp_path / "checkpoint-1") and not os.path.exists(tmp_path / "model.safetensors")
