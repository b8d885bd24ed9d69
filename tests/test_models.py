"""The tiny model and tokenizer as real transformers objects, and the adapters over model families."""

import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

import dipod_trl
from dipod_trl.models import (
    LLADA_MASK_TOKEN_ID,
    FamilyTraits,
    LLaDAConfig,
    LLaDAModelLM,
    TinyMDLMConfig,
    TinyMDLMForMaskedDiffusion,
    as_diffusion_lm,
    check_tokenizer_has_mask,
    family_traits,
    load_diffusion_model,
    register_auto_classes,
)
from tests.helpers.models import tiny_bert


def test_tokenizer_covers_printable_ascii_and_the_special_tokens(tokenizer):
    text = "Q: 12*(3+4) = ?\n\t<reasoning>~`!@#$%^&|</reasoning><answer>84</answer>"
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<answer>") in ids  # tags are single tokens
    assert tokenizer.mask_token_id == len(tokenizer) - 1 == TinyMDLMConfig(vocab_size=len(tokenizer)).mask_token_id
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert chat == "<bos><|user|>hi<eos><|assistant|>"


def test_tiny_model_and_tokenizer_round_trip_offline(tmp_path, tiny_lm, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, TinyMDLMForMaskedDiffusion)
    assert isinstance(AutoModelForMaskedLM.from_pretrained(tmp_path), TinyMDLMForMaskedDiffusion)
    assert loaded.lm_head.weight.data_ptr() == loaded.embed_tokens.weight.data_ptr()  # tied
    ids = torch.tensor([tokenizer("round trip").input_ids + [tokenizer.mask_token_id]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, tiny_lm(ids).logits)
    assert loaded_tokenizer("round trip").input_ids == tokenizer("round trip").input_ids
    assert loaded_tokenizer.mask_token_id == tokenizer.mask_token_id
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert load_diffusion_model(str(tmp_path)).config.model_type == "tiny_mdlm"


def test_left_padding_does_not_change_the_logits_of_real_tokens(tiny_lm):
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[0, 0, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        assert torch.allclose(tiny_lm(ids).logits, tiny_lm(padded, attention_mask=mask).logits[:, 2:], atol=1e-5)


def test_the_mask_token_is_never_predicted(tiny_lm):
    logits = tiny_lm(torch.tensor([[1, 2, tiny_lm.config.mask_token_id]])).logits
    assert (logits.softmax(-1)[..., tiny_lm.config.mask_token_id] == 0).all()


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError, match="mask_token_id"):
        TinyMDLMConfig(vocab_size=8, mask_token_id=8)
    with pytest.raises(ValueError, match="num_attention_heads"):
        TinyMDLMConfig(hidden_size=30, num_attention_heads=4)


class CopiesTheNextToken(torch.nn.Module):
    """A model with Dream's convention whose prediction is known: the logits at position i put all their mass on the
    token at position i + 1 (the last position predicts the mask token). Its config says `model_type: Dream`."""

    def __init__(self, vocab_size: int, mask_token_id: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.config = TinyMDLMConfig(vocab_size=vocab_size, mask_token_id=mask_token_id)
        self.config.model_type = "Dream"

    def forward(self, input_ids, attention_mask=None, **kwargs):
        following = torch.cat([input_ids[:, 1:], torch.full_like(input_ids[:, :1], self.config.mask_token_id)], 1)
        logits = torch.nn.functional.one_hot(following, self.vocab_size).float() * 20.0
        return type("Output", (), {"logits": logits})()


def test_the_dream_adapter_scores_each_position_with_the_previous_positions_logits():
    model = CopiesTheNextToken(vocab_size=8, mask_token_id=7)
    lm = as_diffusion_lm(model)
    assert lm.shift_logits and lm.mask_token_id == 7
    ids = torch.tensor([[3, 1, 4, 0, 5, 2]])
    # Realigned, position i's logits score the token at i (all tokens differ: no shift or a shift the wrong way
    # would predict the token one or two places further on).
    assert lm.logits(ids)[0, 1:].argmax(-1).tolist() == ids[0, 1:].tolist()


def test_any_hf_masked_lm_works_through_its_tokenizer_mask_token():
    bert, tokenizer = tiny_bert(with_mask_token=True)
    lm = as_diffusion_lm(bert, tokenizer)
    assert lm.mask_token_id == 3 and lm.eos_token_ids == (2,)
    completion, mask = dipod_trl.generate(lm, torch.tensor([[4, 5]]), gen_length=4, block_length=2, steps=4)
    assert completion.shape == mask.shape == (1, 4)
    assert (completion != 3).all()


def test_a_tokenizer_without_mask_token_is_a_clear_error():
    bert, tokenizer = tiny_bert(with_mask_token=False)
    with pytest.raises(ValueError, match="mask_token"):
        check_tokenizer_has_mask(tokenizer)
    with pytest.raises(ValueError, match="mask_token_id.*no mask token"):
        as_diffusion_lm(bert, tokenizer)
    with pytest.raises(ValueError, match="mask_token_id"):
        dipod_trl.generate(bert, torch.tensor([[4, 5]]), gen_length=2, block_length=2, steps=2, tokenizer=tokenizer)


class ForeignLLaDA(torch.nn.Module):
    """LLaDA as another class than ours implements it (the published remote code): only the config says LLaDA, and
    it names no mask token."""

    def __init__(self):
        super().__init__()
        self.config = TinyMDLMConfig(vocab_size=8)
        self.config.model_type, self.config.mask_token_id, self.config.eos_token_id = "llada", None, None


def test_a_foreign_class_gets_its_model_types_traits_and_a_native_class_its_own():
    lm = as_diffusion_lm(ForeignLLaDA())
    assert lm.mask_token_id == LLADA_MASK_TOKEN_ID and not lm.shift_logits
    assert lm.eos_token_ids == ()  # LLaDA's own stop ids lie outside this 8-token vocabulary
    assert not lm.supports_block_kv_cache  # the capability is the class's, never inferred from model_type
    assert family_traits(LLaDAModelLM(LLaDAConfig(d_model=8, n_heads=2, n_layers=1, mlp_hidden_size=8))) is \
        LLaDAModelLM.diffusion_traits
    assert family_traits(tiny_bert(with_mask_token=True)[0]) == FamilyTraits()  # masked LM: no quirks


def test_registering_auto_classes_again_changes_nothing(tmp_path, tiny_lm):
    tiny_lm.save_pretrained(tmp_path)
    register_auto_classes()
    register_auto_classes()
    assert type(AutoModel.from_pretrained(tmp_path)) is TinyMDLMForMaskedDiffusion


def test_the_tiny_block_model_declares_block_causal_traits_and_round_trips(tmp_path, tokenizer):
    from dipod_trl.models import TinyBlockMDLMForBlockDiffusion, build_tiny_model, load_diffusion_model

    model = build_tiny_model(tokenizer, block_causal=True)
    lm = as_diffusion_lm(model, tokenizer)
    assert (lm.block_causal, lm.default_block_length) == (True, 4)
    assert not as_diffusion_lm(build_tiny_model(tokenizer), tokenizer).block_causal
    model.save_pretrained(tmp_path)
    loaded = load_diffusion_model(str(tmp_path))
    assert isinstance(loaded, TinyBlockMDLMForBlockDiffusion)
    ids = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
