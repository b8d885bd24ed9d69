"""Fast decoding: the block key/value cache (span forwards) and confidence-threshold parallel decoding."""

import warnings

import pytest
import torch

import dipod_trl
from dipod_trl.models import DiffusionLM, TinyMDLMForMaskedDiffusion
from dipod_trl.models.protocol import padded_positions
from dipod_trl.sampling import _WARNED_NO_CACHE
from tests.helpers.models import make_tiny_model

PROMPTS = ["2+2=", "what is 13*7?", "a", "hello world"]


def padded_batch(tokenizer, texts=PROMPTS):
    batch = tokenizer.pad({"input_ids": [tokenizer(t).input_ids for t in texts]}, return_tensors="pt",
                          padding_side="left")
    return batch["input_ids"], batch["attention_mask"]


def random_canvas(tokenizer, model, gen_length=12):
    """A padded batch of prompts followed by a canvas that is partly masked."""
    prompt_ids, prompt_mask = padded_batch(tokenizer)
    torch.manual_seed(0)
    canvas = torch.randint(10, 90, (len(PROMPTS), gen_length))
    canvas[torch.rand(canvas.shape) < 0.5] = model.config.mask_token_id
    ids = torch.cat([prompt_ids, canvas], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(canvas)], dim=1)
    return ids, mask


@pytest.mark.parametrize("span", [(0, 5), (7, 13), (13, 25), (20, 25), (0, 25)])
def test_span_forward_logits_equal_full_forward_logits(tiny_lm, tokenizer, span):
    """With the cache of the same sequence, a span forward recomputes exactly the full forward's logits of the span."""
    ids, mask = random_canvas(tokenizer, tiny_lm)
    assert ids.shape[1] == 25
    positions = padded_positions(mask)
    with torch.no_grad():
        full = tiny_lm(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        plain = tiny_lm(ids, attention_mask=mask).logits
        start, end = span
        part = tiny_lm(ids[:, start:end], attention_mask=mask, position_ids=positions[:, start:end],
                       past_key_values=full.cache, cache_position=torch.arange(start, end)).logits
    assert torch.equal(full.logits, plain)  # recording the cache changes nothing
    assert len(full.cache) == tiny_lm.config.num_hidden_layers and full.cache.seq_length == 25
    real = mask[:, start:end].bool()  # padded positions' logits are never read
    torch.testing.assert_close(part[real], full.logits[:, start:end][real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift_logits", [False, True])
@pytest.mark.parametrize("span", [(0, 6), (14, 19), (14, 25)])
def test_adapter_span_logits_align_like_full_logits(tiny_lm, tokenizer, shift_logits, span):
    """`DiffusionLM.span_logits` returns the aligned logits of the span, also for models with shifted logits (the
    score of position i comes from hidden state i-1, so the span recomputed starts one position earlier)."""
    lm = DiffusionLM(tiny_lm, mask_token_id=tiny_lm.config.mask_token_id, shift_logits=shift_logits)
    ids, mask = random_canvas(tokenizer, tiny_lm)
    with torch.no_grad():
        full, cache = lm.logits_and_cache(ids, mask)
        part = lm.span_logits(ids, mask, cache, *span)
        reference = lm.logits(ids, mask)
    start, end = span
    assert part.shape[1] == end - start
    torch.testing.assert_close(full, reference, atol=1e-5, rtol=1e-5)
    real = mask[:, start:end].bool()
    torch.testing.assert_close(part[real], reference[:, start:end][real], atol=1e-5, rtol=1e-5)


SCHEDULES = [dict(gen_length=12, block_length=4, steps=12), dict(gen_length=12, block_length=6, steps=6),
             dict(gen_length=8, block_length=8, steps=8)]


def one_layer_model(tokenizer, seed=3):
    """In a one-layer model the cached keys/values are functions of the tokens alone, and the tokens outside the
    current block do not change while it is decoded: so the cache, refreshed or not, must give exact decoding."""
    return make_tiny_model(len(tokenizer), seed=seed, num_hidden_layers=1, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_cache_refreshed_inside_blocks_equals_exact_decoding_on_one_layer(tokenizer, kv_cache, schedule):
    """Span forwards and mid-block refreshes interleave, with rows stopping at EOS ids the model produces (their cache
    leaves with them): token for token the exact decoding."""
    model = one_layer_model(tokenizer)
    prompt_ids, mask = padded_batch(tokenizer)
    eos = dict(eos_token_ids=[40, 41, 42])
    exact, exact_mask = dipod_trl.generate(model, prompt_ids, mask, **schedule, **eos)
    cached, cached_mask, stats = dipod_trl.generate(model, prompt_ids, mask, **schedule, **eos, kv_cache=kv_cache,
                                                    cache_refresh_steps=2, return_stats=True)
    assert torch.equal(cached, exact) and torch.equal(cached_mask, exact_mask)
    blocks = schedule["gen_length"] // schedule["block_length"]
    assert stats.span_forwards > 0 and stats.full_forwards > blocks  # both paths ran, refreshes inside blocks too


def test_cache_with_refresh_equals_exact_sampling_on_one_layer(tokenizer):
    """With temperature and per-row generators too: the cached path draws the same random numbers."""
    model = one_layer_model(tokenizer)
    prompt_ids, mask = padded_batch(tokenizer)
    schedule = dict(gen_length=12, block_length=4, steps=12, temperature=1.0, remasking="random")
    runs = []
    for kwargs in ({}, {"kv_cache": "dual", "cache_refresh_steps": 2, "return_stats": True}):
        generators = [torch.Generator().manual_seed(s) for s in range(len(PROMPTS))]
        runs.append(dipod_trl.generate(model, prompt_ids, mask, **schedule, generator=generators, **kwargs))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[1][2].span_forwards > 0


def test_a_deeper_model_with_a_stale_cache_computes_other_logits(tiny_lm, tokenizer):
    """The one-layer equality is not a cache that is never read: with two layers, span logits over a cache of a
    partly decoded block differ from the full forward's."""
    lm = DiffusionLM(tiny_lm, mask_token_id=tiny_lm.config.mask_token_id)
    ids, mask = random_canvas(tokenizer, tiny_lm)
    with torch.no_grad():
        _, cache = lm.logits_and_cache(ids, mask)
        decoded = ids.clone()
        decoded[:, 13:17] = 50  # the block's tokens change; the cache still holds the masked ones
        stale = lm.span_logits(decoded, mask, cache, 13, 17)
        exact = lm.logits(decoded, mask)[:, 13:17]
    one = DiffusionLM(one_layer_model(tokenizer), mask_token_id=tiny_lm.config.mask_token_id)
    with torch.no_grad():
        _, one_cache = one.logits_and_cache(ids, mask)
        one_span = one.span_logits(decoded, mask, one_cache, 13, 17)
        one_exact = one.logits(decoded, mask)[:, 13:17]
    assert (stale - exact).abs().max() > 1e-3
    torch.testing.assert_close(one_span, one_exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift_logits", [False, True])
@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
@pytest.mark.parametrize("schedule", SCHEDULES[:2])
def test_one_layer_model_cache_is_exact_without_refresh(tokenizer, kv_cache, schedule, shift_logits):
    """In a one-layer model the cached keys/values are functions of the tokens alone, and the tokens outside the
    current block do not change while it is decoded: so the cache, never refreshed inside a block, must give exact
    decoding. This checks that span forwards read the right cached positions, also through the adapter's handling of
    shifted logits (Dream-style: position i scored from hidden state i-1)."""
    model = one_layer_model(tokenizer)
    model = DiffusionLM(model, mask_token_id=model.config.mask_token_id, shift_logits=shift_logits)
    prompt_ids, mask = padded_batch(tokenizer)
    exact, _ = dipod_trl.generate(model, prompt_ids, mask, **schedule, stop_at_eos=False)
    cached, _, stats = dipod_trl.generate(model, prompt_ids, mask, **schedule, stop_at_eos=False, kv_cache=kv_cache,
                                          return_stats=True)
    assert torch.equal(cached, exact)
    assert stats.span_forwards > 0


@pytest.mark.parametrize("kv_cache,refresh", [(None, None), ("prefix", None), ("dual", None), ("dual", 2)])
def test_forward_counts_and_recomputed_positions(tiny_lm, tokenizer, kv_cache, refresh):
    """Without early stopping, the counts follow from the schedule: one forward per step; a full forward at each
    block's first step (and every `refresh` steps); span forwards over the block and (prefix) what follows it."""
    prompt_ids, mask = padded_batch(tokenizer)
    rows, prompt_length = prompt_ids.shape
    gen_length, block_length, steps = 12, 4, 12
    _, _, stats = dipod_trl.generate(tiny_lm, prompt_ids, mask, gen_length=gen_length, block_length=block_length,
                                     steps=steps, stop_at_eos=False, kv_cache=kv_cache, cache_refresh_steps=refresh,
                                     return_stats=True)
    total = prompt_length + gen_length
    full = positions = 0
    for block in range(gen_length // block_length):
        start = prompt_length + block * block_length
        for step in range(steps // (gen_length // block_length)):
            if kv_cache is None or step == 0 or (refresh and step % refresh == 0):
                full += 1
                positions += rows * total
            else:
                positions += rows * (block_length if kv_cache == "dual" else total - start)
    assert (stats.forwards, stats.full_forwards, stats.positions) == (steps, full, positions)


@pytest.mark.parametrize("kv_cache", [None, "dual"])
@pytest.mark.parametrize("steps", [12, 6])
def test_unreachable_threshold_is_the_fixed_schedule(tiny_lm, tokenizer, kv_cache, steps):
    """No probability exceeds 1.0: the threshold commits the fixed schedule's count (one token per step when
    steps = gen_length), so the output equals decoding without a threshold."""
    prompt_ids, mask = padded_batch(tokenizer)
    schedule = dict(gen_length=12, block_length=4, steps=steps, kv_cache=kv_cache)
    fixed, _, s_fixed = dipod_trl.generate(tiny_lm, prompt_ids, mask, **schedule, return_stats=True)
    thresholded, _, s_threshold = dipod_trl.generate(tiny_lm, prompt_ids, mask, **schedule, confidence_threshold=1.0,
                                                     return_stats=True)
    assert torch.equal(thresholded, fixed)
    assert s_threshold.forwards == s_fixed.forwards


def test_threshold_every_prediction_reaches_fills_each_block_in_one_step(tiny_lm, tokenizer):
    """A threshold below every probability commits the whole block at its first step: one forward per block, and the
    block holds the argmax of that forward (brute force: one full forward per block)."""
    prompt_ids, mask = padded_batch(tokenizer)
    gen_length, block_length = 12, 4
    ids, _, stats = dipod_trl.generate(tiny_lm, prompt_ids, mask, gen_length=gen_length, block_length=block_length,
                                       steps=12, confidence_threshold=1e-12, stop_at_eos=False, return_stats=True)
    assert stats.forwards == gen_length // block_length
    x = torch.cat([prompt_ids, torch.full((len(PROMPTS), gen_length), tiny_lm.config.mask_token_id)], dim=1)
    attention = torch.cat([mask, torch.ones(len(PROMPTS), gen_length, dtype=mask.dtype)], dim=1)
    start = prompt_ids.shape[1]
    with torch.no_grad():
        for s in range(start, start + gen_length, block_length):
            x[:, s:s + block_length] = tiny_lm(x, attention_mask=attention).logits[:, s:s + block_length].argmax(-1)
    assert torch.equal(ids, x[:, start:])


def test_threshold_stays_within_the_step_budget(tiny_lm, tokenizer):
    """A middling threshold takes at most `steps` forwards and fills every position."""
    prompt_ids, mask = padded_batch(tokenizer)
    for steps in (12, 6, 3):
        ids, _, stats = dipod_trl.generate(tiny_lm, prompt_ids, mask, gen_length=12, block_length=4, steps=steps,
                                           confidence_threshold=0.3, stop_at_eos=False, return_stats=True)
        assert stats.forwards <= steps
        assert (ids != tiny_lm.config.mask_token_id).all()


@pytest.mark.parametrize(
    "kwargs",
    [dict(kv_cache="dual", confidence_threshold=0.5), dict(kv_cache="prefix"), dict(confidence_threshold=0.9)],
)
def test_padded_batch_gives_the_rows_of_unpadded_prompts_with_fast_decoding(tiny_lm, tokenizer, kwargs):
    """Each row of a left-padded batch equals that prompt generated alone, also with the cache and the threshold, and
    with rows leaving the batch at different steps (EOS ids that the model produces mid-completion)."""
    prompt_ids, mask = padded_batch(tokenizer)
    schedule = dict(gen_length=16, block_length=4, steps=16, eos_token_ids=[40, 41, 42], **kwargs)
    batched, batched_mask = dipod_trl.generate(tiny_lm, prompt_ids, mask, **schedule)
    for row, text in enumerate(PROMPTS):
        alone, alone_mask = dipod_trl.generate(tiny_lm, torch.tensor([tokenizer(text).input_ids]), **schedule)
        assert torch.equal(batched[row], alone[0]), text
        assert torch.equal(batched_mask[row], alone_mask[0])
    assert (batched_mask == 0).any()  # some rows did stop early


class NoCacheTinyModel(TinyMDLMForMaskedDiffusion):
    supports_block_kv_cache = False


def test_model_without_cache_support_decodes_exactly_with_one_warning(tiny_lm, tokenizer):
    model = NoCacheTinyModel(tiny_lm.config).eval()
    model.load_state_dict(tiny_lm.state_dict())
    prompt_ids, mask = padded_batch(tokenizer)
    schedule = dict(gen_length=8, block_length=4, steps=8)
    _WARNED_NO_CACHE.discard("NoCacheTinyModel")
    with pytest.warns(UserWarning, match="NoCacheTinyModel does not implement the block key/value cache"):
        ids, _, stats = dipod_trl.generate(model, prompt_ids, mask, **schedule, kv_cache="dual", return_stats=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shown once only
        dipod_trl.generate(model, prompt_ids, mask, **schedule, kv_cache="dual")
    assert stats.span_forwards == 0
    assert torch.equal(ids, dipod_trl.generate(tiny_lm, prompt_ids, mask, **schedule)[0])


# Reachable from the config, the trainer and the command line (bad values: tests/test_options.py).


def test_trainer_generates_with_the_cache_scores_exactly_and_logs_forwards(tokenizer, tmp_path):
    """The trainer passes the options to the sampler (on a one-layer model the cache with refreshes gives the exact
    generation batch, scores included: scoring never uses the cache) and logs the forward counts of its rollouts."""
    from tests.helpers.trainers import generation_batch, make_trainer

    batches = []
    for fast in ({}, dict(kv_cache="dual", cache_refresh_steps=2)):
        trainer = make_trainer(tokenizer, tmp_path, model=one_layer_model(tokenizer), drift_num_orders=0, **fast)
        batches.append(generation_batch(trainer))
    assert batches[0].keys() == batches[1].keys()
    for key, value in batches[0].items():
        assert torch.equal(value, batches[1][key]), key

    trainer = make_trainer(tokenizer, tmp_path, drift_num_orders=0, kv_cache="dual", confidence_threshold=0.9,
                           max_steps=1)
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "generation/forwards" in h)
    # 8 steps in 2 blocks: at most 8 forwards, of which one full forward per block; the rest are span forwards
    assert 2 <= logged["generation/forwards"] <= 8
    assert logged["generation/full_forwards"] <= 2
    assert logged["time/generation"] > 0


def test_generate_command_takes_the_fast_decoding_options(tokenizer, tmp_path, capsys):
    from dipod_trl.commands import cli

    one_layer_model(tokenizer, seed=1).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    base = ["generate", "--model", str(tmp_path), "--prompt", "sort: 93151", "sort: 4", "--gen_length", "8",
            "--block_length", "4", "--steps", "8"]
    exact = cli.main(base)
    assert cli.main(base + ["--kv_cache", "prefix", "--cache_refresh_steps", "2"]) == exact  # exact on one layer
    assert cli.main(base + ["--confidence_threshold", "1.0"]) == exact
    with pytest.raises(ValueError, match="kv_cache must be None, 'prefix' or 'dual', got 'duel'"):
        cli.main(base + ["--kv_cache", "duel"])


def test_rows_that_leave_the_batch_take_their_cache_with_them(tiny_lm, tokenizer):
    """When rows finish mid-block, the remaining rows go on with their own cached keys/values: span logits after
    `keep_rows` equal those of a cache built for the remaining rows alone."""
    from dipod_trl.sampling import BlockLogits, GenerationStats

    lm = DiffusionLM(tiny_lm, mask_token_id=tiny_lm.config.mask_token_id)
    ids, mask = random_canvas(tokenizer, tiny_lm)
    keep = torch.tensor([False, True, False, True])
    with torch.no_grad():
        scorer = BlockLogits(lm, "dual", None, 0.0, GenerationStats())
        scorer(ids, mask, None, 13, 17, step=0)  # the block's first step builds the cache for all four rows
        scorer.keep_rows(keep)
        kept = scorer(ids[keep], mask[keep], None, 13, 17, step=1)
        _, cache = lm.logits_and_cache(ids[keep], mask[keep])
        expected = lm.span_logits(ids[keep], mask[keep], cache, 13, 17)
    assert scorer.stats.span_forwards == 1
    torch.testing.assert_close(kept, expected, atol=1e-6, rtol=1e-6)


def test_eval_takes_the_fast_decoding_options_and_keeps_their_records_apart(tmp_path):
    """`dipod eval --kv_cache ...`: a bad value is a clear error; fast settings change the records' setup (records of
    fast decoding are never reused as exact ones), while exact decoding keeps the setup it always had."""
    from dipod_trl.commands.eval_arguments import EvalArguments
    from dipod_trl.evaluation import eval_plan, setup_key
    from dipod_trl.tasks import get_task

    with pytest.raises(ValueError, match="kv_cache must be None, 'prefix' or 'dual', got 'duel'"):
        EvalArguments(model=str(tmp_path), task="digit_sort", kv_cache="duel")
    task = get_task("digit_sort")
    keys = {}
    for name, fast in (("exact", {}), ("dual", {"kv_cache": "dual"}), ("threshold", {"confidence_threshold": 0.9})):
        args = EvalArguments(model=str(tmp_path), task="digit_sort", gen_length=[8], block_length=4, **fast)
        plan = eval_plan(args, task, 8, str(tmp_path))
        keys[name] = setup_key(plan["setup"])
        assert all(plan["run"].get(k) == v for k, v in fast.items())
    assert len(set(keys.values())) == 3
    assert "kv_cache" not in eval_plan(EvalArguments(model=str(tmp_path), task="digit_sort"), task, 8,
                                       str(tmp_path))["run"]
