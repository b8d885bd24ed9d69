"""A resume never mixes two runs: another folder's checkpoint is not resumed over a run already there (a new or empty
folder is a fork, recorded), rotation deletes only the run's own complete checkpoints by step, an overwritten run's
checkpoints and a checkpoint copied in from another run are never resumed as this run's. Each case runs `dipod train`
(or `dipod sft`) from the command line on the tiny recipe, as a user would."""

import json
import os
import shutil

import pytest

from dipod_trl.commands import cli
from dipod_trl.saving.run_record import RUN_FILE
from tests.helpers.trainers import FAST, ROOT, TINY

TINY_SFT = os.path.join(ROOT, "recipes", "tiny_sft.yaml")


def train(out, *extra):
    return cli.main(["train", TINY, "--output_dir", str(out), *FAST, *extra])


def files_of(folder) -> dict:
    """Every file under `folder` with its bytes (what a refused run must leave untouched)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                found[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return found


def run_record(out) -> dict:
    with open(out / RUN_FILE) as f:
        return json.load(f)


def test_a_checkpoint_of_another_folder_is_not_resumed_over_a_run_and_a_fork_into_a_new_folder_is_recorded(tmp_path):
    victim, other, fork = tmp_path / "victim", tmp_path / "other", tmp_path / "fork"
    train(victim, "--max_steps", "2")
    train(other, "--max_steps", "2", "--seed", "1")
    before = files_of(victim)
    with pytest.raises(FileExistsError, match=rf"output_dir '{victim}' holds another run .* is a checkpoint of another "
                       rf"folder: .*over that run's. Resume it in its own run folder \(--output_dir {other}\), or "
                       "continue it in a new or empty output_dir"):
        train(victim, "--max_steps", "4", "--resume_from_checkpoint", str(other / "checkpoint-2"),
              "--dipod_beta", "0.5")
    assert files_of(victim) == before  # its checkpoints and final model untouched

    forked = train(fork, "--max_steps", "3", "--resume_from_checkpoint", str(other / "checkpoint-2"), "--seed", "1")
    assert forked.state.global_step == 3 and sorted(p for p in os.listdir(fork) if p.startswith("checkpoint")) == [
        "checkpoint-3"]
    record = run_record(fork)
    assert record["forked_from"] == {"checkpoint": str(other / "checkpoint-2"), "run_id": run_record(other)["run_id"]}
    assert record["run_id"] != run_record(other)["run_id"]
    with open(fork / "README.md") as f:
        assert f"Continued from the checkpoint `{other / 'checkpoint-2'}`" in f.read()


def test_rotation_deletes_only_the_runs_own_complete_checkpoints_oldest_step_first(tmp_path):
    train(tmp_path, "--max_steps", "2")
    shutil.copytree(tmp_path / "checkpoint-1", tmp_path / "checkpoint-best")  # complete, but not a checkpoint-N
    (tmp_path / "checkpoint-2-keep").mkdir()
    (tmp_path / "checkpoint-2-keep" / "NOTES.txt").write_text("keep me")
    os.utime(tmp_path / "checkpoint-1", (4e9, 4e9))  # the newest by modification time: step order must win
    train(tmp_path, "--max_steps", "4", "--resume_from_checkpoint", "true", "--save_total_limit", "2")
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("checkpoint")) == [
        "checkpoint-2-keep", "checkpoint-3", "checkpoint-4", "checkpoint-best"]
    assert (tmp_path / "checkpoint-2-keep" / "NOTES.txt").read_text() == "keep me"


def test_after_overwrite_output_dir_the_old_runs_checkpoints_are_never_resumed(tmp_path):
    train(tmp_path, "--max_steps", "3")
    train(tmp_path, "--max_steps", "1", "--overwrite_output_dir", "true")  # a new run: its own checkpoint-1
    with pytest.warns(UserWarning, match=rf"skipping checkpoint {tmp_path / 'checkpoint-3'}: it was saved by another "
                      "run .*overwrite_output_dir"):
        resumed = train(tmp_path, "--max_steps", "2", "--resume_from_checkpoint", "true")
    # From the old run's checkpoint-3 a 2-step budget would be spent already: the new run's checkpoint-1 was resumed.
    assert resumed.state.global_step == 2
    assert [entry["step"] for entry in resumed.state.log_history if "loss" in entry] == [1, 2]
    with pytest.raises(ValueError, match=rf"refusing to resume {tmp_path / 'checkpoint-3'}: it was saved by another"):
        train(tmp_path, "--max_steps", "4", "--resume_from_checkpoint", str(tmp_path / "checkpoint-3"))


def test_an_sft_checkpoint_copied_into_an_rl_run_never_lends_it_its_optimizer_or_learning_rate(tmp_path):
    rl, sft = tmp_path / "rl", tmp_path / "sft"
    train(rl, "--max_steps", "1")
    cli.main(["sft", TINY_SFT, "--output_dir", str(sft), "--max_steps", "1", "--save_strategy", "steps",
              "--save_steps", "1", "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--report_to",
              "none"])
    shutil.copytree(sft / "checkpoint-1", rl / "checkpoint-10")
    with pytest.warns(UserWarning, match=rf"skipping checkpoint {rl / 'checkpoint-10'}: it was saved by another run"):
        resumed = train(rl, "--max_steps", "2", "--resume_from_checkpoint", "true")
    assert resumed.state.global_step == 2
    # The RL recipe's learning rate, not the SFT checkpoint's 3e-3:
    assert [entry["learning_rate"] for entry in resumed.state.log_history if "loss" in entry] == [2e-4, 2e-4]
    with pytest.raises(ValueError, match=r"it was saved by MaskedDiffusionSFTTrainer, and this run is a "
                                         r"DiPODTrainer.*--model_name_or_path"):
        train(tmp_path / "fork", "--max_steps", "2", "--resume_from_checkpoint", str(sft / "checkpoint-1"))
