"""The chunked gradient pass (`elbo_grad_chunk_size`): the same loss and gradients as one pass over all rows."""

import pytest
import torch

from tests.helpers.trainers import generation_batch, gradients, make_trainer, text_hash


def loss_and_gradient(trainer, model, inputs, chunk):
    trainer.args.elbo_grad_chunk_size = chunk
    model.zero_grad()
    trainer._step = 0
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    return loss.item(), gradients(model).clone()


@pytest.mark.parametrize("objective", ["fpo", "diffu_grpo", "spg"])
def test_chunked_gradient_pass_gives_the_unchunked_loss_and_gradients(tokenizer, tmp_path, objective):
    # beta > 0 and two inner iterations: the KL term and the old scores enter the loss as well.
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective=objective, elbo_num_samples=4,
                           num_iterations=2, beta=0.04, dipod_beta=0.05)
    model = trainer.model.double()  # float64: "the same" means within 1e-6 on every gradient entry
    inputs = generation_batch(trainer)
    assert inputs["advantages"].abs().sum() > 0, "the test needs a batch with a learning signal"
    rows = inputs["mask_completion"].shape[0] * inputs["mask_completion"].shape[2]  # B x K
    loss, grad = loss_and_gradient(trainer, model, inputs, None)
    assert grad.abs().max() > 1e-4  # a real gradient to compare
    for chunk in (1, 3, rows - 1):  # one row at a time, uneven chunks, and all but one row
        chunked_loss, chunked_grad = loss_and_gradient(trainer, model, inputs, chunk)
        assert chunked_loss == pytest.approx(loss, abs=1e-9)
        difference = (chunked_grad - grad).abs().max().item()
        assert difference < 1e-6, (chunk, difference)


def test_chunked_gradient_pass_holds_one_chunk_of_activations(tokenizer, tmp_path):
    """What autograd keeps between forward and backward: with chunks, only their inputs, not their activations."""
    trainer = make_trainer(tokenizer, tmp_path, reward=text_hash, objective="fpo", elbo_num_samples=8)
    inputs = generation_batch(trainer)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    def saved_bytes(chunk, num_samples):
        trainer.args.elbo_grad_chunk_size = chunk
        sub = {**inputs, "mask_completion": inputs["mask_completion"][:, :, :num_samples],
               "mask_weights": inputs["mask_weights"][:, :, :num_samples]}
        saved.clear()
        trainer._step = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trainer._compute_loss(trainer.model, sub)
        return sum(saved)

    unchunked = [saved_bytes(None, k) for k in (2, 8)]
    chunked = [saved_bytes(4, k) for k in (2, 8)]
    assert unchunked[1] > 3 * unchunked[0]  # all rows at once: activations grow with the samples
    assert chunked[1] < unchunked[1] / 10
    print(f"bytes saved for backward, K=2 -> 8: unchunked {unchunked}, chunked {chunked}")
