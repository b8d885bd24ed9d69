"""The trainer's loss and gradients and the sampler's tokens against values recorded in float64 on fixed seeds.

`tests/fixtures/recorded_behaviour.json` holds, for each objective with and without DiPOD: the generation batch the
trainer builds (completions, advantages, masks, old and reference scores), the loss of both inner iterations after the
policy has moved, and per-parameter digests of the gradients (sum, norm, and the dot product with a fixed vector);
and the tokens of short `generate` calls (exact, with the block cache, with a confidence threshold, sampled).
Refactoring must leave all of them unchanged: a change shows up as a difference beyond float64 rounding.

Regenerate (only when a change of behaviour is intended, and say so in the commit):
`python -m tests.test_recorded_behaviour --write`.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from datasets import Dataset

import dipod_trl
from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.models import TinyMDLMForMaskedDiffusion, build_tiny_tokenizer
from tests.helpers.models import make_tiny_model
from tests.helpers.trainers import text_hash

FIXTURE = Path(__file__).parent / "fixtures" / "recorded_behaviour.json"

# objective settings; each is recorded with dipod_beta 0 and 0.05
TRAINING_CASES = {
    "fpo": dict(objective="fpo", beta=0.04),
    "fpo_linear_kl": dict(objective="fpo", beta=0.04, kl_estimator="linear_sequence"),
    "diffu_grpo": dict(objective="diffu_grpo", beta=0.04),
    "diffu_grpo_completion_masks": dict(objective="diffu_grpo", one_step_masks="completion"),
    "spg": dict(objective="spg"),
    "spg_mix_block_random": dict(objective="spg", spg_negative_bound="mix", elbo_estimator="block_random"),
}
DIPOD_BETAS = (0.0, 0.05)

GENERATION_CASES = {
    "exact": dict(),
    "sampled": dict(temperature=1.0, remasking="random"),
    "kv_cache_dual_refresh_2": dict(kv_cache="dual", cache_refresh_steps=2),
    "kv_cache_prefix": dict(kv_cache="prefix"),
    "confidence_threshold": dict(confidence_threshold=0.3, temperature=0.7),
}


def tiny_model(tokenizer, seed: int, initializer_range: float) -> TinyMDLMForMaskedDiffusion:
    """The shared tiny model in float64 (recorded values need no float32 rounding)."""
    return make_tiny_model(len(tokenizer), seed, initializer_range=initializer_range,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id).double()


def parameter_digest(model) -> dict[str, list[float]]:
    """sum, L2 norm and dot product with a fixed vector, per parameter gradient: a change of any entry shows."""
    digest = {}
    for name, p in model.named_parameters():
        g = p.grad.detach().flatten().double()
        probe = torch.sin(torch.arange(g.numel(), dtype=torch.float64) * 0.7 + 0.3)
        digest[name] = [g.sum().item(), g.norm().item(), (g * probe).sum().item()]
    return digest


def as_list(tensor):
    return tensor.detach().double().tolist() if tensor.is_floating_point() else tensor.detach().long().tolist()


def record_training(tokenizer, settings: dict, dipod_beta: float, output_dir: str) -> dict:
    prompts = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": f"{i}{(3 * i) % 10}{(7 * i) % 10}"}] for i in range(16)]}
    )
    args = DiPODConfig(
        output_dir=output_dir, max_completion_length=8, block_length=4, diffusion_steps=8, num_generations=4,
        per_device_train_batch_size=8, num_iterations=2, elbo_num_samples=4, max_steps=2, learning_rate=1e-3,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=0, drift_num_orders=0, temperature=1.0,
        dipod_beta=dipod_beta, **settings,
    )
    trainer = DiPODTrainer(tiny_model(tokenizer, 0, 0.05).train(), text_hash, args=args, train_dataset=prompts,
                           processing_class=tokenizer)
    model = trainer.model
    rows = [prompts[i // 4] for i in range(8)]
    inputs = trainer._generate_and_score_completions(rows)
    record = {"dipod_normalization": trainer.args.dipod_normalization, "p_mask_prompt": trainer.args.p_mask_prompt}
    record["inputs"] = {k: as_list(v) for k, v in sorted(inputs.items()) if isinstance(v, torch.Tensor)}
    with torch.no_grad():  # the policy moves away from the old and reference policies: ratios, clipping, KL matter
        generator = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    record["iterations"] = []
    for iteration in range(2):
        trainer._step = iteration  # steps_per_generation is 1: step i scores inner iteration i's masks
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        record["iterations"].append({"loss": loss.item(), "gradients": parameter_digest(model)})
    return record


def record_generation(tokenizer) -> dict:
    model = tiny_model(tokenizer, 1, 0.3).eval()
    prompt_ids = torch.tensor([[tokenizer.pad_token_id, 5, 6, 7], [8, 9, 10, 11]])
    attention_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    out = {}
    for name, kwargs in GENERATION_CASES.items():
        generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
        ids, mask = dipod_trl.generate(model, prompt_ids, attention_mask, gen_length=12, block_length=4, steps=12,
                                       generator=generators, **kwargs)
        out[name] = {"completion_ids": ids.tolist(), "completion_mask": mask.tolist()}
    return out


def record() -> dict:
    tokenizer = build_tiny_tokenizer()
    training = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in TRAINING_CASES.items():
            for beta in DIPOD_BETAS:
                training[f"{name}/dipod_beta={beta}"] = record_training(tokenizer, settings, beta, tmp)
    return {"training": training, "generation": record_generation(tokenizer)}


def differences(expected, actual, path="", rtol=1e-10, atol=1e-12):
    """Paths where two nested records differ (numbers beyond float64 rounding of a re-ordered sum)."""
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [f"{path}: keys {sorted(set(expected) ^ set(actual))} differ"]
        return [d for k in expected for d in differences(expected[k], actual[k], f"{path}/{k}", rtol, atol)]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if math.isclose(expected, actual, rel_tol=rtol, abs_tol=atol):
            return []
        return [f"{path}: {expected!r} != {actual!r}"]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


@pytest.fixture(scope="module")
def reference():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def current():
    return record()


def test_generated_tokens_are_the_recorded_ones(reference, current):
    assert differences(reference["generation"], current["generation"]) == []


@pytest.mark.parametrize("case", [f"{n}/dipod_beta={b}" for n in TRAINING_CASES for b in DIPOD_BETAS])
def test_loss_and_gradients_of_each_objective_are_the_recorded_ones(reference, current, case):
    expected, actual = reference["training"][case], current["training"][case]
    assert expected["iterations"][0]["loss"] != expected["iterations"][1]["loss"]  # the two masks differ
    assert differences(expected, actual) == []


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_recorded_behaviour --write")
    FIXTURE.write_text(json.dumps(record(), indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
