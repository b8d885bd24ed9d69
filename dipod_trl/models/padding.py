"""Models that ignore `attention_mask`: found by one probe per model, then run without padding.

Some published diffusion LMs accept `attention_mask` and drop it (LLaDA's hub code passes `attn_mask=None` to its
attention), so a left-padded prompt or a right-padded completion attends to pad tokens, and a row's samples and scores
depend on what else is in its batch. The first forward through the adapter probes the model once: it changes the token
at a masked-out position and checks whether the logits at the real positions move. A model that fails the probe is
then run padding-free: rows are grouped by their padding pattern (prompt and completion lengths), each group's real
tokens go through the model unpadded, and the logits are put back in place, with zeros at pad positions, which no
sampler or estimator reads. d1 gets the same result by generating one prompt per batch.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref

import torch

# model -> whether it honours attention_mask; an architectural fact, probed once per model object
_HONOURS_MASK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# change of a real position's probabilities above which the masked-out token was seen (an honouring model gives 0)
PROBE_TOLERANCE = 1e-4


def honours_attention_mask(lm) -> bool:
    """Whether the model behind the [`DiffusionLM`] `lm` ignores tokens that `attention_mask` masks out (cached).

    `lm` is used through its interface only (`unwrapped`, `logits`, `config`, `mask_token_id`), so this module sits
    below the protocol that calls it."""
    base = lm.unwrapped
    known = _HONOURS_MASK.get(base)
    if known is None:
        _HONOURS_MASK[base] = True  # the probe's own forward passes take the model at its word
        try:
            known = _probe(dataclasses.replace(lm, model=base))
        finally:
            del _HONOURS_MASK[base]
        _HONOURS_MASK[base] = known
        if not known:
            warnings.warn(
                f"{type(base).__name__} ignores attention_mask (the token at a masked-out position changes the other "
                "positions' logits): padded batches are run padding-free, one forward per padding pattern.",
                stacklevel=3,
            )
    return known


@torch.no_grad()
def _probe(lm) -> bool:
    """Two rows that differ only at their masked-out first and last positions: do their real logits differ?"""
    model = lm.model
    modes = {module: module.training for module in model.modules()}
    model.eval()  # dropout would move the logits by itself
    try:
        device = next(model.parameters()).device
        vocab = getattr(lm.config, "vocab_size", None) or lm.mask_token_id + 1
        real = [lm.mask_token_id, *(i % vocab for i in (1, 2)), lm.mask_token_id]
        pad_a, pad_b = lm.mask_token_id, (lm.mask_token_id + 1) % vocab
        ids = torch.tensor([[pad_a, *real, pad_a], [pad_b, *real, pad_b]], device=device)
        attention_mask = torch.tensor([[0, 1, 1, 1, 1, 0]] * 2, device=device)
        # probabilities, not logits: a token a model never predicts may sit at -inf or the dtype's minimum
        probs = lm.logits(ids, attention_mask)[:, 1:-1].float().softmax(dim=-1)
    finally:
        for module, training in modes.items():
            module.training = training
    return bool((probs[0] - probs[1]).abs().max() <= PROBE_TOLERANCE)


def logits_without_padding(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`lm.logits` computed row group by row group on the real tokens alone; zeros at the pad positions."""
    keep = attention_mask.bool()
    if keep.all():
        return lm.logits(input_ids)
    patterns, group_of_row = torch.unique(keep, dim=0, return_inverse=True)
    pieces, rows_in_order = [], []
    for group, pattern in enumerate(patterns):
        rows = (group_of_row == group).nonzero().squeeze(1)
        positions = pattern.nonzero().squeeze(1)
        if positions.numel() == 0:
            raise ValueError("attention_mask: a row has no real token at all.")
        logits = lm.logits(input_ids[rows][:, positions])
        full = logits.new_zeros((len(rows), input_ids.shape[1], logits.shape[-1]))
        pieces.append(full.index_copy(1, positions, logits))
        rows_in_order.append(rows)
    return torch.cat(pieces)[torch.cat(rows_in_order).argsort()]
