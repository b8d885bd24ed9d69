"""The models compute what they computed when tests/fixtures/model_reference.safetensors was recorded: logits of the
tiny model (float32 and float64), the LLaDA and Dream fixtures (float32 and bf16), with and without padding, through
the adapter, with the block key/value cache, and the tokens `generate` produces from them. The recording comes from
another CPU, so logits compare within the rounding of another kernel set (`TOLERANCE`, measured) and tokens where
rounding cannot flip them (`tests/helpers/rounding.py`).

Record again (only for an intended change of the numbers): `python -m tests.test_model_reference`.
"""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import dipod_trl
from dipod_trl.models import as_diffusion_lm, build_tiny_tokenizer, load_diffusion_model, load_diffusion_tokenizer
from tests.helpers.models import make_tiny_model
from tests.helpers.rounding import stable_positions

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "model_reference.safetensors"
KEPT_LOGITS = 8  # vocabulary entries stored per position; the log-normaliser over all entries covers the rest


def _summary(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first logits of each position and the float64 log-normaliser over the whole vocabulary (any change of any
    entry changes its bits), so that the file stays small."""
    logits = logits.detach()
    return {"head": logits[..., :KEPT_LOGITS].clone(), "lse": logits.double().logsumexp(-1)}


def _inputs(vocab: int, mask_id: int, pad_id: int):
    """Two rows of 14 tokens with masks, the same rows padded (row 0 left by 3, row 1 right by 2 then 1 more)."""
    generator = torch.Generator().manual_seed(11)
    ids = torch.randint(3, min(vocab, 100), (2, 14), generator=generator)
    ids[0, [2, 8, 9]] = mask_id
    ids[1, [0, 6, 13]] = mask_id
    padded = torch.full((2, 17), pad_id)
    padded[0, 3:] = ids[0]
    padded[1, :14] = ids[1]
    mask = torch.zeros_like(padded)
    mask[0, 3:] = 1
    mask[1, :14] = 1
    return ids, padded, mask


@torch.no_grad()
def _logit_cases(name: str, model, tokenizer) -> dict[str, torch.Tensor]:
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids, padded, mask = _inputs(config.vocab_size, config.mask_token_id, pad)
    lm = as_diffusion_lm(model, tokenizer)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    full = model(padded, attention_mask=mask, position_ids=positions, use_cache=True)
    span = model(padded[:, 5:11], attention_mask=mask, position_ids=positions[:, 5:11], past_key_values=full.cache,
                 cache_position=torch.arange(5, 11)).logits
    cases = {
        "plain": model(ids).logits,
        "ones_mask": model(ids, attention_mask=torch.ones_like(ids)).logits,
        "padded": model(padded, attention_mask=mask).logits,
        "cached_full": full.logits,
        "span": span,
        "adapter": lm.logits(padded, mask),
        "adapter_span": lm.span_logits(padded, mask, lm.logits_and_cache(padded, mask)[1], 6, 12),
    }
    out = {}
    for case, logits in cases.items():
        for part, value in _summary(logits).items():
            out[f"{name}/{case}/{part}"] = value
    return out


def _generation_runs(model, tokenizer, prompt_ids, prompt_mask) -> dict[str, Callable[[], torch.Tensor]]:
    """Each recorded `generate` call; every call builds its own generators, so it draws the same numbers each time."""
    schedule = dict(gen_length=8, block_length=4, steps=8, tokenizer=tokenizer, stop_at_eos=False)
    settings = {
        "greedy": {},
        "dual": dict(kv_cache="dual"),
        "prefix_refresh2": dict(kv_cache="prefix", cache_refresh_steps=2),
        "threshold": dict(confidence_threshold=0.5, kv_cache="dual"),
    }
    runs = {run: (lambda kwargs=kwargs: dipod_trl.generate(model, prompt_ids, prompt_mask, **schedule, **kwargs)[0])
            for run, kwargs in settings.items()}
    runs["sampled"] = lambda: dipod_trl.generate(
        model, prompt_ids, prompt_mask, **schedule, temperature=1.0, remasking="random",
        generator=[torch.Generator().manual_seed(5 + row) for row in range(prompt_ids.shape[0])])[0]
    return runs


def _generation_cases(name: str, model, tokenizer, prompt_ids, prompt_mask, stable=None) -> dict[str, torch.Tensor]:
    """The generated tokens; with `stable` (a dict), also where rounding cannot flip them (`stable_positions`)."""
    out = {}
    for run, call in _generation_runs(model, tokenizer, prompt_ids, prompt_mask).items():
        key = f"{name}/generate/{run}"
        if stable is None:
            out[key] = call()
        else:
            out[key], stable[key] = stable_positions(call, model)
    return out


def compute_reference(stable: dict | None = None) -> dict[str, torch.Tensor]:
    """Every recorded number, computed by the current code; `stable` (a dict) receives, per generation case, where
    its tokens hold under perturbed logits."""
    out = {}
    tokenizer = build_tiny_tokenizer()
    tiny = make_tiny_model(len(tokenizer), seed=4, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    prompts = tokenizer(["sort: 31415", "sort: 9"], return_tensors="pt", padding=True)
    out.update(_logit_cases("tiny", tiny, tokenizer))
    out.update(_generation_cases("tiny", tiny, tokenizer, prompts.input_ids, prompts.attention_mask, stable))
    out.update(_logit_cases("tiny64", make_tiny_model(len(tokenizer), seed=4, pad_token_id=tokenizer.pad_token_id,
                                                      eos_token_id=tokenizer.eos_token_id).double(), tokenizer))
    for family in ("llada", "dream"):
        path = str(FIXTURES / f"{family}_tiny")
        tokenizer = load_diffusion_tokenizer(path)
        model = load_diffusion_model(path).eval()
        prompts = tokenizer(["sort: 31415", "sort: 9"], return_tensors="pt", padding=True)
        out.update(_logit_cases(family, model, tokenizer))
        out.update(_generation_cases(family, model, tokenizer, prompts.input_ids, prompts.attention_mask, stable))
        half = load_diffusion_model(path, dtype=torch.bfloat16).eval()
        out.update({k: v for k, v in _logit_cases(f"{family}_bf16", half, tokenizer).items() if "/padded/" in k})
    return {key: value.contiguous() for key, value in out.items()}


# The largest difference from the recording that kernel rounding may cause: |computed - recorded| at most this
# fraction of the recorded tensor's largest |value|. float32 and float64 (the rotary angles are float32 in both):
# measured at most 2.9e-6 (tiny model; LLaDA and Dream fixtures 3.2e-7; portable kernels and this machine's AVX2
# kernels against the recording), while small real changes of the model code move them by 1e-3 or more (the
# normalisation's eps x 10: 1.9e-3 tiny, 1.2e-2 LLaDA, 9.8e-4 Dream; rope_theta x 1.01: 2.6e-3 tiny). bf16: rounding
# alone measured 5.0e-3 (one unit in the last place of bf16's 8 bits), as large as those changes (4.6e-3-1.5e-2), so
# the bf16 cases catch only changes of several percent (a wrong cast, a lost mask); the float32 cases of the same
# code catch the small ones.
TOLERANCE = {"float": 5e-5, "bf16": 3e-2}
MIN_STABLE_TOKENS = 12  # of each case's 16: measured 16 of 16 on every case, so the token comparison cannot go vacuous


@pytest.fixture(scope="module")
def computed():
    stable = {}
    return compute_reference(stable), stable


def test_reference_holds_every_case(computed):
    assert set(load_file(str(REFERENCE))) == set(computed[0])


@pytest.mark.parametrize("family", ["tiny", "tiny64", "llada", "llada_bf16", "dream", "dream_bf16"])
def test_models_compute_the_recorded_numbers_within_kernel_rounding(computed, family):
    """Every recorded logit summary within `TOLERANCE` of its recording (relative to the tensor's largest |value|)."""
    tolerance = TOLERANCE["bf16" if family.endswith("_bf16") else "float"]
    recorded = load_file(str(REFERENCE)).items()
    reference = {k: v for k, v in recorded if k.split("/")[0] == family and v.is_floating_point()}
    assert reference
    for key, expected in reference.items():
        actual = computed[0][key]
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, key
        error = (actual.double() - expected.double()).abs().max() / expected.double().abs().max()
        assert error <= tolerance, f"{key}: {error.item():.2e} of the largest |value| (tolerance {tolerance:.0e})"


@pytest.mark.parametrize("family", ["tiny", "llada", "dream"])
def test_generated_tokens_are_the_recorded_ones_where_rounding_cannot_flip_them(computed, family):
    """Generated tokens equal the recorded ones at every position whose decisions hold under logits perturbed far
    beyond kernel rounding (`tests.helpers.rounding.stable_positions`); at least `MIN_STABLE_TOKENS` positions a
    case."""
    reference = {k: v for k, v in load_file(str(REFERENCE)).items() if k.startswith(f"{family}/generate/")}
    assert len(reference) == 5
    tokens, stable = computed
    for key, expected in reference.items():
        assert tokens[key].shape == expected.shape and int(stable[key].sum()) >= MIN_STABLE_TOKENS, key
        assert torch.equal(tokens[key][stable[key]], expected[stable[key]]), key


if __name__ == "__main__":
    torch.set_num_threads(1)
    save_file(compute_reference(), str(REFERENCE))
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KiB)")
