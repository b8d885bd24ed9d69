"""Block-by-block sampling of block-diffusion models (SDAR, LLaDA2) against the published samplers' tokens.

tests/fixtures/block_sampler_tiny holds a tiny block model and the tokens that SDAR's `block_diffusion_generate` and
LLaDA2.0's `generate` produce on it (scripts/make_block_sampler_fixtures.py, which documents how they were run). The
rest checks what the fixtures cannot: the cache against recomputation, rows against the batch, the step count of
the threshold rule, sampling frequencies, and the refusals.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dipod_trl
from dipod_trl.models import as_diffusion_lm
from dipod_trl.models.block_mask import block_causal_mask
from dipod_trl.models.tiny import TinyBlockMDLMForBlockDiffusion, build_tiny_model
from dipod_trl.sampling import GenerationStats
from dipod_trl.sampling.blocks import commit_published, generate_blocks, keep_top_k, keep_top_p, propose

FIXTURE = Path(__file__).parent / "fixtures" / "block_sampler_tiny"
PARITY = json.loads((FIXTURE / "parity.json").read_text())
CASES = {case["name"]: case for case in PARITY["cases"]}


@pytest.fixture(scope="module")
def block_model():
    return TinyBlockMDLMForBlockDiffusion.from_pretrained(FIXTURE).eval()


def left_padded(prompts, pad_id):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def case_kwargs(case):
    return dict(gen_length=case["gen_length"], block_length=case["block_length"],
                steps_per_block=case["steps_per_block"], temperature=case["temperature"], top_k=case["top_k"],
                top_p=case["top_p"], confidence_threshold=case["confidence_threshold"],
                eos_token_ids=case["eos_token_ids"])


def generators(case, rows):
    if case["temperature"] == 0:
        return None
    return [torch.Generator().manual_seed(case["rows"][r]["seed"]) for r in rows]


def check_row(case, row, ids, mask):
    """The row's completion against both references: SDAR returns the whole blocks (cut at the first EOS here), LLaDA2
    the first gen_length tokens up to the first EOS."""
    tokens = ids[mask.bool()].tolist()
    reference = case["rows"][row]
    prompt = len(PARITY["prompts"][row])
    whole = math.ceil((prompt + case["gen_length"]) / case["block_length"]) * case["block_length"] - prompt
    assert len(tokens) <= whole
    if reference["sdar"] is not None:
        assert tokens == reference["sdar"], f"{case['name']} row {row}: SDAR"
    stops = case["eos_token_ids"] and case["eos_token_ids"][0] in tokens
    assert tokens[: case["gen_length"]] == reference["llada2"], f"{case['name']} row {row}: LLaDA2.0"
    assert stops or len(tokens) == whole


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_row_alone_gives_the_published_samplers_tokens(block_model, name):
    case = CASES[name]
    for row, prompt in enumerate(PARITY["prompts"]):
        ids, mask = dipod_trl.generate(block_model, torch.tensor([prompt]), generator=generators(case, [row]),
                                       **case_kwargs(case))
        check_row(case, row, ids[0], mask[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_left_padded_batch_gives_the_published_samplers_tokens(block_model, name):
    case = CASES[name]
    prompts = PARITY["prompts"]
    ids, mask = left_padded(prompts, block_model.config.pad_token_id)
    completion_ids, completion_mask = dipod_trl.generate(
        block_model, ids, mask, generator=generators(case, range(len(prompts))), **case_kwargs(case))
    for row in range(len(prompts)):
        check_row(case, row, completion_ids[row], completion_mask[row])


def test_the_fixtures_cover_both_references():
    compared = sum(r["sdar"] is not None for c in CASES.values() for r in c["rows"])
    assert compared >= 40 and all(r["llada2"] for c in CASES.values() for r in c["rows"])
    assert any(c["eos_token_ids"] and any(c["eos_token_ids"][0] in r["llada2"] for r in c["rows"])
               for c in CASES.values()), "no EOS case stops"
    # LLaDA2.1's 0/1 block mask is no block-causal mask: its published generate is not a reference
    assert PARITY["llada21_mask"]["differ_from_block_causal"] > 0
    assert PARITY["sdar_entropy_bounded"].startswith("UnboundLocalError")


@pytest.fixture(scope="module")
def batch(tokenizer):
    prompts = [tokenizer(text).input_ids for text in ["2+2=", "what is 13*7?", "a", "hello world, dear model", "xyz"]]
    return prompts, tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")


@pytest.mark.parametrize("gen_length,block_length,steps,threshold", [(9, 4, 4, None), (12, 3, 2, 0.3), (7, 5, 5, None)])
def test_the_committed_block_cache_gives_the_tokens_of_recomputing_every_block(block_model, batch, gen_length,
                                                                                 block_length, steps, threshold):
    _, padded = batch
    lm = as_diffusion_lm(block_model)
    runs = {}
    for use_cache in (True, False):
        stats = GenerationStats()
        runs[use_cache] = generate_blocks(lm, padded["input_ids"], padded["attention_mask"], gen_length=gen_length,
                                          block_length=block_length, steps_per_block=steps,
                                          confidence_threshold=threshold, use_cache=use_cache, stats=stats), stats
    (cached, cached_stats), (recomputed, recomputed_stats) = runs[True], runs[False]
    assert torch.equal(cached[0], recomputed[0]) and torch.equal(cached[1], recomputed[1])
    assert cached_stats.positions < recomputed_stats.positions / 2


def test_cached_block_logits_equal_a_block_causal_forward(block_model):
    """A span forward over the cache reads exactly what a full forward under the block-causal mask computes."""
    lm = as_diffusion_lm(block_model)
    torch.manual_seed(0)
    x = torch.randint(0, 100, (2, 12))
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[1, :4] = False
    positions = (torch.arange(12) - 4 * (~valid[:, :1]).long()).clamp(min=0)
    full = block_model(x, attention_mask=block_causal_mask(valid, 4), position_ids=positions).logits
    from dipod_trl.models.kv_cache import CommittedBlocksCache

    cache = CommittedBlocksCache()
    for start in range(0, 12, 4):
        cache.appending = True
        span = lm.model(x[:, start:start + 4], attention_mask=block_causal_mask(valid, 4, start, start + 4),
                        position_ids=positions[:, start:start + 4], past_key_values=cache,
                        cache_position=torch.arange(start, start + 4)).logits
        rows = valid[:, start].nonzero().squeeze(1)
        torch.testing.assert_close(span[rows], full[rows, start:start + 4], rtol=1e-5, atol=1e-5)
    # block-causal: changing the last block leaves the earlier blocks' logits as they are
    y = x.clone()
    y[:, 8:] = 7
    changed = block_model(y, attention_mask=block_causal_mask(valid, 4), position_ids=positions).logits
    torch.testing.assert_close(changed[:, :8], full[:, :8])
    assert not torch.allclose(changed[:, 8:], full[:, 8:])


def test_published_alignment_lengths_and_padding(block_model, batch):
    prompts, padded = batch
    ids, mask = dipod_trl.generate(block_model, padded["input_ids"], padded["attention_mask"], gen_length=6,
                                   block_length=4, steps_per_block=2, eos_token_ids=[])
    for row, prompt in enumerate(prompts):
        whole = math.ceil((len(prompt) + 6) / 4) * 4 - len(prompt)
        assert int(mask[row].sum()) == whole and mask[row, :whole].all()
        assert (ids[row, whole:] == block_model.config.pad_token_id).all()
    assert ids.shape[1] == max(math.ceil((len(p) + 6) / 4) * 4 - len(p) for p in prompts)


def test_steps_in_total_mean_steps_per_block_times_blocks(block_model, batch, tiny_lm):
    _, padded = batch
    args = (padded["input_ids"], padded["attention_mask"])
    per_block = dipod_trl.generate(block_model, *args, gen_length=8, block_length=4, steps_per_block=2)
    total = dipod_trl.generate(block_model, *args, gen_length=8, block_length=4, steps=4)
    assert all(torch.equal(a, b) for a, b in zip(per_block, total))
    # LLaDA / Dream: steps_per_block=N is steps = N x blocks
    llada = dipod_trl.generate(tiny_lm, *args, gen_length=8, block_length=4, steps_per_block=3)
    assert all(torch.equal(a, b) for a, b in zip(llada, dipod_trl.generate(tiny_lm, *args, gen_length=8,
                                                                            block_length=4, steps=6)))


def test_threshold_rule_commits_above_threshold_only_when_the_schedule_count_clears_it():
    masked = torch.tensor([[True, True, True, False], [True, True, True, True], [True, False, False, False]])
    confidence = torch.tensor([[0.9, 0.8, 0.1, 0.99], [0.9, 0.2, 0.3, 0.1], [0.1, 0.9, 0.9, 0.9]], dtype=torch.float64)
    committed = commit_published(confidence, masked, scheduled=2, threshold=0.5)
    # row 0: two above 0.5 clear the count of 2, both go (the filled 0.99 never counts); row 1: one above, so the
    # scheduled two most confident; row 2: one mask left, committed although the count is 2
    assert committed.tolist() == [[True, True, False, False], [True, False, True, False], [True, False, False, False]]
    assert commit_published(confidence, masked, 2, None).tolist() == committed.tolist()
    everything = commit_published(confidence, masked, scheduled=1, threshold=0.05)
    assert everything.tolist() == masked.tolist()


def test_threshold_takes_fewer_forwards(block_model, batch):
    _, padded = batch
    args = (padded["input_ids"], padded["attention_mask"])
    counts = []
    for threshold in (None, 0.2):
        *_, stats = dipod_trl.generate(block_model, *args, gen_length=16, block_length=8, steps_per_block=8,
                                       confidence_threshold=threshold, eos_token_ids=[], return_stats=True)
        counts.append(stats.forwards)
    assert counts[1] < counts[0]


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert torch.isinf(keep_top_k(logits, 2)).tolist() == [[False, True, False, True]]
    probs = F.softmax(logits, -1)[0].tolist()  # 0.64, 0.09, 0.24, 0.03
    kept = ~torch.isinf(keep_top_p(logits, probs[0] + 0.01))  # the first token is below p: the second one is kept
    assert kept.tolist() == [[True, False, True, False]]
    assert (~torch.isinf(keep_top_p(logits, probs[0] - 0.01))).tolist() == [[True, False, False, False]]


def test_sampling_follows_the_filtered_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 6) * 2
    temperature, top_k = 0.7, 4
    expected = F.softmax(keep_top_k(logits[0, 0] / temperature, top_k), -1)
    draws = 20000
    generator = torch.Generator().manual_seed(1)
    tokens = torch.stack([propose(logits, temperature, top_k, None, generator)[0][0, 0] for _ in range(draws)])
    frequencies = torch.bincount(tokens, minlength=6).double() / draws
    standard_error = (expected.double() * (1 - expected.double()) / draws).sqrt()
    assert ((frequencies - expected).abs() <= 5 * standard_error + 1e-12).all()
    x0, confidence = propose(logits.expand(1, 2, 6), temperature, top_k, None, generator)
    torch.testing.assert_close(confidence, expected[x0].float())


def test_greedy_confidence_is_the_float64_probability_of_the_argmax():
    logits = torch.tensor([[[1.0, 4.0, 2.0]]])
    x0, confidence = propose(logits, 0.0, None, None, None)
    assert x0.item() == 1 and confidence.dtype == torch.float64
    assert confidence.item() == pytest.approx(F.softmax(logits.double(), -1)[0, 0, 1].item(), rel=1e-15)


def test_rows_stop_at_eos_and_keep_every_token_before_it(block_model, batch):
    prompts, padded = batch
    args = (padded["input_ids"], padded["attention_mask"])
    free, _ = dipod_trl.generate(block_model, *args, gen_length=24, block_length=4, steps_per_block=4,
                                 eos_token_ids=[])
    stop = int(torch.bincount(free[:, 2:].flatten()).argmax())
    ids, mask, stats = dipod_trl.generate(block_model, *args, gen_length=24, block_length=4, steps_per_block=4,
                                          eos_token_ids=[stop], return_stats=True)
    *_, free_stats = dipod_trl.generate(block_model, *args, gen_length=24, block_length=4, steps_per_block=4,
                                        eos_token_ids=[], return_stats=True)
    stopped = 0
    for row in range(len(prompts)):
        tokens = free[row].tolist()
        if stop in tokens:
            end = tokens.index(stop) + 1
            stopped += 1
            assert ids[row, :end].tolist() == tokens[:end] and int(mask[row].sum()) == end
            assert (ids[row, end:] == stop).all()
    assert stopped >= 2 and stats.positions < free_stats.positions


@pytest.mark.parametrize("kwargs,option", [
    (dict(remasking="margin"), "remasking"), (dict(cfg_scale=1.0), "cfg_scale"), (dict(kv_cache="prefix"), "kv_cache"),
    (dict(editing_threshold=0.9), "editing_threshold"), (dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(steps=4, steps_per_block=2), "steps_per_block"), (dict(steps=3), "steps"),
])
def test_block_options_refused_with_the_option_named(block_model, kwargs, option):
    kwargs = {"steps_per_block": 2, **kwargs}
    with pytest.raises(ValueError, match=option):
        dipod_trl.generate(block_model, torch.tensor([[5, 6, 7]]), gen_length=8, block_length=4, **kwargs)


def test_block_only_options_refused_for_llada(tiny_lm):
    with pytest.raises(ValueError, match="top_k applies to block-diffusion models"):
        dipod_trl.generate(tiny_lm, torch.tensor([[5, 6, 7]]), gen_length=8, block_length=4, steps=4, top_k=5)


def test_a_fresh_tiny_block_model_decodes_with_its_tokenizer(tokenizer):
    model = build_tiny_model(tokenizer, block_causal=True)
    ids, mask = dipod_trl.generate(model, torch.tensor([tokenizer("12+3=").input_ids]), gen_length=5, block_length=4,
                                   steps_per_block=4)
    assert ids.shape[0] == 1 and int(mask.sum()) >= 1


PUBLISHED = {family: json.loads((FIXTURE / f"published_{family}.json").read_text()) for family in ("sdar", "llada2")}


@pytest.mark.parametrize("family", sorted(PUBLISHED))
def test_native_models_give_the_published_sampler_on_the_published_model_class(family):
    """The fixtures of scripts/make_block_sampler_fixtures.py --published: SDAR's `block_diffusion_generate` on the
    published SDAR class, LLaDA2.0's `generate` on the published LLaDA2 class, both on the tiny checkpoints of
    tests/fixtures/{sdar,llada2}_tiny; here the native classes load those checkpoints."""
    from dipod_trl.models import load_diffusion_model

    fixture = PUBLISHED[family]
    checkpoint = Path(__file__).parent / "fixtures" / fixture["checkpoint"]
    if not (checkpoint / "model.safetensors").exists():
        pytest.skip(f"{checkpoint.name}: the native-model parity checkpoint is not in this tree")
    model = load_diffusion_model(str(checkpoint), dtype=torch.float32).eval()
    prompts, pad = fixture["prompts"], model.config.eos_token_id
    compared = 0
    for case in fixture["cases"]:
        kwargs = dict(gen_length=case["gen_length"], block_length=case["block_length"],
                      steps_per_block=case["steps_per_block"], temperature=case["temperature"],
                      confidence_threshold=case["confidence_threshold"], eos_token_ids=[])
        ids, mask = left_padded(prompts, pad)
        seeds = [torch.Generator().manual_seed(row["seed"]) for row in case["rows"]]
        batch_ids, batch_mask = dipod_trl.generate(model, ids, mask, generator=seeds, **kwargs)
        for row, prompt in enumerate(prompts):
            expected = case["rows"][row]["tokens"]
            if expected is None:  # SDAR overwrote a filled position
                continue
            alone, _ = dipod_trl.generate(model, torch.tensor([prompt]), **kwargs,
                                          generator=[torch.Generator().manual_seed(case["rows"][row]["seed"])])
            for tokens in (alone[0].tolist(), batch_ids[row][batch_mask[row].bool()].tolist()):
                assert tokens[: len(expected)] == expected, f"{family} {case['name']} row {row}"
            compared += 1
    assert compared >= 12
