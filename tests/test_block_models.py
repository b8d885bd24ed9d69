"""The mixture-of-experts block of SDAR-30B-A3B and LLaDA2 (`dipod_trl/models/moe.py`): the batched experts equal the
published per-expert loop, LLaDA2's grouped top-k equals brute-force enumeration, routing follows the current weights
in every forward, only the selected experts are touched, no load-balancing loss or bias update happens, and the
stacked experts save under the published per-expert names."""

import itertools

import pytest
import torch
from safetensors.torch import load_file

from dipod_trl.models import load_diffusion_model
from dipod_trl.models.moe import MoEExperts, TopKRouter, grouped_topk
from tests.helpers.block_models import make_tiny_block_model


def _experts(intermediate: int, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    experts = MoEExperts(8, 64, intermediate).to(dtype)
    with torch.no_grad():
        experts.gate_up_proj.normal_(0, 0.2)
        experts.down_proj.normal_(0, 0.2)
    return experts


# 16: torch's grouped GEMM kernel; 6 (rows not 16-byte aligned) and float64: the padded batched matmul.
@pytest.mark.parametrize("intermediate,dtype", [(16, torch.float32), (6, torch.float32), (16, torch.float64)])
def test_batched_experts_equal_the_per_expert_loop(intermediate, dtype):
    experts = _experts(intermediate, dtype)
    hidden = torch.randn(37, 64, dtype=dtype, requires_grad=True)
    index = torch.stack([torch.randperm(8)[:3] for _ in range(37)])
    index[:5] = torch.tensor([0, 1, 2])  # some experts busier than others, some (7 maybe) idle
    weights = torch.rand(37, 3, dtype=dtype)
    batched = experts(hidden, index, weights)
    reference = experts.reference_forward(hidden, index, weights)
    torch.testing.assert_close(batched, reference, rtol=1e-6, atol=1e-6)
    probe = torch.randn_like(batched)
    grads = torch.autograd.grad((batched * probe).sum(), [hidden, experts.gate_up_proj, experts.down_proj])
    reference_grads = torch.autograd.grad((reference * probe).sum(), [hidden, experts.gate_up_proj,
                                                                        experts.down_proj])
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)


def test_only_the_selected_experts_take_part():
    experts = _experts(16)
    hidden = torch.randn(3, 64)
    index = torch.tensor([[2, 5], [5, 2], [2, 5]])
    out = experts(hidden, index, torch.rand(3, 2))
    out.sum().backward()
    touched = experts.gate_up_proj.grad.flatten(1).abs().sum(-1) > 0
    assert touched.tolist() == [i in (2, 5) for i in range(8)]


def _brute_force_grouped_topk(scores: torch.Tensor, top_k: int, n_group: int, topk_group: int) -> list[set[int]]:
    """For each token: among all choices of `topk_group` groups, the one with the largest total group score (a group
    scores the sum of its two best experts), then the `top_k` best experts inside the chosen groups."""
    per_group = scores.shape[1] // n_group
    chosen = []
    for row in scores.tolist():
        groups = [row[g * per_group:(g + 1) * per_group] for g in range(n_group)]
        group_score = [sum(sorted(g, reverse=True)[:2]) for g in groups]
        best = max(itertools.combinations(range(n_group), topk_group), key=lambda c: sum(group_score[g] for g in c))
        allowed = [(row[e], e) for g in best for e in range(g * per_group, (g + 1) * per_group)]
        chosen.append({e for _, e in sorted(allowed, reverse=True)[:top_k]})
    return chosen


@pytest.mark.parametrize("n_group,topk_group,top_k", [(4, 2, 2), (4, 1, 2), (8, 3, 4), (1, 1, 3)])
def test_grouped_topk_equals_brute_force(n_group, topk_group, top_k):
    scores = torch.rand(50, 16, generator=torch.Generator().manual_seed(n_group * 10 + top_k), dtype=torch.float64)
    index = grouped_topk(scores, top_k, n_group, topk_group)
    assert [set(row) for row in index.tolist()] == _brute_force_grouped_topk(scores, top_k, n_group, topk_group)


def test_sigmoid_router_chooses_with_the_bias_and_weighs_without_it():
    torch.manual_seed(0)
    router = TopKRouter(8, 64, 2, score_function="sigmoid", n_group=4, topk_group=2, routed_scaling_factor=2.5,
                        expert_bias=True)
    with torch.no_grad():
        router.weight.normal_(0, 0.3)
        router.expert_bias.copy_(torch.linspace(-0.5, 0.5, 8))
    hidden = torch.randn(40, 64)
    index, weights, logits = router(hidden)
    scores = torch.sigmoid(hidden @ router.weight.T)
    expected_index = _brute_force_grouped_topk(scores + router.expert_bias, 2, 4, 2)
    assert [set(row) for row in index.tolist()] == expected_index
    chosen = scores.gather(1, index)
    torch.testing.assert_close(weights, 2.5 * chosen / chosen.sum(-1, keepdim=True))
    without_bias = [set(row) for row in grouped_topk(scores, 2, 4, 2).tolist()]
    assert without_bias != expected_index  # the bias changes choices here, so the test sees it


def test_softmax_router_renormalises_the_top_k():
    torch.manual_seed(0)
    router = TopKRouter(8, 64, 3, score_function="softmax", norm_topk_prob=True)
    with torch.no_grad():
        router.weight.normal_(0, 0.3)
    hidden = torch.randn(10, 64)
    index, weights, _ = router(hidden)
    probs = torch.softmax(hidden @ router.weight.T, -1)
    top = probs.topk(3, -1)
    assert torch.equal(index, top.indices)
    torch.testing.assert_close(weights, top.values / top.values.sum(-1, keepdim=True))


@pytest.mark.parametrize("family", ["sdar_moe", "llada2"])
def test_no_load_balancing_loss_and_a_frozen_expert_bias_by_default(family):
    model = make_tiny_block_model(family)
    assert model.config.output_router_logits is False
    with pytest.raises(ValueError, match="output_router_logits"):
        type(model.config)(output_router_logits=True)
    ids = torch.randint(0, 62, (2, 12))
    out = model(ids)
    assert set(out.keys()) == {"logits"}  # no aux loss, no router logits
    names = dict(model.named_parameters())
    assert not any("expert_bias" in n for n in names)
    if family == "llada2":
        bias = model.model.layers[1].mlp.gate.expert_bias
        with torch.no_grad():
            bias.copy_(torch.linspace(-0.2, 0.2, 8))
        before = bias.clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        torch.nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten()).backward()
        optimizer.step()
        assert torch.equal(bias, before) and "expert_bias" in "".join(model.state_dict())


@pytest.mark.parametrize("family", ["sdar_moe", "llada2"])
def test_routing_is_recomputed_from_the_current_weights_in_every_forward(family):
    model = make_tiny_block_model(family).eval()
    ids = torch.randint(0, 62, (2, 12))
    layer = model.model.layers[-1].mlp
    chosen = []
    layer.gate.register_forward_hook(lambda module, args, out: chosen.append(out[0].clone()))
    with torch.no_grad():
        first = model(ids).logits
        torch.testing.assert_close(model(ids).logits, first, rtol=0, atol=0)
        layer.gate.weight.mul_(-1)
        moved = model(ids).logits
    assert not torch.equal(chosen[0], chosen[2])  # other experts for the new router weights
    assert (moved - first).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["sdar_moe", "llada2"])
def test_stacked_experts_save_under_the_published_names_and_load_back(family, tmp_path):
    model = make_tiny_block_model(family).eval()
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    layer = model.config.num_hidden_layers - 1
    for e in range(8):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight" in saved
    assert not any("gate_up_proj" in k for k in saved)
    stacked = model.model.layers[layer].mlp.experts
    torch.testing.assert_close(saved[f"model.layers.{layer}.mlp.experts.3.up_proj.weight"],
                               stacked.gate_up_proj[3, 16:])
    torch.testing.assert_close(saved[f"model.layers.{layer}.mlp.experts.3.down_proj.weight"], stacked.down_proj[3])
    assert (f"model.layers.{layer}.mlp.gate.expert_bias" in saved) == (family == "llada2")
    reloaded = load_diffusion_model(str(tmp_path)).eval()
    ids = torch.randint(0, 62, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.slow
def test_zero3_over_two_processes_trains_a_moe_model_as_one_process_does(tmp_path):
    """recipes/tiny.yaml on the SDAR-MoE fixture (stacked experts, router; beta > 0, so the reference model is
    partitioned too) for 2 steps: DeepSpeed ZeRO-3 over two CPU processes (recipes/accelerate/cpu2_zero3.yaml, half
    the per-device batch) gives the one-process run's rewards, losses and final weights."""
    pytest.importorskip("deepspeed")
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_cli import COMMON, RECIPES, _log_history, assert_same_training, assert_same_weights

    checkpoint = str(Path(__file__).parent / "fixtures" / "sdar_moe_tiny")
    # block-diffusion models decode with the published low-confidence rule only (COMMON's random remasking is refused)
    short = ["--max_steps", "2", "--save_steps", "2", "--num_generations", "4", "--drift_num_orders", "0",
             "--remasking", "low_confidence"]
    one = tmp_path / "one"
    one.mkdir()
    command = [sys.executable, "-m", "dipod_trl", os.path.join(RECIPES, "tiny.yaml"), "--model_name_or_path",
               checkpoint, "--output_dir", str(one), "--per_device_train_batch_size", "16", *COMMON, *short]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=one, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    zero3 = tmp_path / "zero3"
    zero3.mkdir()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              os.path.join(RECIPES, "accelerate", "cpu2_zero3.yaml"), "-m", "dipod_trl",
              os.path.join(RECIPES, "tiny.yaml"), "--model_name_or_path", checkpoint, "--output_dir", str(zero3),
              "--per_device_train_batch_size", "8", *COMMON, *short]
    result = subprocess.run(launch, cwd=zero3, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(_log_history(str(one), 2), _log_history(str(zero3), 2), loss_tolerance=1e-5)
    assert_same_weights(str(one), str(zero3))


def test_family_traits_mask_and_stop_ids():
    from pathlib import Path

    from dipod_trl.models import (
        LLaDA2MoeConfig,
        LLaDA2MoeModelLM,
        SDARConfig,
        SDARForCausalLM,
        as_diffusion_lm,
        family_traits,
        load_diffusion_tokenizer,
    )

    fixtures = Path(__file__).parent / "fixtures"
    sdar, llada2 = (load_diffusion_model(str(fixtures / f"{n}_tiny")) for n in ("sdar", "llada2"))
    for model, block in ((sdar, 4), (llada2, 32)):
        assert family_traits(model).block_causal and family_traits(model).default_block_length == block
        assert not family_traits(model).shift_logits
    tokenizer = load_diffusion_tokenizer(str(fixtures / "sdar_tiny"))
    lm = as_diffusion_lm(sdar, tokenizer)
    assert lm.mask_token_id == tokenizer.convert_tokens_to_ids("<|MASK|>")
    assert lm.eos_token_ids == tuple(tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"]))
    tokenizer = load_diffusion_tokenizer(str(fixtures / "llada2_tiny"))
    lm = as_diffusion_lm(llada2, tokenizer)
    assert lm.mask_token_id == tokenizer.convert_tokens_to_ids("<|mask|>")
    assert lm.eos_token_ids == (tokenizer.convert_tokens_to_ids("<|endoftext|>"),)
    # the published ids, for full-vocabulary models without a tokenizer
    small = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=4)
    full_sdar = as_diffusion_lm(SDARForCausalLM(SDARConfig(**small)))
    assert (full_sdar.mask_token_id, full_sdar.eos_token_ids) == (151669, (151643, 151645))
    full_llada2 = as_diffusion_lm(LLaDA2MoeModelLM(LLaDA2MoeConfig(**small, num_experts=None)))
    assert (full_llada2.mask_token_id, full_llada2.eos_token_ids) == (156895, (156892,))
