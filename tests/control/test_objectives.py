"""The control objectives against independent computations written here, element by element in plain Python."""

import math

import numpy as np
import pytest
import torch

from dipod_trl.control import FlowPolicy, FlowPolicyConfig, compute_gae, fpo_loss, fpo_plus_plus_loss, minibatch_loss
from dipod_trl.control.loss import draw_cfm_samples
from dipod_trl.control.objectives import dipod_loss, value_loss
from dipod_trl.control.policy import Critic, GaussianPolicy

B, N, A, OBS = 6, 5, 2, 3
CLIP = 0.2


def make_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    cfm_old = torch.rand(B, N, generator=g) * 4.0
    cfm_new = cfm_old + 0.3 * torch.randn(B, N, generator=g)
    advantages = torch.randn(B, generator=g)
    return cfm_old, cfm_new, advantages


def clip(x, lo, hi):
    return min(max(x, lo), hi)


def ppo_term(r, a):
    return max(-a * r, -a * clip(r, 1 - CLIP, 1 + CLIP))


def spo_term(r, a):
    return -(a * r - abs(a) * (r - 1) ** 2 / (2 * CLIP))


def surrogate(mode, r, a):
    if mode == "ppo":
        return ppo_term(r, a)
    if mode == "spo":
        return spo_term(r, a)
    return ppo_term(r, a) if a > 0 else spo_term(r, a)


@pytest.mark.parametrize("mode", ["ppo", "spo", "aspo"])
def test_fpo_loss_averages_cfm_losses_before_the_exponent(mode):
    cfm_old, cfm_new, adv = make_inputs(1)
    out = fpo_loss(cfm_old, cfm_new, adv, CLIP, mode)
    terms = []
    for i in range(B):
        mean_old = sum(cfm_old[i, j].item() for j in range(N)) / N
        mean_new = sum(cfm_new[i, j].item() for j in range(N)) / N
        terms.append(surrogate(mode, math.exp(mean_old - mean_new), adv[i].item()))
    assert out.loss.item() == pytest.approx(sum(terms) / B, rel=1e-5)
    assert out.ratio.shape == (B,)


@pytest.mark.parametrize("mode", ["ppo", "spo", "aspo"])
def test_fpo_plus_plus_loss_one_ratio_per_draw_with_clamps(mode):
    cfm_old, cfm_new, adv = make_inputs(2)
    adv[0], adv[1] = 1.5, -1.2
    # Make every clamp bite somewhere: an old loss above cfm_loss_clamp, a current loss above the negative-advantage
    # clamp (row 1 has A < 0), and log-ratios above log_ratio_clamp.
    cfm_old[0, 0], cfm_new[0, 0] = 30.0, 2.0  # old clamped to 20 -> log-ratio 18 -> clamped to 10
    cfm_old[1, 1], cfm_new[1, 1] = 19.0, 16.0  # A < 0: current clamped to 12 -> log-ratio 7 -> clamped to 5
    cfm_old[1, 2], cfm_new[1, 2] = 3.0, 2.9
    log_ratio_clamp, neg_adv_clamp, loss_clamp = 5.0, 12.0, 20.0
    out = fpo_plus_plus_loss(
        cfm_old, cfm_new, adv, CLIP, mode,
        log_ratio_clamp=log_ratio_clamp, neg_adv_cfm_clamp=neg_adv_clamp, cfm_loss_clamp=loss_clamp,
    )
    terms = []
    for i in range(B):
        a = adv[i].item()
        for j in range(N):
            old = min(cfm_old[i, j].item(), loss_clamp)
            new = min(cfm_new[i, j].item(), loss_clamp)
            if a < 0:
                new = min(new, neg_adv_clamp)
            r = math.exp(min(old - new, log_ratio_clamp))
            terms.append(surrogate(mode, r, a))
    assert out.loss.item() == pytest.approx(sum(terms) / (B * N), rel=1e-5)
    assert out.ratio.shape == (B, N)
    assert out.ratio[0, 0].item() == pytest.approx(math.exp(5.0), rel=1e-6)


def test_fpo_plus_plus_log_ratio_clamp_is_straight_through():
    """Past the clamp the forward ratio is exp(clamp), but the gradient still flows as if unclamped."""
    cfm_old = torch.tensor([[15.0, 1.0]])
    cfm_new = torch.tensor([[2.0, 1.0]], requires_grad=True)
    adv = torch.tensor([-0.5])
    out = fpo_plus_plus_loss(cfm_old, cfm_new, adv, CLIP, "ppo", log_ratio_clamp=10.0, neg_adv_cfm_clamp=20.0)
    out.loss.backward()
    # A < 0, r = e^10 > 1 + clip: the PPO term is |A| * r (unclipped branch), d r / d L_new = -r, mean over 2 draws.
    expected = -0.5 * math.exp(10.0) / 2
    assert cfm_new.grad[0, 0].item() == pytest.approx(expected, rel=1e-5)
    # Draw 2 has ratio exactly 1 and A < 0: the PPO gradient is |A| * dr/dL = -0.5 * 1 / 2.
    assert cfm_new.grad[0, 1].item() == pytest.approx(-0.25, rel=1e-5)


def test_fpo_plus_plus_negative_advantage_clamp_stops_the_gradient():
    cfm_old = torch.tensor([[10.0], [10.0]])
    cfm_new = torch.tensor([[25.0], [25.0]], requires_grad=True)
    adv = torch.tensor([-1.0, 1.0])
    out = fpo_plus_plus_loss(cfm_old, cfm_new, adv, CLIP, "spo", neg_adv_cfm_clamp=20.0, cfm_loss_clamp=0.0)
    out.loss.backward()
    assert cfm_new.grad[0, 0].item() == 0.0  # clamped current loss of a bad action: nothing more to gain
    assert cfm_new.grad[1, 0].item() != 0.0


def manual_cfm_losses(policy, obs_norm, actions, t, eps):
    """Per-draw CFM losses computed draw by draw: x_t = t a + (1 - t) eps, target a - eps, squared error summed over
    action dims and divided by sqrt(A) ("sqrt"), A ("mean") or 1 ("sum")."""
    divisor = {"sqrt": math.sqrt(actions.shape[1]), "mean": actions.shape[1], "sum": 1.0}[policy.cfm_loss_reduction]
    out = torch.zeros(t.shape[0], t.shape[1])
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            tij = t[i, j, 0]
            x_t = tij * actions[i] + (1 - tij) * eps[i, j]
            k = torch.arange(policy.time_embed_dim // 2, dtype=torch.float32)
            angles = math.pi * (2.0**k) * tij
            features = torch.cat([obs_norm[i], x_t, torch.cos(angles), torch.sin(angles)])
            velocity = policy.velocity_net(features)
            target = actions[i] - eps[i, j]
            out[i, j] = sum(d.item() ** 2 for d in velocity - target) / divisor
    return out


def make_batch(policy, seed=0, action_dim=A):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "obs": torch.randn(B, OBS, generator=g),
        "actions": torch.randn(B, action_dim, generator=g),
        "cfm_t": torch.rand(B, N, 1, generator=g),
        "cfm_eps": torch.randn(B, N, action_dim, generator=g),
        "advantages": torch.randn(B, generator=g),
        "returns": torch.randn(B, generator=g),
    }
    with torch.no_grad():
        batch["cfm_old"] = policy.cfm_loss(batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
        batch["cfm_old"] += 0.2 * torch.rand(B, N, generator=g)  # as after a few gradient steps
    return batch


@pytest.mark.parametrize("reduction", ["sqrt", "mean", "sum"])
def test_policy_cfm_loss_matches_draw_by_draw_computation(reduction):
    torch.manual_seed(0)
    # 3 action dims: the divisors differ
    policy = FlowPolicy(OBS, 3, hidden_sizes=[16, 16], cfm_loss_reduction=reduction)
    batch = make_batch(policy, action_dim=3)
    got = policy.cfm_loss(batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
    with torch.no_grad():
        expected = manual_cfm_losses(policy, batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_cfm_times_are_uniform_on_the_releases_range_and_noise_is_standard_normal():
    t, eps = draw_cfm_samples((4000,), 8, A, torch.Generator().manual_seed(3))  # 32000 times
    assert 0.005 <= t.min().item() < 0.006 and 0.994 < t.max().item() <= 0.995  # both ends reached, none passed
    # Uniform: each tenth of [0.005, 0.995] holds a tenth of the draws (binomial sd 0.0017; 5 sd is 0.0085).
    shares = torch.histc(t, bins=10, min=0.005, max=0.995) / t.numel()
    assert (shares - 0.1).abs().max().item() < 0.0085
    assert eps.shape == (4000, 8, A)
    assert abs(eps.mean().item()) < 5 / eps.numel() ** 0.5 and abs(eps.std().item() - 1) < 0.02
    full, _ = draw_cfm_samples((4000,), 8, A, torch.Generator().manual_seed(3), time_margin=0.0)
    assert full.min().item() < 0.001 and full.max().item() > 0.999  # no margin: the whole path


def test_ppo_loss_is_clipped_ratio_of_exact_gaussian_log_likelihoods():
    """loss_type='ppo': CleanRL's clipped objective on log N(a; mu(o), sigma), computed here element by element."""
    torch.manual_seed(0)
    policy, critic = GaussianPolicy(OBS, A, hidden_sizes=[16, 16]), Critic(OBS, [16])
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.4]))
    batch = make_batch(FlowPolicy(OBS, A, hidden_sizes=[16, 16]))
    with torch.no_grad():
        mu = policy.mean_net(batch["obs"])
        new_logp = []
        for i in range(B):
            logp = 0.0
            for k in range(A):
                sigma = math.exp(policy.log_std[k].item())
                z = (batch["actions"][i, k].item() - mu[i, k].item()) / sigma
                logp += -0.5 * z * z - math.log(sigma) - 0.5 * math.log(2 * math.pi)
            new_logp.append(logp)
    rollout_logp = torch.tensor(new_logp) + 0.1 * torch.randn(B)  # the rollout policy's, a few steps older
    batch["cfm_old"] = -rollout_logp.unsqueeze(-1)
    cfg = FlowPolicyConfig(loss_type="ppo", clip_coef=CLIP)
    out = minibatch_loss(policy, critic, batch, cfg)
    terms = [
        ppo_term(math.exp(new_logp[i] - rollout_logp[i].item()), batch["advantages"][i].item())
        for i in range(B)
    ]
    v = critic(batch["obs"]).detach()
    v_loss = 0.5 * sum((v[i].item() - batch["returns"][i].item()) ** 2 for i in range(B)) / B
    assert out.pg_loss.item() == pytest.approx(sum(terms) / B, rel=1e-5)
    assert out.loss.item() == pytest.approx(sum(terms) / B + cfg.vf_coef * v_loss, rel=1e-5)


@pytest.mark.parametrize("loss_type", ["fpo", "fpo++"])
def test_dipod_term_is_beta_times_on_policy_cfm_loss(loss_type):
    torch.manual_seed(0)
    policy, critic = FlowPolicy(OBS, A, hidden_sizes=[16, 16]), Critic(OBS, [16])
    batch = make_batch(policy)
    base_cfg = FlowPolicyConfig(loss_type=loss_type, dipod_beta=0.0, clip_coef=CLIP)
    dipod_cfg = FlowPolicyConfig(loss_type=loss_type, dipod_beta=0.3, clip_coef=CLIP)
    base, with_dipod = minibatch_loss(policy, critic, batch, base_cfg), minibatch_loss(policy, critic, batch, dipod_cfg)
    with torch.no_grad():
        per_draw = manual_cfm_losses(policy, batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
    on_policy_cfm = per_draw.mean()
    assert with_dipod.dipod_loss.item() == pytest.approx(on_policy_cfm.item(), rel=1e-5)
    assert with_dipod.loss.item() == pytest.approx(base.loss.item() + 0.3 * on_policy_cfm.item(), rel=1e-5)


@pytest.mark.parametrize("loss_type", ["fpo", "fpo++"])
def test_dipod_beta_zero_is_the_base_objective_exactly(loss_type):
    """beta = 0: loss and every gradient equal the base FPO / FPO++ loss plus the value loss, bit for bit."""
    torch.manual_seed(0)
    policy, critic = FlowPolicy(OBS, A, hidden_sizes=[16, 16]), Critic(OBS, [16])
    batch = make_batch(policy)
    cfg = FlowPolicyConfig(loss_type=loss_type, dipod_beta=0.0, clip_coef=CLIP)
    out = minibatch_loss(policy, critic, batch, cfg)
    out.loss.backward()
    grads = [p.grad.clone() for p in [*policy.parameters(), *critic.parameters()]]
    for p in [*policy.parameters(), *critic.parameters()]:
        p.grad = None

    cfm_new = policy.cfm_loss(batch["obs"], batch["actions"], batch["cfm_t"], batch["cfm_eps"])
    if loss_type == "fpo":
        pg = fpo_loss(batch["cfm_old"], cfm_new, batch["advantages"], CLIP, "ppo")
    else:
        pg = fpo_plus_plus_loss(batch["cfm_old"], cfm_new, batch["advantages"], CLIP, "aspo")
    base = pg.loss + cfg.vf_coef * value_loss(critic(batch["obs"]), batch["returns"])
    base.backward()
    assert out.loss.item() == base.item()
    for got, p in zip(grads, [*policy.parameters(), *critic.parameters()]):
        assert torch.equal(got, p.grad)
    assert dipod_loss(cfm_new).item() > 0  # the term exists, it is just not added


def test_gae_matches_a_per_env_recursion_with_truncation_bootstrap():
    g = np.random.default_rng(0)
    T, E, gamma, lam = 7, 3, 0.9, 0.8
    rewards, values, next_values = g.normal(size=(T, E)), g.normal(size=(T, E)), g.normal(size=(T, E))
    terminations, truncations = np.zeros((T, E)), np.zeros((T, E))
    terminations[2, 0] = 1  # env 0 ends by termination at step 2: no bootstrap
    truncations[4, 1] = 1  # env 1 is truncated at step 4: bootstrap from next_values (V of the final observation)
    dones = np.maximum(terminations, truncations)
    expected_adv = np.zeros((T, E))
    for e in range(E):
        for t in range(T):
            # A_t = sum_k (gamma lam)^k delta_{t+k}, stopping after the step that ends the episode.
            total, discount = 0.0, 1.0
            for k in range(t, T):
                delta = rewards[k, e] + gamma * (1 - terminations[k, e]) * next_values[k, e] - values[k, e]
                total += discount * delta
                if dones[k, e]:
                    break
                discount *= gamma * lam
            expected_adv[t, e] = total
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64)
    adv, returns = compute_gae(
        as_tensor(rewards), as_tensor(values), as_tensor(next_values), as_tensor(terminations), as_tensor(dones),
        gamma, lam,
    )
    np.testing.assert_allclose(adv.numpy(), expected_adv, rtol=1e-10)
    np.testing.assert_allclose(returns.numpy(), expected_adv + values, rtol=1e-10)
