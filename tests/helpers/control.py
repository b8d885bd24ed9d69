"""Helpers shared by the control tests."""

from dipod_trl.control import FlowPolicyConfig


def tiny_config(tmp_path, **overrides) -> FlowPolicyConfig:
    """Two updates of 64 Pendulum steps: seconds, not minutes."""
    values = dict(
        env_id="Pendulum-v1",
        num_envs=2,
        num_steps=32,
        total_timesteps=128,
        num_minibatches=2,
        update_epochs=2,
        num_cfm_samples=4,
        actor_hidden_sizes=[16, 16],
        critic_hidden_sizes=[16],
        eval_every=1,
        eval_episodes=2,
        output_dir=str(tmp_path),
        torch_num_threads=1,
    )
    values.update(overrides)
    return FlowPolicyConfig(**values)
