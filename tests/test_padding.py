"""Models that ignore `attention_mask` are found by a probe and then sampled and scored without padding."""

import pytest
import torch
from torch import nn

import dipod_trl
from dipod_trl.likelihood import masked_token_logps
from dipod_trl.masks import MaskDraw, draw_masks
from dipod_trl.models import as_diffusion_lm
from dipod_trl.models.padding import _HONOURS_MASK, honours_attention_mask
from tests.helpers.models import make_tiny_model, tiny_bert


class MaskIgnoringLM(nn.Module):
    """A real model whose forward drops `attention_mask`, as LLaDA's published modeling code does."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.inner(input_ids)


PROMPTS = [[5, 40, 41], [9, 60, 61, 62, 63, 64], [7]]  # three prompt lengths


def _padded_prompts():
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    return ids, mask


@pytest.fixture
def ignoring(tokenizer):
    inner = make_tiny_model(len(tokenizer), seed=2, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id)
    return MaskIgnoringLM(inner), as_diffusion_lm(inner)


def test_the_probe_tells_models_that_ignore_the_mask_from_those_that_honour_it(ignoring):
    wrapper, honouring = ignoring
    ids, mask = _padded_prompts()
    with torch.no_grad():  # precondition, by construction: the wrapper's real logits depend on the pad tokens
        other_pads = ids.masked_fill(mask == 0, 7)
        assert (wrapper(ids, mask).logits[0, 3:] - wrapper(other_pads, mask).logits[0, 3:]).abs().max() > 1e-3
    assert honours_attention_mask(honouring)
    bert, bert_tokenizer = tiny_bert(with_mask_token=True)
    assert honours_attention_mask(as_diffusion_lm(bert, bert_tokenizer))
    with pytest.warns(UserWarning, match="MaskIgnoringLM ignores attention_mask"):
        assert not honours_attention_mask(as_diffusion_lm(wrapper))
    assert wrapper.training and not wrapper.inner.training  # the probe ran in eval mode, then restored the flags


def test_padded_logits_of_a_mask_ignoring_model_equal_its_unpadded_rows(ignoring, monkeypatch):
    wrapper, _ = ignoring
    lm = as_diffusion_lm(wrapper)
    ids, mask = _padded_prompts()
    with torch.no_grad(), pytest.warns(UserWarning):
        padded = lm.logits(ids, mask)
    for row, prompt in enumerate(PROMPTS):
        alone = wrapper(torch.tensor([prompt])).logits[0].detach()
        torch.testing.assert_close(padded[row, -len(prompt):], alone, rtol=0, atol=1e-5)
        assert (padded[row, : -len(prompt)] == 0).all()
    monkeypatch.setitem(_HONOURS_MASK, wrapper, True)  # without the probe's verdict: padding leaks into the rows
    with torch.no_grad():
        leaky = lm.logits(ids, mask)
    assert (leaky[0, -3:] - padded[0, -3:]).abs().max() > 1e-3


def test_sampling_a_mask_ignoring_model_in_a_padded_batch_equals_each_prompt_alone(ignoring):
    wrapper, _ = ignoring
    ids, mask = _padded_prompts()
    settings = dict(gen_length=8, block_length=4, steps=8, temperature=0.7)

    def generators():
        return [torch.Generator().manual_seed(100 + row) for row in range(len(PROMPTS))]

    with pytest.warns(UserWarning):
        batch, batch_mask = dipod_trl.generate(wrapper, ids, mask, generator=generators(), **settings)
    for row, (prompt, gen) in enumerate(zip(PROMPTS, generators())):
        alone, alone_mask = dipod_trl.generate(wrapper, torch.tensor([prompt]), generator=[gen], **settings)
        assert torch.equal(batch[row], alone[0]) and torch.equal(batch_mask[row], alone_mask[0])


def test_scores_and_gradients_of_a_mask_ignoring_model_equal_its_unpadded_rows(ignoring):
    wrapper, _ = ignoring
    prompt_ids, prompt_mask = _padded_prompts()
    completion_ids = torch.tensor([[11, 12, 13, 2, 0], [21, 2, 0, 0, 0], [31, 32, 33, 34, 2]])
    completion_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    draw = draw_masks(completion_mask, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning):
        batch = masked_token_logps(wrapper, prompt_ids, completion_ids, draw, completion_mask=completion_mask,
                                   attention_mask=prompt_mask)
    batch.sum().backward()
    batch_grads = [p.grad.clone() for p in wrapper.parameters()]
    wrapper.zero_grad()
    total = 0
    for row, prompt in enumerate(PROMPTS):
        length = int(completion_mask[row].sum())
        row_draw = MaskDraw(draw.completion_masks[row:row + 1, :, :length], draw.weights[row:row + 1])
        alone = masked_token_logps(wrapper, torch.tensor([prompt]), completion_ids[row:row + 1, :length], row_draw)
        torch.testing.assert_close(batch[row, :, :length], alone[0], rtol=0, atol=1e-5)
        assert (batch[row, :, length:] == 0).all()
        total = total + alone.sum()
    total.backward()
    for padded_grad, p in zip(batch_grads, wrapper.parameters()):
        torch.testing.assert_close(padded_grad, p.grad, rtol=1e-4, atol=1e-6)
