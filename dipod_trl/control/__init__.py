"""Continuous control: flow-matching policies trained with FPO / FPO++ and the DiPOD terms on gymnasium Box envs.

    from dipod_trl.control import FlowPolicyConfig, FlowPolicyTrainer, FlowPolicy, evaluate
    trainer = FlowPolicyTrainer(FlowPolicyConfig(env_id="Pendulum-v1", total_timesteps=100_000))
    trainer.train()
    policy = FlowPolicy.from_pretrained("outputs/control/policy")
    returns = evaluate(policy, num_episodes=10)   # deterministic: seeded episodes and seeded flow noise

From a recipe: `dipod control recipes/control/hopper.yaml [--key value ...]` (or
`python -m dipod_trl.commands.control`).
Needs the `control` extra (`pip install dipod-trl[control]`) for the MuJoCo environments.
"""

from .config import FlowPolicyConfig
from .evaluation import evaluate
from .loss import minibatch_loss
from .objectives import compute_gae, dipod_loss, fpo_loss, fpo_plus_plus_loss, trust_region_loss
from .policy import Critic, FlowPolicy, GaussianPolicy, ObservationNormalizedPolicy
from .trainer import FlowPolicyTrainer

__all__ = [
    "Critic",
    "FlowPolicy",
    "FlowPolicyConfig",
    "FlowPolicyTrainer",
    "GaussianPolicy",
    "ObservationNormalizedPolicy",
    "compute_gae",
    "dipod_loss",
    "evaluate",
    "fpo_loss",
    "fpo_plus_plus_loss",
    "minibatch_loss",
    "trust_region_loss",
]
