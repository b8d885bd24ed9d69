"""The trainer's loss and gradients and the sampler's tokens against values recorded in float64 on fixed seeds.

`tests/fixtures/recorded_behaviour.json` holds, for each objective with and without DiPOD: the generation batch the
trainer builds (completions, advantages, masks, old and reference scores), the loss of both inner iterations after the
policy has moved, and per-parameter digests of the gradients (sum, norm, and the dot product with a fixed vector);
and the tokens of short `generate` calls (exact, with the block cache, with a confidence threshold, sampled).
Refactoring must leave all of them unchanged. The recording comes from another CPU, whose kernels round differently:
floats compare within `TOLERANCE` (measured: it separates kernel rounding from a 1% change of a coefficient),
integers exactly, and the tokens of the `generate` calls where rounding cannot flip them
(`tests/helpers/rounding.py`). The trainer's completions (sampled at T=1) compare exactly: each of their decisions
holds under logits perturbed far beyond kernel rounding (`tests/helpers/rounding.py`'s bound, checked when this was
written).

Regenerate (only when a change of behaviour is intended, and say so in the commit):
`python -m tests.test_recorded_behaviour --write`.
"""

from __future__ import annotations

import json
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
from tests.helpers.rounding import stable_positions
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


def record_generation(tokenizer, stable: dict | None = None) -> dict:
    """The tokens of each generation case; with `stable` (a dict), also where rounding cannot flip them."""
    model = tiny_model(tokenizer, 1, 0.3).eval()
    prompt_ids = torch.tensor([[tokenizer.pad_token_id, 5, 6, 7], [8, 9, 10, 11]])
    attention_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    out = {}
    for name, kwargs in GENERATION_CASES.items():
        def run(kwargs=kwargs):
            generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
            ids, mask = dipod_trl.generate(model, prompt_ids, attention_mask, gen_length=12, block_length=4, steps=12,
                                           generator=generators, **kwargs)
            return torch.stack([ids, mask])

        if stable is None:
            ids, mask = run()
        else:
            (ids, mask), stable[name] = stable_positions(run, model)
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


# The largest difference from the recording that kernel rounding may cause, as a fraction of the largest |value| of
# the number's group (a recorded tensor, one parameter's gradient digest, the losses of one case). Measured: at most
# 2.8e-6 (the losses; gradient digests 2.6e-6, old and reference scores 8.5e-8) with the portable kernels against the
# recording, where a 1% change of a coefficient moves them by far more (the KL beta 0.04 -> 0.0404: gradients 4.3e-4
# with FPO, 2.1e-3 with diffu-GRPO; dipod_beta 0.05 -> 0.0505: losses 8.8e-3 with FPO, 1.0e-2 with SPG).
TOLERANCE = 3e-5


def _floats(value) -> list[float]:
    if isinstance(value, (list, dict)):
        return [x for v in (value.values() if isinstance(value, dict) else value) for x in _floats(v)]
    return [abs(value)] if isinstance(value, float) else []


def differences(expected, actual, path="", scale=None):
    """Paths where two nested records differ: integers and strings at all, floats by more than `TOLERANCE` x the
    largest |value| of their group (the list they belong to; the losses of a case count as one group)."""
    if isinstance(expected, dict):
        if set(expected) != set(actual):
            return [f"{path}: keys {sorted(set(expected) ^ set(actual))} differ"]
        return [d for k in expected for d in differences(expected[k], actual[k], f"{path}/{k}", scale)]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        group = [item["loss"] for item in expected] if path.endswith("/iterations") else expected
        scale = max(_floats(group), default=0.0)
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{path}[{i}]", scale)]
    if isinstance(expected, float) or isinstance(actual, float):
        if abs(expected - actual) <= TOLERANCE * (scale or abs(expected)):
            return []
        return [f"{path}: {expected!r} != {actual!r}"]
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


@pytest.fixture(scope="module")
def reference():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def current():
    return record()


MIN_STABLE_TOKENS = 18  # of each case's 24: measured 24 of 24 in every case, so the comparison cannot go vacuous


def test_generated_tokens_are_the_recorded_ones_where_rounding_cannot_flip_them(reference):
    """Each generation case's tokens and completion mask equal the recorded ones wherever its decisions hold under
    logits perturbed far beyond kernel rounding (`tests.helpers.rounding.stable_positions`; a mask entry where every
    token up to it holds), on at least `MIN_STABLE_TOKENS` positions a case."""
    stable = {}
    current = record_generation(build_tiny_tokenizer(), stable)
    assert set(current) == set(reference["generation"])
    for name, expected in reference["generation"].items():
        ids, mask = (torch.tensor(current[name][k]) for k in ("completion_ids", "completion_mask"))
        ids_held, mask_held = stable[name][0], stable[name][0].cumprod(-1).bool()
        assert int(ids_held.sum()) >= MIN_STABLE_TOKENS, name
        assert torch.equal(ids[ids_held], torch.tensor(expected["completion_ids"])[ids_held]), name
        assert torch.equal(mask[mask_held], torch.tensor(expected["completion_mask"])[mask_held]), name


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
