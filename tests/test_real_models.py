"""LLaDA, Dream, SDAR, SDAR-MoE and LLaDA2, our own implementations: they reproduce the published modeling code's
logits on tiny hub-layout checkpoints (tests/fixtures, made by scripts/make_parity_fixtures.py and
scripts/make_block_parity_fixtures.py), honour padding, checkpoint activations without changing a gradient, serve the
block key/value cache exactly, train and generate."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModel

import dipod_trl
from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.models import (
    DreamModel,
    LLaDA2MoeModelLM,
    LLaDAConfig,
    LLaDAModelLM,
    SDARForCausalLM,
    SDARMoeForCausalLM,
    as_diffusion_lm,
    block_causal_mask,
    load_diffusion_model,
    load_diffusion_tokenizer,
)
from tests.helpers.models import make_tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
LLADA, DREAM = str(FIXTURES / "llada_tiny"), str(FIXTURES / "dream_tiny")
SDAR, SDAR_MOE, LLADA2 = (str(FIXTURES / f"{name}_tiny") for name in ("sdar", "sdar_moe", "llada2"))
BLOCK_CAUSAL = [SDAR, SDAR_MOE, LLADA2]
ALL = [LLADA, DREAM, *BLOCK_CAUSAL]
MODEL_CLASS = {LLADA: LLaDAModelLM, DREAM: DreamModel, SDAR: SDARForCausalLM, SDAR_MOE: SDARMoeForCausalLM,
               LLADA2: LLaDA2MoeModelLM}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def shift_like_adapter(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


@pytest.mark.parametrize("path", ALL)
def test_hub_layout_checkpoint_loads_as_our_model_without_remote_code(path):
    # config.json carries the published auto_map; the registered model_type wins, even with trust_remote_code=True.
    expected = MODEL_CLASS[path]
    assert type(AutoModel.from_pretrained(path)) is expected
    assert type(load_diffusion_model(path, trust_remote_code=True)) is expected


@pytest.mark.parametrize("path", ALL)
def test_logits_match_published_code(path):
    reference = load_file(f"{path}/parity.safetensors")
    lm = as_diffusion_lm(load_diffusion_model(path).eval(), load_diffusion_tokenizer(path))
    with torch.no_grad():
        logits = lm.logits(reference["input_ids"])
    expected = shift_like_adapter(reference["logits"]) if lm.shift_logits else reference["logits"]
    assert logits.shape == expected.shape
    assert relative_error(logits, expected) < 1e-4


def test_dream_padded_logits_match_published_code_at_real_positions():
    # The published code's own convention: a pairwise boolean mask and explicit positions.
    reference = load_file(f"{DREAM}/parity.safetensors")
    model = load_diffusion_model(DREAM).eval()
    mask = reference["padded_attention_mask"]
    real = mask[0].bool()
    with torch.no_grad():
        pairwise = mask.bool()[:, None, None, :] | torch.eye(mask.shape[1], dtype=torch.bool)
        ours = model(reference["padded_input_ids"], attention_mask=pairwise, position_ids=mask.cumsum(-1) - 1).logits
        ours_2d = model(reference["padded_input_ids"], attention_mask=mask).logits
    assert relative_error(ours[:, real], reference["padded_logits"][:, real]) < 1e-4
    assert relative_error(ours_2d[:, real], reference["padded_logits"][:, real]) < 1e-4


@pytest.mark.parametrize("path", BLOCK_CAUSAL)
def test_block_causal_padded_and_training_mask_logits_match_published_code(path):
    """The published code's logits under the masks these models decode and train with: the samplers' block-causal
    mask, a left-padded batch (blocks counted from each row's first real token), and the trainer's `[noisy || clean]`
    block-diffusion mask with repeated positions."""
    reference = load_file(f"{path}/parity.safetensors")
    model = load_diffusion_model(path).eval()
    real = reference["padded_attention_mask"].bool()
    with torch.no_grad():
        mask = block_causal_mask(torch.ones(1, 16, dtype=torch.bool), 4).expand(2, -1, -1, -1)
        block = model(reference["input_ids"], attention_mask=mask).logits
        padded = model(reference["padded_input_ids"], attention_mask=reference["padded_pairwise_mask"],
                       position_ids=reference["padded_position_ids"]).logits
        training = model(reference["bd_input_ids"], attention_mask=reference["bd_attention_mask"],
                         position_ids=reference["bd_position_ids"]).logits
    assert relative_error(block, reference["block_logits"]) < 1e-4
    assert relative_error(padded[real], reference["padded_logits"][real]) < 1e-4
    assert relative_error(training, reference["bd_logits"]) < 1e-4
    # The masks matter: block-causal logits are not the full-attention ones, and a block does not see later blocks.
    assert (block - reference["logits"]).abs().max() > 1e-3
    with torch.no_grad():
        mask = block_causal_mask(torch.ones(1, 8, dtype=torch.bool), 4).expand(2, -1, -1, -1)
        first_two = model(reference["input_ids"][:, :8], attention_mask=mask)
    torch.testing.assert_close(first_two.logits, block[:, :8], rtol=1e-5, atol=1e-5)
    # A left-padded row under the block-causal mask has the logits of the row alone.
    torch.testing.assert_close(padded[0, 4:], block[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", BLOCK_CAUSAL)
def test_block_kv_cache_serves_block_causal_spans_exactly(path):
    """The sampler's use: a full forward under the block-causal mask fills the cache, and a span forward of one block
    with the same pairwise mask equals the full forward's logits of that block."""
    model = load_diffusion_model(path).eval()
    reference = load_file(f"{path}/parity.safetensors")
    ids, mask, positions = (reference[k] for k in ("padded_input_ids", "padded_pairwise_mask", "padded_position_ids"))
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        for start, end in [(0, 4), (8, 12), (16, 20)]:
            span = model(ids[:, start:end], attention_mask=mask, position_ids=positions[:, start:end],
                         past_key_values=full.cache, cache_position=torch.arange(start, end)).logits
            torch.testing.assert_close(span, full.logits[:, start:end], rtol=1e-5, atol=1e-5)
        # a cache of other tokens gives other logits: the span really reads it
        other = model(ids.flip(1), attention_mask=mask, position_ids=positions, use_cache=True).cache
        stale = model(ids[:, 16:20], attention_mask=mask, position_ids=positions[:, 16:20], past_key_values=other,
                      cache_position=torch.arange(16, 20)).logits
    assert (stale - full.logits[:, 16:20]).abs().max() > 1e-3


@pytest.mark.parametrize("path", BLOCK_CAUSAL)
def test_lora_on_the_declared_targets_adapts_every_published_linear_layer_but_the_head(path):
    """LoRA on each family's `lora_target_modules` (the routed experts are stacked tensors and the router is no linear
    layer, so they get none) adapts exactly the linear layers but `lm_head`, and moves the logits."""
    from peft import LoraConfig, get_peft_model

    base = load_diffusion_model(path).eval()
    targets = list(type(base).lora_target_modules)
    ids = load_file(f"{path}/parity.safetensors")["input_ids"]
    with torch.no_grad():
        before = base(ids).logits.clone()
    linear = {n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    adapted = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == linear and len(linear) > 0
    with torch.no_grad():
        assert (model(ids).logits - before).abs().max() > 1e-3


@pytest.mark.parametrize("path", ALL)
def test_left_and_right_padding_leave_real_logits_unchanged(path):
    model = load_diffusion_model(path).eval()
    ids = load_file(f"{path}/parity.safetensors")["input_ids"][:1]
    pad = load_diffusion_tokenizer(path).pad_token_id  # SDAR's config names none
    left = torch.cat([torch.full((1, 5), pad), ids], dim=1)
    right = torch.cat([ids, torch.full((1, 3), pad)], dim=1)
    mask_left = (torch.arange(left.shape[1]) >= 5).long().unsqueeze(0)
    mask_right = (torch.arange(right.shape[1]) < ids.shape[1]).long().unsqueeze(0)
    with torch.no_grad():
        alone = model(ids).logits
        batch = torch.cat([left, torch.cat([right, torch.full((1, 2), pad)], dim=1)])
        batch_mask = torch.cat([mask_left, torch.cat([mask_right, torch.zeros(1, 2, dtype=torch.long)], dim=1)])
        padded = model(batch, attention_mask=batch_mask).logits
    torch.testing.assert_close(padded[0, 5:], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[1, : ids.shape[1]], alone[0], rtol=1e-5, atol=1e-5)
    # The padding is real input: without the mask the logits move.
    with torch.no_grad():
        unmasked = model(left).logits
    assert (unmasked[0, 5:] - alone[0]).abs().max() > 1e-3


@pytest.mark.parametrize("path", ALL)
def test_adapter_scores_of_a_padded_row_equal_the_row_alone(path):
    # Through the adapter (Dream's shift included), so the models run padded, not padding-free.
    from dipod_trl.models.padding import honours_attention_mask

    lm = as_diffusion_lm(load_diffusion_model(path).eval(), load_diffusion_tokenizer(path))
    ids = load_file(f"{path}/parity.safetensors")["input_ids"][:1]
    pad = lm.pad_token_id
    padded = torch.cat([torch.full((1, 3), pad), ids, torch.full((1, 2), pad)], dim=1)
    mask = torch.zeros_like(padded)
    mask[:, 3 : 3 + ids.shape[1]] = 1
    assert honours_attention_mask(lm)
    with torch.no_grad():
        torch.testing.assert_close(lm.logits(padded, mask)[:, 3 : 3 + ids.shape[1]], lm.logits(ids), rtol=1e-5,
                                   atol=1e-5)


def _tiny():
    return make_tiny_model(40, seed=0, initializer_range=0.3)


@pytest.mark.parametrize("name", ["tiny", "llada", "dream", "sdar", "sdar_moe", "llada2"])
def test_gradient_checkpointing_recomputes_and_keeps_gradients(name):
    def build():
        return _tiny() if name == "tiny" else load_diffusion_model(str(FIXTURES / f"{name}_tiny"))

    torch.manual_seed(0)
    ids = torch.randint(0, 40, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    weights = None

    def gradients(model):
        nonlocal weights
        model.train()
        calls = []
        first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first_linear.register_forward_hook(lambda *args: calls.append(1))
        logits = model(ids, attention_mask=mask).logits
        if weights is None:
            weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
        (logits * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    plain, plain_calls = gradients(build())
    checkpointed_model = build()
    checkpointed_model.activation_checkpointing_enable()
    checkpointed, checkpointed_calls = gradients(checkpointed_model)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the checkpointed layer really ran again in backward
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", ALL)
def test_block_kv_cache_span_forward_equals_full_forward(path):
    model = load_diffusion_model(path).eval()
    ids = load_file(f"{path}/parity.safetensors")["input_ids"]
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache = full.past_key_values  # the contract's name (transformers 5 also calls it `cache`)
        assert len(cache) == model.config.num_hidden_layers and cache.seq_length == ids.shape[1]
        for start, end in [(6, 10), (12, 16), (0, 16)]:
            span = model(ids[:, start:end], attention_mask=mask, position_ids=positions[:, start:end],
                         past_key_values=cache, cache_position=torch.arange(start, end)).logits
            torch.testing.assert_close(span, full.logits[:, start:end], rtol=1e-5, atol=1e-5)
        # The cache is what it claims to be: a span forward against a cache of other tokens gives other logits.
        other = model(ids.flip(1), attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
        stale = model(ids[:, 6:10], attention_mask=mask, position_ids=positions[:, 6:10], past_key_values=other,
                      cache_position=torch.arange(6, 10)).logits
    assert (stale - full.logits[:, 6:10]).abs().max() > 1e-3


@pytest.mark.parametrize("path", [LLADA, DREAM])
def test_two_dipod_training_steps_on_hub_layout_checkpoint(path, tmp_path):
    prompts = [[{"role": "user", "content": f"sort: {i}{(7 * i) % 10}"}] for i in range(8)]
    dataset = Dataset.from_dict({"prompt": prompts})
    config = DiPODConfig(
        output_dir=str(tmp_path), max_completion_length=4, block_length=4, diffusion_steps=4, num_generations=4,
        per_device_train_batch_size=8, max_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none",
        save_strategy="no", disable_tqdm=True, seed=0, drift_num_orders=2, drift_num_sequences=2,
        activation_checkpointing=True,
    )

    def reward(completions, **kwargs):  # spread across any completions, so every batch carries advantages
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [(sum(map(ord, t)) % 7) / 7 for t in texts]

    trainer = DiPODTrainer(path, reward, args=config, train_dataset=dataset)  # model and tokenizer from the path
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any("q_proj" in n for n in changed) and any("embed" in n or "wte" in n for n in changed)


def _llada_that_always_predicts(token_id: int) -> LLaDAModelLM:
    """The LLaDA fixture rewired so that every position predicts `token_id`: constant embeddings, blocks that add
    nothing, and an output layer that has only `token_id`'s row."""
    model = load_diffusion_model(LLADA).eval()
    transformer = model.model.transformer
    with torch.no_grad():
        transformer.wte.weight.copy_(torch.linspace(-1, 1, model.config.d_model))
        for block in transformer.blocks:
            block.attn_out.weight.zero_()
            block.ff_out.weight.zero_()
        transformer.ff_out.weight.zero_()
        transformer.ff_out.weight[token_id] = 5 * transformer.ln_f(transformer.wte.weight[0])
    return model


def test_llada_stop_ids_are_eos_and_eot_and_the_tail_is_eos():
    tokenizer = load_diffusion_tokenizer(LLADA)
    eos, eot = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|eot_id|>")
    model = load_diffusion_model(LLADA)
    assert as_diffusion_lm(model, tokenizer).eos_token_ids == (eos, eot)  # the model's EOS first: it fills the tail
    # LLaDA's own vocabulary without a tokenizer: EOS 126081 and EOT 126348.
    full_vocabulary = LLaDAModelLM(LLaDAConfig(d_model=8, n_heads=2, n_layers=1, mlp_hidden_size=8))
    assert as_diffusion_lm(full_vocabulary).eos_token_ids == (126081, 126348)
    prompt = tokenizer(["sort: 31"], return_tensors="pt")
    letter = tokenizer.convert_tokens_to_ids("a")
    for stop in (eos, eot):
        ids, completion_mask = dipod_trl.generate(
            _llada_that_always_predicts(stop), prompt.input_ids, prompt.attention_mask, gen_length=8, block_length=4,
            steps=8, tokenizer=tokenizer,
        )
        # The completion ends at its first token; the second block is never decoded and is filled with the EOS.
        assert ids[0, 0] == stop and set(ids[0].tolist()) <= {stop, eos} and (ids[0, 4:] == eos).all()
        assert completion_mask[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    ids, completion_mask = dipod_trl.generate(
        _llada_that_always_predicts(letter), prompt.input_ids, prompt.attention_mask, gen_length=8, block_length=4,
        steps=8, tokenizer=tokenizer,
    )
    assert (ids == letter).all() and completion_mask.all()


@pytest.mark.parametrize("path", ALL)
def test_every_published_weight_name_loads_and_nothing_is_left_uninitialised(path, tmp_path):
    model, info = MODEL_CLASS[path].from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # and the model saves exactly the published names back (MoE experts split per expert again)
    published = load_file(f"{path}/model.safetensors")
    model.save_pretrained(tmp_path)
    saved = load_file(f"{tmp_path}/model.safetensors")
    assert saved.keys() == published.keys()
    for name, tensor in published.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0)


def test_lora_adapter_on_published_module_names_loads_unchanged(tmp_path):
    """An adapter as d1 saves it from the published LLaDA (keys built from the checkpoint's own weight names)."""
    from peft import PeftModel
    from safetensors.torch import save_file

    published_names = load_file(f"{LLADA}/model.safetensors").keys()
    projections = ("q_proj.weight", "k_proj.weight", "v_proj.weight")  # d1's target_modules
    targets = [n[: -len(".weight")] for n in published_names if n.endswith(projections)]
    generator = torch.Generator().manual_seed(0)
    rank, width = 4, 32
    adapter = {}
    for name in targets:
        adapter[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, width, generator=generator)
        adapter[f"base_model.model.{name}.lora_B.weight"] = torch.randn(width, rank, generator=generator)
    save_file(adapter, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "task_type": null, "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, '
        '"target_modules": ["q_proj", "k_proj", "v_proj"], "base_model_name_or_path": "GSAI-ML/LLaDA-8B-Instruct"}'
    )
    base = load_diffusion_model(LLADA).eval()
    ids = load_file(f"{LLADA}/parity.safetensors")["input_ids"]
    with torch.no_grad():
        before = base(ids).logits.clone()
    model = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(adapter)
    for key, value in adapter.items():
        torch.testing.assert_close(loaded[key.replace(".weight", ".default.weight")], value)
    with torch.no_grad():
        assert (model(ids).logits - before).abs().max() > 1e-3  # the adapters are live in the forward


@pytest.mark.parametrize("path", ALL)
def test_bf16_weights_give_the_float32_logits_to_bf16_precision(path):
    ids = load_file(f"{path}/parity.safetensors")["input_ids"]
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad():
        full = load_diffusion_model(path).eval()(ids, attention_mask=mask).logits
        half = load_diffusion_model(path, dtype=torch.bfloat16).eval()(ids, attention_mask=mask).logits
    assert half.dtype == torch.bfloat16
    assert relative_error(half.float(), full) < 3e-2


@pytest.mark.parametrize("path", [LLADA, DREAM])
@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_fast_decoding_with_the_block_cache_on_llada_and_dream(path, kv_cache):
    """The sampler's block cache on our LLaDA and Dream (Dream through the adapter's shift), on one layer of the
    fixture: there the keys and values outside the span depend only on their own (unchanged) tokens while a block is
    decoded, so the cache, refreshed inside blocks or not, must give exact decoding token for token on a left-padded
    batch, while computing fewer positions."""
    tokenizer = load_diffusion_tokenizer(path)
    tokenizer.padding_side = "left"
    batch = tokenizer(["sort: 31415", "sort: 9"], return_tensors="pt", padding=True)
    schedule = dict(gen_length=8, block_length=4, steps=8, tokenizer=tokenizer, stop_at_eos=False, return_stats=True)
    layers = {"n_layers": 1} if path == LLADA else {"num_hidden_layers": 1}
    one_layer = load_diffusion_model(path, **layers).eval()
    exact, _, exact_stats = dipod_trl.generate(one_layer, batch.input_ids, batch.attention_mask, **schedule)
    for refresh in (None, 2):
        fast, _, stats = dipod_trl.generate(one_layer, batch.input_ids, batch.attention_mask, **schedule,
                                            kv_cache=kv_cache, cache_refresh_steps=refresh)
        assert torch.equal(fast, exact), refresh
        assert stats.span_forwards > 0 and stats.positions < exact_stats.positions
        assert stats.full_forwards == (2 if refresh is None else 4)  # a refresh at step 2 of each 4-step block
