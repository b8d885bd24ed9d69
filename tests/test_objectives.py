"""The surrogate losses against formulas written out independently, one sequence or token at a time, and the
registry: a new objective is one class."""

import itertools
import math
from dataclasses import replace

import pytest
import torch
from datasets import Dataset

import dipod_trl
from dipod_trl import DiPODTrainer
from dipod_trl.likelihood import elbo_from_token_logps
from dipod_trl.masks import MaskDraw
from dipod_trl.objectives import (
    OBJECTIVES,
    SPG,
    LossInputs,
    Objective,
    ObjectiveOutput,
    diffu_grpo_loss,
    dipod_term,
    fpo_loss,
    group_relative_advantages,
    objective_class,
    spg_eubo_per_token,
    spg_loss,
)
from tests.helpers.models import make_tiny_model
from tests.helpers.trainers import text_hash, tiny_run_config


def test_fpo_loss_is_the_clipped_sequence_ratio_objective():
    elbo = torch.tensor([-3.0, -5.0, -2.5, -4.0])
    old = torch.tensor([-3.2, -4.5, -2.5, -4.4])
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    ref = torch.tensor([-3.1, -5.2, -2.0, -4.1])
    lengths = torch.tensor([3, 5, 2, 4])
    out = fpo_loss(elbo, old, adv, epsilon_low=0.2, epsilon_high=0.3, ref_elbo=ref, kl_beta=0.1, lengths=lengths)
    expected = 0.0
    for e, o, a, r, n in zip(elbo.tolist(), old.tolist(), adv.tolist(), ref.tolist(), lengths.tolist()):
        ratio = math.exp(e - o)
        surrogate = min(ratio * a, min(max(ratio, 0.8), 1.3) * a)
        d = (r - e) / n
        expected += -surrogate + 0.1 * (math.exp(d) - d - 1)
    assert out.loss.item() == pytest.approx(expected / 4, rel=1e-6)
    # ratios: e^0.2 (A>0, inside), e^-0.5 = 0.61 (A<0, below 0.8: clipped), 1, e^0.4 = 1.49 (A<0: not clipped)
    assert out.metrics["clip_ratio/low_mean"].item() == pytest.approx(0.25)
    assert out.metrics["clip_ratio/high_mean"].item() == 0.0


def test_fpo_gradient_vanishes_where_the_ratio_is_clipped():
    elbo = torch.tensor([0.5, -0.5], requires_grad=True)
    out = fpo_loss(elbo, torch.zeros(2), torch.tensor([1.0, -1.0]), epsilon_low=0.2, epsilon_high=0.2)
    out.loss.backward()
    assert elbo.grad.tolist() == [0.0, 0.0]  # both ratios are outside the trust region on their advantage's side


def test_diffu_grpo_loss_is_d1s_token_level_objective():
    torch.manual_seed(0)
    logps, old, ref = -torch.rand(2, 4), -torch.rand(2, 4), -torch.rand(2, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv = torch.tensor([0.7, -1.2])
    out = diffu_grpo_loss(logps, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2, ref_token_logps=ref, kl_beta=0.04)
    total, count = 0.0, 0
    for b in range(2):
        for t in range(4):
            if not mask[b, t]:
                continue
            ratio = math.exp(logps[b, t] - old[b, t])
            a = adv[b].item()
            d = (ref[b, t] - logps[b, t]).item()
            total += -min(ratio * a, min(max(ratio, 0.8), 1.2) * a) + 0.04 * (math.exp(d) - d - 1)
            count += 1
    assert out.loss.item() == pytest.approx(total / count, rel=1e-6)


def test_spg_eubo_matches_its_definition():
    torch.manual_seed(0)
    logps = -torch.rand(1, 3, 4) * 2
    masks = torch.tensor([[[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]]], dtype=torch.bool)
    logps = logps * masks
    weights = torch.tensor([[2.0, 2.0, 1.0]])  # L / l with L = 4
    beta = 1.5
    per_token = []
    for i in range(4):
        terms = [weights[0, k] * masks[0, k, i] * math.exp(beta * logps[0, k, i].item()) for k in range(3)]
        avg = sum(float(term) for term in terms) / 3
        per_token.append(math.log(avg) / beta)
    expected = sum(per_token) / 4
    assert spg_eubo_per_token(logps, masks, weights, beta).item() == pytest.approx(expected, rel=1e-6)


def every_mask_as_equally_likely_samples(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO's masks (l uniform on 1..L, then a uniform subset of l tokens), each repeated in proportion to its
    probability, with weights L / l: a plain average over these samples is the exact expectation."""
    per_size = math.lcm(*(math.comb(length, size) for size in range(1, length + 1)))
    masks, weights = [], []
    for size in range(1, length + 1):
        for subset in itertools.combinations(range(length), size):
            for _ in range(per_size // math.comb(length, size)):
                masks.append([i in subset for i in range(length)])
                weights.append(length / size)
    return torch.tensor([masks]), torch.tensor([weights], dtype=torch.float64)


@pytest.mark.parametrize("beta", [1.0, 1.5, 3.0])
def test_spg_eubo_bounds_the_elbo_per_token_and_meets_it_as_beta_goes_to_zero(beta):
    """With every mask at its exact probability, SPG's EUBO per token >= the ELBO per token (Jensen under the
    mask-weighted measure), strictly when the masked-token log-probabilities differ, and equal to it as beta -> 0."""
    masks, weights = every_mask_as_equally_likely_samples(4)  # 48 samples
    torch.manual_seed(0)
    logps = -3 * torch.rand(masks.shape, dtype=torch.float64) * masks  # each sample's own context: its own values
    draw = MaskDraw(masks, weights)
    elbo_per_token = elbo_from_token_logps(logps, draw).mean().item() / 4
    eubo = spg_eubo_per_token(logps, masks, weights, beta).item()
    print(f"beta={beta}: EUBO per token {eubo:.4f} >= ELBO per token {elbo_per_token:.4f}")
    assert eubo > elbo_per_token + 0.05
    assert spg_eubo_per_token(logps, masks, weights, 1e-6).item() == pytest.approx(elbo_per_token, abs=1e-5)


def test_spg_loss_uses_the_elbo_for_positive_and_the_bound_for_negative_advantages():
    elbo_pt = torch.tensor([-1.0, -2.0, -0.5])
    upper = torch.tensor([-0.2, -0.8, -0.1])
    adv = torch.tensor([1.0, -1.0, 0.0])
    lengths = torch.tensor([4, 2, 6])
    out = spg_loss(elbo_pt, upper, adv, lengths)
    expected = -(4 * 1.0 * -1.0 + 2 * -1.0 * -0.8 + 0) / 12
    assert out.loss.item() == pytest.approx(expected)


def test_dipod_term_normalizations():
    elbo, lengths = torch.tensor([-6.0, -2.0]), torch.tensor([3, 1])
    assert dipod_term(elbo, lengths, "sequence").item() == pytest.approx(-4.0)
    assert dipod_term(elbo, lengths, "token").item() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="dipod_normalization"):
        dipod_term(elbo, lengths, "batch")


def test_group_relative_advantages_follow_trl():
    rewards = torch.tensor([[1.0], [0.0], [0.0], [0.0], [2.0], [2.0], [2.0], [2.0]])
    adv, summed = group_relative_advantages(rewards, torch.ones(1), 4)
    first = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-4)  # group std (unbiased) of [1,0,0,0] is 0.5
    assert torch.allclose(adv[:4], first, atol=1e-6)
    assert torch.equal(adv[4:], torch.zeros(4))  # no variance, no signal
    unscaled, _ = group_relative_advantages(rewards, torch.ones(1), 4, scale_rewards="none")
    assert torch.allclose(unscaled[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_group_relative_advantages_skip_missing_rewards_and_weight_functions():
    rewards = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), float("nan")], [1.0, 1.0]])
    adv, summed = group_relative_advantages(rewards, torch.tensor([1.0, 0.5]), 4, scale_rewards="none")
    assert summed[:2].tolist() == [1.0, 0.5] and math.isnan(summed[2]) and summed[3] == 1.5
    assert adv[2] == 0.0  # unscorable
    assert torch.allclose(adv[[0, 1, 3]], torch.tensor([1.0, 0.5, 1.5]) - 1.0)


def test_spg_eubo_is_finite_where_p_to_the_beta_underflows_float32_and_equals_a_float64_reference():
    # log p = -80 and -150 at beta 1.5: p^beta = e^-120 and e^-225, both 0 in float32 (smallest ~ e^-103.3).
    logps = torch.tensor([[[-80.0, -0.3, -150.0], [-2.0, -1.0, -0.0], [-81.0, -0.2, -149.0]]])
    masks = torch.tensor([[[1, 1, 1], [0, 1, 0], [1, 0, 1]]], dtype=torch.bool)
    logps = logps * masks
    weights = torch.tensor([[1.5, 3.0, 1.5]])
    beta = 1.5
    old_way = torch.log((torch.exp(beta * logps) * masks * weights.unsqueeze(-1)).mean(dim=1)) / beta
    assert torch.isinf(old_way[0, [0, 2]]).all()  # what computing p^beta first gave
    got = spg_eubo_per_token(logps, masks, weights, beta)
    l64, m64, w64 = logps.double(), masks.double(), weights.double()
    reference = (torch.log((torch.exp(beta * l64) * m64 * w64.unsqueeze(-1)).mean(dim=1)) / beta).mean()
    assert torch.isfinite(got).all()
    assert got.item() == pytest.approx(reference.item(), rel=1e-6)


def test_spg_eubo_gradient_is_finite_with_an_unscored_position():
    logps = torch.tensor([[[-90.0, -1.0, 0.0], [-95.0, 0.0, 0.0]]], requires_grad=True)
    masks = torch.tensor([[[1, 1, 0], [1, 0, 0]]], dtype=torch.bool)  # position 2: no sample masks it
    spg_eubo_per_token(logps * masks, masks, torch.tensor([[1.5, 3.0]]), 1.5).backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad[0, :, 2].abs().sum() == 0


def test_fpo_linear_sequence_kl_is_the_release_elbo_difference():
    elbo = torch.tensor([-30.0, -52.0, -12.0], requires_grad=True)
    old = elbo.detach().clone()
    ref = torch.tensor([-29.0, -55.0, -12.5])
    adv = torch.tensor([0.5, -1.0, 0.25])
    out = fpo_loss(elbo, old, adv, epsilon_low=0.5, epsilon_high=0.5, ref_elbo=ref, kl_beta=0.04,
                   lengths=torch.tensor([10, 20, 5]), kl_estimator="linear_sequence")
    # ratio 1: policy part -mean(A); KL: beta * mean(ELBO - ELBO_ref), per sequence in nats
    expected = -adv.mean().item() + 0.04 * ((-30 + 29) + (-52 + 55) + (-12 + 12.5)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    out.loss.backward()
    # d loss / d ELBO_j = (-A_j + beta) / B: the release's linear term pushes every ELBO down by beta / B
    assert elbo.grad.tolist() == pytest.approx(((-adv + 0.04) / 3).tolist(), rel=1e-6)
    with pytest.raises(ValueError, match="kl_estimator"):
        fpo_loss(elbo, old, adv, epsilon_low=0.5, epsilon_high=0.5, ref_elbo=ref, kl_beta=0.04,
                 lengths=torch.tensor([10, 20, 5]), kl_estimator="k2")


# ------------------------------------------------------------------ the registry: an objective is one class


def reinforce_loss(elbo, advantages, lengths):
    loss = -(advantages * elbo / lengths.clamp(min=1)).mean()
    return ObjectiveOutput(loss, {"policy_loss": loss.detach()})


class Reinforce(Objective):
    """docs/adding_an_objective.md's worked example."""

    name = "reinforce"
    default_dipod_normalization = "token"
    scores_old_policy = False

    def loss(self, token_logps, draw, inputs: LossInputs) -> ObjectiveOutput:
        elbo = self.reduce(token_logps, draw)
        return replace(reinforce_loss(elbo, inputs.advantages, inputs.lengths), on_policy=elbo)


def test_the_registry_refuses_an_unknown_objective_and_names_the_known_ones():
    assert objective_class("spg") is SPG
    known = r"\('fpo', 'diffu_grpo', 'spg', 'espo', 'gdpo'\)"
    with pytest.raises(ValueError, match=rf"objective must be one of {known}, got 'ppo'"):
        objective_class("ppo")


def test_a_new_objective_is_one_class_in_the_registry(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(OBJECTIVES, "reinforce", Reinforce)
    args = tiny_run_config(tmp_path, objective="reinforce", max_steps=1, seed=0, drift_num_orders=0,
                           elbo_num_samples=2, dipod_beta=0.05, temperature=1.0)
    assert args.dipod_normalization == "token" and args.p_mask_prompt == 0.0  # the class's defaults
    model = make_tiny_model(len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                            initializer_range=0.05).double().train()
    prompts = Dataset.from_dict({"prompt": [f"{i}{(3 * i) % 10}" for i in range(4)]})
    trainer = DiPODTrainer(model, text_hash, args=args, train_dataset=prompts, processing_class=tokenizer)
    inputs = trainer._generate_and_score_completions([prompts[i // 4] for i in range(8)])
    assert inputs["advantages"].abs().sum() > 0, "the test needs a batch with a learning signal"
    assert "old_scores" not in inputs  # an on-policy objective costs no scoring pass at generation time

    loss = trainer.compute_loss(trainer.model, inputs)
    draw = MaskDraw(inputs["mask_completion"][:, 0], inputs["mask_weights"][:, 0])
    mask = inputs["completion_mask"]
    elbo = dipod_trl.elbo(trainer.model, inputs["prompt_ids"], inputs["completion_ids"], completion_mask=mask,
                          attention_mask=inputs["prompt_mask"], draw=draw)
    lengths = mask.sum(-1)
    expected = sum(-a * e / n for a, e, n in zip(inputs["advantages"], elbo, lengths)) / 8
    expected = expected - 0.05 * elbo.sum() / lengths.sum()  # DiPOD's term in nats per token
    assert loss.item() == pytest.approx(expected.item(), abs=1e-9)
    trainer.train()
    assert trainer.state.global_step == 1


@pytest.mark.parametrize("objective,extra", [("fpo", {}), ("diffu_grpo", {}), ("spg", {}), ("espo", {}),
                                             ("gdpo", {"elbo_estimator": "quadrature"})])
def test_dipod_term_adds_no_forward_pass(tokenizer, tmp_path, objective, extra):
    """DiPOD reuses the ELBO its objective already estimates on the iteration's masks: one loss + backward scores as
    many sequences with the term as without (a forward hook counts the rows), and the term does change the loss."""
    from tests.helpers.trainers import generation_batch, make_trainer

    trainer = make_trainer(tokenizer, tmp_path, objective=objective, drift_num_orders=0, **extra)
    inputs = generation_batch(trainer)
    rows, losses = {0.0: 0, 0.05: 0}, {}
    current = [0.0]  # the setting whose rows the hook counts
    hook = trainer.model.register_forward_hook(
        lambda module, args, kwargs, out: rows.__setitem__(current[0], rows[current[0]] + kwargs.get(
            "input_ids", args[0] if args else None).shape[0]), with_kwargs=True)
    for beta in (0.0, 0.05):
        trainer.args.dipod_beta = current[0] = beta
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        trainer.model.zero_grad()
        losses[beta] = loss.item()
    hook.remove()
    assert rows[0.0] == rows[0.05] > 0, rows
    assert losses[0.0] != losses[0.05]
