"""`dipod control` checkpoints: complete or passed over, loaded without running code, resumed exactly.

As in tests/test_crash_safety.py, the kills are real SIGKILLs, sent by the training process to itself at the moment
its save starts writing a given file.
"""

import os
import shutil
import signal
import sys

import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import NormalizeReward

from dipod_trl.control import FlowPolicy, FlowPolicyTrainer
from dipod_trl.control.envs import find_wrapper
from dipod_trl.saving.checkpoints import COMPLETE_NAME, checkpoint_problem, mark_complete
from tests.helpers.control import tiny_config
from tests.helpers.exploits import craft
from tests.helpers.processes import forkserver, kill_when_saving

UPDATES = dict(save_every=1, total_timesteps=192, eval_every=0)  # three updates, a checkpoint after each


def train_and_die(output_dir: str, target: str, inside: bool) -> None:
    trainer = FlowPolicyTrainer(tiny_config(output_dir, **UPDATES))
    sys.setprofile(kill_when_saving("checkpoint-2", target, inside))
    trainer.train()


@pytest.fixture(scope="module")
def forked():
    return forkserver("tests.control.test_checkpoints")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """An uninterrupted three-update run, and a run resumed from its checkpoint-1: what any run resumed there gives
    (environments restart their episodes on resume, so it differs from the uninterrupted run)."""
    out = tmp_path_factory.mktemp("control")
    FlowPolicyTrainer(tiny_config(out, **UPDATES)).train()
    resumed = tmp_path_factory.mktemp("control_resumed")
    shutil.copytree(out / "checkpoint-1", resumed / "checkpoint-1")
    FlowPolicyTrainer(tiny_config(resumed, **UPDATES, resume_from_checkpoint="true")).train()
    return out, resumed


def _same_policy(a, b):
    one, two = FlowPolicy.from_pretrained(str(a)).state_dict(), FlowPolicy.from_pretrained(str(b)).state_dict()
    assert one.keys() == two.keys()
    for name, value in one.items():
        assert torch.equal(value, two[name]), name


MOMENTS = [
    pytest.param("model.safetensors", False, id="policy-config-only", marks=pytest.mark.slow),
    pytest.param("trainer_state.pt", False, id="policy-written", marks=pytest.mark.slow),
    pytest.param("trainer_state.pt", True, id="trainer_state.pt-open-empty"),
    pytest.param(COMPLETE_NAME, False, id="all-but-the-marker-written"),
]


@pytest.mark.parametrize("target, inside", MOMENTS)
def test_a_control_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(forked, saved_run, tmp_path,
                                                                                      target, inside):
    uninterrupted, resumed_at_1 = saved_run
    process = forked.Process(target=train_and_die, args=(str(tmp_path), target, inside))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == -signal.SIGKILL
    assert checkpoint_problem(str(tmp_path / "checkpoint-1")) is None
    assert "did not finish" in checkpoint_problem(str(tmp_path / "checkpoint-2"))
    _same_policy(tmp_path / "checkpoint-1" / "policy", uninterrupted / "checkpoint-1" / "policy")

    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-2: it has no checkpoint_compl"):
        trainer = FlowPolicyTrainer(tiny_config(tmp_path, **UPDATES, resume_from_checkpoint="true"))
    assert trainer.update == 1
    trainer.train()
    _same_policy(tmp_path / "policy", resumed_at_1 / "policy")
    assert checkpoint_problem(str(tmp_path / "checkpoint-2")) is None


def test_the_control_trainer_state_loads_weights_only_and_restores_every_generator(saved_run, tmp_path):
    uninterrupted, _ = saved_run
    state = torch.load(uninterrupted / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    assert isinstance(state["numpy_rng"]["keys"], torch.Tensor)
    np.random.seed(123)
    torch.manual_seed(123)
    trainer = FlowPolicyTrainer(tiny_config(tmp_path, **UPDATES,
                                            resume_from_checkpoint=str(uninterrupted / "checkpoint-2")))
    restored = np.random.get_state()
    assert restored[0] == state["numpy_rng"]["name"] and restored[2:] == (
        state["numpy_rng"]["position"], state["numpy_rng"]["has_gauss"], state["numpy_rng"]["cached_gaussian"])
    np.testing.assert_array_equal(restored[1], state["numpy_rng"]["keys"].numpy())
    assert torch.equal(torch.get_rng_state(), state["torch_rng"])
    rms = find_wrapper(trainer.envs, NormalizeReward).return_rms  # normalize_reward is on
    assert float(rms.var) == state["return_rms"]["var"].item() != 1.0
    assert float(rms.mean) == state["return_rms"]["mean"].item() and rms.count == state["return_rms"]["count"].item()


def test_a_control_checkpoint_that_would_run_code_is_refused(saved_run, tmp_path):
    uninterrupted, _ = saved_run
    checkpoint, witness = tmp_path / "checkpoint-1", tmp_path / "pwned"
    shutil.copytree(uninterrupted / "checkpoint-1", checkpoint)
    craft(checkpoint / "trainer_state.pt", witness)
    mark_complete(str(checkpoint))  # made to look whole
    with pytest.raises(ValueError, match=rf"refusing to load {checkpoint / 'trainer_state.pt'}: it holds Python obj"):
        FlowPolicyTrainer(tiny_config(tmp_path, **UPDATES, resume_from_checkpoint=str(checkpoint)))
    assert not witness.exists()
    assert not os.path.exists(os.path.join(os.getcwd(), "pwned"))
