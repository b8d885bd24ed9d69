"""FlowPolicy: Euler sampling, observation statistics, save / reload."""

import numpy as np
import torch

from dipod_trl.control import FlowPolicy


def test_sample_is_euler_integration_from_noise_to_action():
    torch.manual_seed(0)
    policy = FlowPolicy(3, 2, hidden_sizes=[16], flow_steps=4)
    with torch.no_grad():  # make the velocity field non-trivial
        policy.velocity_net[-1].weight.normal_(std=0.5)
    obs, noise = torch.randn(5, 3), torch.randn(5, 2)
    x = noise.clone()
    with torch.no_grad():
        for k in range(4):
            x = x + 0.25 * policy.velocity(obs, x, torch.full((5, 1), k / 4))
        torch.testing.assert_close(policy.sample(obs, noise), x)


def test_untrained_policy_acts_like_its_noise():
    """A near-zero initial velocity: the untrained policy's action distribution is its N(0, I) noise."""
    torch.manual_seed(0)
    policy = FlowPolicy(3, 2)
    noise = torch.randn(1000, 2)
    with torch.no_grad():
        actions = policy.sample(torch.randn(1000, 3), noise)
    assert (actions - noise).abs().max().item() < 0.1


def test_observation_statistics_match_numpy_over_all_batches():
    policy = FlowPolicy(4, 1)
    g = np.random.default_rng(0)
    batches = [g.normal(3.0, 2.0, size=(n, 4)) for n in (7, 13, 1, 30)]
    for batch in batches:
        policy.update_obs_stats(torch.tensor(batch))
    data = np.concatenate(batches)
    np.testing.assert_allclose(policy.obs_mean.numpy(), data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(policy.obs_var.numpy(), data.var(0), rtol=1e-4)
    normalized = policy.normalize(torch.tensor(data)).numpy()
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalized.std(0), 1.0, atol=1e-3)


def test_save_and_reload_gives_the_same_actions(tmp_path):
    torch.manual_seed(0)
    policy = FlowPolicy(3, 2, hidden_sizes=[8, 8], flow_steps=3, env_id="Pendulum-v1")
    policy.update_obs_stats(torch.randn(50, 3) * 4 + 1)
    policy.save_pretrained(str(tmp_path))
    reloaded = FlowPolicy.from_pretrained(str(tmp_path))
    assert reloaded.config == policy.config
    obs = np.random.default_rng(1).normal(size=(6, 3))
    np.testing.assert_array_equal(reloaded.act(obs), policy.act(obs))
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(reloaded.act(obs, generator=gen_a), policy.act(obs, generator=gen_b))
