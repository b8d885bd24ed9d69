"""A control run on an environment that returns NaN (or a policy that acts NaN) stops with an error naming the update,
the step and the quantity, before the NaN reaches the observation statistics, the weights or a saved policy."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dipod_trl.control import FlowPolicyTrainer
from dipod_trl.guards.non_finite import NonFiniteError
from tests.helpers.control import tiny_config


class InjectNaN(gym.Wrapper):
    """Pendulum that returns NaN in `field` ('reward' or 'observation') at its `at_step`-th step."""

    def __init__(self, env, field: str, at_step: int):
        super().__init__(env)
        self.field, self.at_step, self.steps = field, at_step, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps == self.at_step:
            if self.field == "reward":
                reward = float("nan")
            else:
                obs = obs.copy()
                obs[1] = np.nan
        return obs, reward, terminated, truncated, info


for _field in ("reward", "observation"):
    gym.register(f"NaN{_field.title()}Pendulum-v0",
                 entry_point=lambda field=_field, **kw: InjectNaN(gym.make("Pendulum-v1", **kw), field, at_step=40))


@pytest.mark.parametrize(
    "field, message",
    [
        # Step call 40 of each env is rollout step 7 of update 2 (32 steps per update): 64 + 7 * 2 env steps.
        ("reward", r"update 2, rollout step 7 \(env step 78\): the reward \(one per env\) has 2 non-finite value\(s\) "
                   r"of 2, the first nan at index 0"),
        # Its observation is what the policy sees at the next step.
        ("observation", r"update 2, rollout step 8 \(env step 80\): the observation \(envs x dims\) has 2 "
                        r"non-finite value\(s\) of 6, the first nan at index \(0, 1\)"),
    ],
)
def test_nan_from_the_environment_stops_the_run_and_keeps_the_last_checkpoint_finite(tmp_path, field, message):
    trainer = FlowPolicyTrainer(tiny_config(tmp_path, env_id=f"NaN{field.title()}Pendulum-v0", save_every=1,
                                            eval_every=0))
    with pytest.raises(NonFiniteError, match=message):
        trainer.train()
    assert trainer.update == 1  # the second update never happened
    assert os.path.isdir(tmp_path / "checkpoint-1")
    assert not os.path.exists(tmp_path / "checkpoint-2") and not os.path.exists(tmp_path / "policy")  # nothing saved
    weights = load_file(str(tmp_path / "checkpoint-1" / "policy" / "model.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    # The policy's running observation statistics never saw the NaN observation.
    assert all(torch.isfinite(b).all() for b in trainer.policy.buffers())


def test_a_policy_that_acts_nan_stops_at_its_first_action(tmp_path):
    trainer = FlowPolicyTrainer(tiny_config(tmp_path, eval_every=0))
    with torch.no_grad():
        trainer.policy.velocity_net[-1].bias.fill_(float("inf"))  # as weights overflowed by a diverged update
    with pytest.raises(NonFiniteError, match=r"update 1, rollout step 0 \(env step 0\): the policy's action "
                                             r"\(envs x dims\) has 2 non-finite value\(s\) of 2"):
        trainer.train()
