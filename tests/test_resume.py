"""Resuming: from any checkpoint (inside a generation cycle too) to the uninterrupted run's parameters, and refusals of
checkpoints that cannot resume exactly."""

import os
import shutil

import pytest
import torch

from dipod_trl.saving.checkpoints import COMPLETE_NAME, mark_complete, resolve_resume
from tests.helpers.trainers import StopAt, make_trainer


def _interrupt_and_resume(tokenizer, tmp_path, stop, **common):
    interrupted = make_trainer(tokenizer, tmp_path / "interrupted", **common)
    interrupted.add_callback(StopAt(stop))
    interrupted.train()
    assert interrupted.state.global_step == stop
    resumed = make_trainer(tokenizer, tmp_path / "interrupted", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "run" / f"checkpoint-{stop}"))
    return resumed


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resuming_inside_a_generation_cycle_reproduces_the_uninterrupted_run(tokenizer, tmp_path, accumulation):
    """New completions every 2 (or 4) optimiser steps; the checkpoint at step 3 (or 1) falls inside a cycle."""
    stop = 3 if accumulation == 1 else 1
    common = dict(max_steps=4 if accumulation == 1 else 3, save_strategy="steps", save_steps=stop, num_iterations=2,
                  objective="fpo", beta=0.04, per_device_train_batch_size=8 // accumulation,
                  gradient_accumulation_steps=accumulation)
    full = make_trainer(tokenizer, tmp_path / "full", **common)
    full.train()
    resumed = _interrupt_and_resume(tokenizer, tmp_path, stop, **common)
    assert resumed.state.global_step == full.state.global_step
    # Exact: the resumed run computes the same numbers in the same order (float32, equality without tolerance).
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    rewards = lambda t: [h["reward"] for h in t.state.log_history if "reward" in h]  # noqa: E731
    assert rewards(resumed) == rewards(full)[-len(rewards(resumed)):]


def test_a_checkpoint_without_optimizer_state_is_refused(tokenizer, tmp_path):
    common = dict(max_steps=2, save_strategy="steps", save_steps=1)
    make_trainer(tokenizer, tmp_path, **common).train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    os.remove(checkpoint / "optimizer.pt")
    with pytest.raises(ValueError, match="checkpoint-1 is damaged: .*checkpoint-1/optimizer.pt is missing"):
        make_trainer(tokenizer, tmp_path, **common).train(resume_from_checkpoint=str(checkpoint))
    os.remove(checkpoint / COMPLETE_NAME)  # as written before completion markers: the files are checked one by one
    with pytest.warns(UserWarning, match="checkpoint-1 may be incomplete"), \
            pytest.raises(FileNotFoundError, match="checkpoint-1' has no optimizer.pt"):
        make_trainer(tokenizer, tmp_path, **common).train(resume_from_checkpoint=str(checkpoint))


def _complete(path):
    os.makedirs(path)
    (path / "config.json").write_text("{}")
    mark_complete(str(path))


def test_resume_true_means_the_last_complete_checkpoint_in_output_dir(tmp_path):
    for step in (2, 10, 4):
        _complete(tmp_path / f"checkpoint-{step}")
    os.makedirs(tmp_path / "checkpoint-12")  # cut short
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint .*checkpoint-12: it has no checkpoint_compl"):
        assert resolve_resume("true", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume(True, str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert resolve_resume("false", str(tmp_path)) is None and resolve_resume(None, str(tmp_path)) is None
    for step in (2, 10, 4, 12):
        shutil.rmtree(tmp_path / f"checkpoint-{step}")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint-N directory in output_dir"):
        resolve_resume("true", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        resolve_resume(str(tmp_path / "checkpoint-7"), str(tmp_path))


def test_resuming_from_a_checkpoint_with_a_truncated_weights_file_names_the_file(tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "checkpoint-3"
    os.makedirs(checkpoint)
    save_file({"weight": torch.ones(64)}, checkpoint / "model.safetensors")
    (checkpoint / "trainer_state.json").write_text("{}")
    data = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(data[:-100])  # a run killed while saving
    with pytest.warns(UserWarning, match="may be incomplete"), \
            pytest.raises(ValueError, match=f"{checkpoint / 'model.safetensors'} is not a readable safetensors file"):
        resolve_resume(str(checkpoint), str(tmp_path))
