"""The batched sampler against a plain one-row-at-a-time transcription of LLaDA's reference sampler."""

import pytest
import torch
import torch.nn.functional as F

import dipod_trl
from dipod_trl.sampling import completion_mask_from_eos


def reference_generate(model, prompt, *, gen_length, block_length, steps, remasking, mask_id, cfg_scale=0.0):
    """LLaDA's `generate` for one unpadded prompt at temperature 0, written as plainly as possible.

    With `cfg_scale > 0`, classifier-free guidance as LLaDA writes it: a second pass with the whole prompt masked
    gives the unconditional logits, and the step uses `uncond + (cfg_scale + 1) * (cond - uncond)`.
    """
    x = torch.cat([prompt, torch.full((gen_length,), mask_id)]).unsqueeze(0)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for block in range(num_blocks):
        start = len(prompt) + block * block_length
        end = start + block_length
        masked_in_block = int((x[0, start:end] == mask_id).sum())
        schedule = [masked_in_block // steps_per_block] * steps_per_block
        for i in range(masked_in_block % steps_per_block):
            schedule[i] += 1
        for step in range(steps_per_block):
            logits = model(x).logits[0]
            if cfg_scale > 0:
                unconditional = x.clone()
                unconditional[0, : len(prompt)] = mask_id
                uncond = model(unconditional).logits[0]
                logits = uncond + (cfg_scale + 1) * (logits - uncond)
            x0 = logits.argmax(-1)
            if remasking == "low_confidence":
                confidence = F.softmax(logits.double(), dim=-1).gather(-1, x0[:, None])[:, 0]
            else:  # margin
                top2 = F.softmax(logits.double(), dim=-1).topk(2, dim=-1).values
                confidence = top2[:, 0] - top2[:, 1]
            candidates = [i for i in range(start, end) if x[0, i] == mask_id]
            candidates.sort(key=lambda i: -confidence[i].item())
            for i in candidates[: schedule[step]]:
                x[0, i] = x0[i]
    return x[0, len(prompt):]


@pytest.mark.parametrize("remasking", ["low_confidence", "margin"])
@pytest.mark.parametrize("gen_length,block_length,steps", [(8, 8, 8), (8, 4, 4), (12, 4, 6), (6, 2, 3), (8, 8, 3)])
def test_greedy_batch_matches_one_row_reference(tiny_lm, tokenizer, remasking, gen_length, block_length, steps):
    mask_id = tiny_lm.config.mask_token_id
    prompts = [tokenizer(text).input_ids for text in ["2+2=", "what is 13*7?", "a", "hello world, dear model"]]
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    completion_ids, _ = dipod_trl.generate(
        tiny_lm,
        batch["input_ids"],
        batch["attention_mask"],
        gen_length=gen_length,
        block_length=block_length,
        steps=steps,
        remasking=remasking,
        eos_token_ids=[],
    )
    for row, prompt in enumerate(prompts):
        expected = reference_generate(
            tiny_lm,
            torch.tensor(prompt),
            gen_length=gen_length,
            block_length=block_length,
            steps=steps,
            remasking=remasking,
            mask_id=mask_id,
        )
        assert completion_ids[row].tolist() == expected.tolist(), f"row {row} differs"


def test_random_remasking_with_temperature_is_reproducible_from_a_generator(tiny_lm, tokenizer):
    prompts = [tokenizer(text).input_ids for text in ["x=", "a longer prompt here"]]
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    kwargs = dict(gen_length=8, block_length=4, steps=8, temperature=1.0, remasking="random")
    args = (tiny_lm, batch["input_ids"], batch["attention_mask"])
    first, _ = dipod_trl.generate(*args, **kwargs, generator=torch.Generator().manual_seed(3))
    again, _ = dipod_trl.generate(*args, **kwargs, generator=torch.Generator().manual_seed(3))
    other, _ = dipod_trl.generate(*args, **kwargs, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Sampled tokens never include the mask token and every position is filled.
    assert (first != tiny_lm.config.mask_token_id).all()


def test_temperature_sampling_follows_the_model_distribution(tokenizer):
    """One masked position, one step: the sampled token frequencies match softmax(logits) (Gumbel-max sampling)."""
    from tests.helpers.models import make_tiny_model

    model = make_tiny_model(8, seed=3, initializer_range=0.5)
    prompt = torch.tensor([[1, 2, 3]]).repeat(4000, 1)
    samples, _ = dipod_trl.generate(
        model, prompt, gen_length=1, block_length=1, steps=1, temperature=1.0,
        generator=torch.Generator().manual_seed(0), eos_token_ids=[],
    )
    with torch.no_grad():
        probs = model(torch.tensor([[1, 2, 3, 7]])).logits[0, -1].double().softmax(-1)
    freq = torch.bincount(samples[:, 0], minlength=8).double() / len(samples)
    standard_error = (probs * (1 - probs) / len(samples)).sqrt()
    assert ((freq - probs).abs() <= 4 * standard_error + 1e-9).all(), (freq, probs)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_guided_batch_matches_the_reference_with_the_prompt_masked(tiny_lm, tokenizer, cfg_scale):
    """Left-padded rows under guidance follow LLaDA's CFG: real prompt tokens masked in the unconditional pass."""
    prompts = [tokenizer(text).input_ids for text in ["1+1=", "what is 13*7?", "a"]]
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    args = (tiny_lm, batch["input_ids"], batch["attention_mask"])
    schedule = dict(gen_length=8, block_length=4, steps=8)
    guided, _ = dipod_trl.generate(*args, **schedule, cfg_scale=cfg_scale, eos_token_ids=[])
    plain, _ = dipod_trl.generate(*args, **schedule, eos_token_ids=[])
    assert not torch.equal(guided, plain)  # guidance changes greedy choices of this model: the comparison has teeth
    for row, prompt in enumerate(prompts):
        expected = reference_generate(tiny_lm, torch.tensor(prompt), **schedule, remasking="low_confidence",
                                      mask_id=tiny_lm.config.mask_token_id, cfg_scale=cfg_scale)
        assert guided[row].tolist() == expected.tolist(), f"row {row} differs"


def test_completion_mask_ends_after_first_eos():
    ids = torch.tensor([[5, 2, 9, 2, 4], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2]])
    assert completion_mask_from_eos(ids, [2]).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_generated_completion_mask_marks_tokens_after_eos(tiny_lm, tokenizer):
    batch = tokenizer.pad({"input_ids": [tokenizer("go").input_ids] * 6}, return_tensors="pt")
    ids, mask = dipod_trl.generate(
        tiny_lm, batch["input_ids"], batch["attention_mask"], gen_length=16, block_length=4, steps=16, temperature=2.0,
        generator=torch.Generator().manual_seed(0), eos_token_ids=[tokenizer.eos_token_id, 3, 40, 50],
    )
    assert torch.equal(mask, completion_mask_from_eos(ids, [tokenizer.eos_token_id, 3, 40, 50]))
    assert (mask == 0).any(), "with several EOS ids at temperature 2, some row should end early"


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(gen_length=10, block_length=4, steps=4), "gen_length"),
        (dict(gen_length=8, block_length=4, steps=3), "steps"),
        (dict(gen_length=8, block_length=4, steps=4, remasking="best"), "remasking"),
        (dict(gen_length=8, block_length=4, steps=4, temperature=-1.0), "temperature"),
    ],
)
def test_bad_schedule_arguments_name_the_argument(tiny_lm, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        dipod_trl.generate(tiny_lm, torch.tensor([[1, 2]]), **kwargs)


def test_prompt_longer_than_limit_is_an_error(tiny_lm):
    prompt = torch.ones(1, 20, dtype=torch.long)
    with pytest.raises(ValueError, match="prompt_ids.*max_prompt_length"):
        dipod_trl.generate(tiny_lm, prompt, gen_length=4, block_length=4, steps=4, max_prompt_length=10)
    too_long = torch.ones(1, 126, dtype=torch.long)  # 126 + 4 > max_position_embeddings=128
    with pytest.raises(ValueError, match="prompt_ids.*limit of 128"):
        dipod_trl.generate(tiny_lm, too_long, gen_length=4, block_length=4, steps=4)


@pytest.mark.parametrize("block_length,steps", [(4, 9), (12, 12), (2, 12)])
def test_stopping_at_eos_keeps_every_token_before_it(tiny_lm, tokenizer, block_length, steps):
    """Rows leave the batch once their completion up to the first EOS is final; those tokens match the reference."""
    mask_id = tiny_lm.config.mask_token_id
    prompts = [tokenizer(text).input_ids for text in ["2+2=", "what is 13*7?", "a", "hello world"]]
    schedule = dict(gen_length=12, block_length=block_length, steps=steps)
    references = [
        reference_generate(tiny_lm, torch.tensor(p), **schedule, remasking="low_confidence", mask_id=mask_id)
        for p in prompts
    ]
    # Declare as "EOS" tokens the reference produces mid-completion, so that rows stop at different places.
    eos_ids = sorted({references[0][3].item(), references[1][6].item()})
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt", padding_side="left")
    ids, mask = dipod_trl.generate(
        tiny_lm, batch["input_ids"], batch["attention_mask"], **schedule, eos_token_ids=eos_ids
    )
    expected_mask = completion_mask_from_eos(torch.stack(references), eos_ids)
    assert torch.equal(mask, expected_mask)
    assert (mask == 0).any()
    assert torch.equal(ids * mask, torch.stack(references) * mask)
    assert (ids != mask_id).all()
