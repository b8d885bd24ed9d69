"""Settings changed on resume (docs/guide.md, "Resuming"): learning_rate is applied, every change is warned about and
recorded in dipod_run.json and the model card, a mid-cycle checkpoint refuses settings that change its buffered masks,
a checkpoint of another model size or of other control networks is refused naming the setting, and a run that would
train nothing is refused."""

import json
import os
import re
import shutil

import pytest

from dipod_trl.commands import cli
from dipod_trl.commands.control import main as control_main
from dipod_trl.saving.run_record import RUN_FILE
from tests.helpers.trainers import FAST, TINY
from tests.test_output_dir import CONTROL


def train(out, *extra):
    return cli.main(["train", TINY, "--output_dir", str(out), *FAST, *extra])


def logged(trainer, key):
    return {entry["step"]: entry[key] for entry in trainer.state.log_history if key in entry}


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """tiny.yaml for 2 steps (num_iterations 2: checkpoint-1 inside a generation cycle, checkpoint-2 at its end)."""
    out = tmp_path_factory.mktemp("two_steps")
    train(out, "--max_steps", "2")
    return out


@pytest.fixture
def run(two_steps, tmp_path):
    shutil.copytree(two_steps, tmp_path / "run")
    return tmp_path / "run"


def test_a_changed_learning_rate_is_applied_and_every_change_is_warned_and_recorded(run):
    with pytest.warns(UserWarning, match=r"resuming .*checkpoint-2 \(step 2\) with changed settings: objective fpo -> "
                      r"spg, dipod_beta 0.05 -> 0.5, learning_rate 0.0002 -> 0.005\. They apply from step 2 on"):
        resumed = train(run, "--max_steps", "3", "--resume_from_checkpoint", "true", "--learning_rate", "5e-3",
                        "--dipod_beta", "0.5", "--objective", "spg")
    assert logged(resumed, "learning_rate") == {1: 2e-4, 2: 2e-4, 3: 5e-3}  # the saved schedule held 2e-4
    assert resumed.optimizer.param_groups[0]["lr"] == 5e-3
    with open(run / RUN_FILE) as f:
        (entry,) = json.load(f)["changes"]
    assert entry["step"] == 2 and entry["changes"] == {"objective": ["fpo", "spg"], "dipod_beta": [0.05, 0.5],
                                                       "learning_rate": [0.0002, 0.005]}
    with open(run / "README.md") as f:
        card = f.read()
    assert ("Resumed at step 2 with changed settings: `objective` fpo -> spg, `dipod_beta` 0.05 -> 0.5, "
            "`learning_rate` 0.0002 -> 0.005") in card
    # Resumed again from the checkpoint saved with the new values: nothing changed, nothing more recorded.
    train(run, "--max_steps", "4", "--resume_from_checkpoint", "true", "--learning_rate", "5e-3", "--dipod_beta",
          "0.5", "--objective", "spg")
    with open(run / RUN_FILE) as f:
        assert len(json.load(f)["changes"]) == 1


@pytest.mark.parametrize("change, said", [
    (["--objective", "spg"], "objective fpo (this run: spg)"),
    (["--objective", "diffu_grpo"], "objective fpo (this run: diffu_grpo)"),
    (["--elbo_num_samples", "4"], "elbo_num_samples 2 (this run: 4)"),
])
def test_a_mid_cycle_resume_with_settings_that_change_the_buffered_masks_is_refused(run, change, said):
    with pytest.raises(ValueError, match=rf"checkpoint-1 was saved inside a generation cycle with "
                                         rf".*{re.escape(said)}.* drawn and split for the saving run's settings"):
        train(run, "--max_steps", "3", "--resume_from_checkpoint", str(run / "checkpoint-1"), *change)
    with open(run / RUN_FILE) as f:
        assert json.load(f)["changes"] == []  # refused: nothing changed, nothing recorded


def test_a_checkpoint_of_another_model_size_is_refused_naming_the_setting(run, tmp_path):
    from dipod_trl.models import build_tiny_model, build_tiny_tokenizer

    bigger = tmp_path / "bigger"  # the tiny model (width 64) twice as wide
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer, hidden_size=128).save_pretrained(bigger)
    tokenizer.save_pretrained(bigger)
    with pytest.raises(ValueError, match=rf"checkpoint {run / 'checkpoint-2'} holds a model with hidden_size 64 "
                                         r"\(this run's model: 128\)"):
        train(run, "--max_steps", "3", "--resume_from_checkpoint", "true", "--model_name_or_path", str(bigger))


@pytest.mark.parametrize("change, said", [
    (["--actor_hidden_sizes", "32", "32"], r"actor_hidden_sizes \[64, 64\] \(this run: \[32, 32\]\)"),
    (["--env_id", "MountainCarContinuous-v0"], r"env_id Pendulum-v1 \(this run: MountainCarContinuous-v0\)"),
    (["--loss_type", "ppo"], r"loss_type fpo\+\+ \(this run: ppo\) \(ppo trains a Gaussian policy"),
])
def test_a_control_resume_with_other_networks_is_refused_naming_the_setting(tmp_path, change, said):
    control_main([*CONTROL, "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=rf"checkpoint-1 was saved by a run with {said}.*do not fit"):
        control_main([*CONTROL, "--output_dir", str(tmp_path), "--total_timesteps", "128",
                      "--resume_from_checkpoint", "true", *change])


def test_a_control_resume_with_another_flow_loss_type_is_warned_and_recorded(tmp_path):
    control_main([*CONTROL, "--output_dir", str(tmp_path)])
    with pytest.warns(UserWarning, match=r"resuming .*checkpoint-1 \(update 1\) with changed settings: loss_type "
                                         r"fpo\+\+ -> fpo\."):
        control_main([*CONTROL, "--output_dir", str(tmp_path), "--total_timesteps", "128", "--resume_from_checkpoint",
                      "true", "--loss_type", "fpo"])
    with open(tmp_path / RUN_FILE) as f:
        assert json.load(f)["changes"][0]["changes"] == {"loss_type": ["fpo++", "fpo"]}


@pytest.mark.parametrize("setting, said", [
    (["--num_iterations", "0"], "num_iterations=0: each generation batch is trained on num_iterations times"),
    (["--max_steps", "0"], "max_steps=0 would train nothing"),
])
def test_a_run_that_would_train_nothing_is_refused(tmp_path, setting, said):
    with pytest.raises(ValueError, match=said):
        train(tmp_path, *setting)
    assert not os.path.exists(tmp_path / "model.safetensors")
