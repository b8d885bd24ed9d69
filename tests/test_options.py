"""Option groups declared once (`dipod_trl.options`): every command that composes a group takes its flags and refuses
its bad values with the same error."""

import pytest
import torch
from transformers import HfArgumentParser

import dipod_trl
from dipod_trl import DiPODConfig
from dipod_trl.commands.demo import DemoConfig
from dipod_trl.commands.eval_arguments import EvalArguments
from dipod_trl.commands.generate import GenerateArguments
from dipod_trl.options import FastDecodingArguments
from dipod_trl.sft import MaskedSFTConfig

RL = dict(output_dir="/tmp/unused", max_completion_length=8, block_length=4, diffusion_steps=8)
COMMANDS = {
    "train": (DiPODConfig, RL),
    "eval": (EvalArguments, dict(model="/tmp/unused", task="digit_sort")),
    "generate": (FastDecodingArguments, {}),
    "generate sampler": (GenerateArguments, dict(model="/tmp/unused", prompt=["p"])),
    "demo": (DemoConfig, {}),
    "sft": (MaskedSFTConfig, dict(output_dir="/tmp/unused")),
}
BAD = [
    (("train", "eval", "generate"), dict(kv_cache="duel"), "kv_cache must be None, 'prefix' or 'dual', got 'duel'"),
    (("train", "eval", "generate"), dict(cache_refresh_steps=2), "cache_refresh_steps is set but kv_cache is None"),
    (("train", "eval", "generate"), dict(confidence_threshold=1.5), "confidence_threshold must be in"),
    (("train", "demo", "sft"), dict(elbo_num_samples=3, elbo_estimator="antithetic"),
     "elbo_num_samples must be even for elbo_estimator='antithetic'"),
    (("train", "demo", "sft"), dict(elbo_num_samples=0), r"elbo_num_samples \(K\) must be >= 1"),
    (("train", "demo", "sft"), dict(elbo_estimator="exact"), "elbo_estimator must be one of"),
    (("train", "demo"), dict(dipod_beta=-0.1), "dipod_beta must be >= 0"),
    (("train", "eval", "generate sampler"), dict(remasking="lowest"), "remasking must be one of"),
    (("train", "eval", "generate sampler"), dict(block_length=0), "block_length must be (a )?positive"),
    (("train", "eval", "generate sampler"), dict(cfg_scale=-1.0), "cfg_scale must be >= 0"),
    (("train", "eval"), dict(kv_cache="dual", cfg_scale=0.5), "kv_cache does not support classifier-free guidance"),
]
# What `dipod_trl.generate` refuses when called with keywords: the same checks, the same errors.
GENERATE_KEYWORDS = [(values, match) for commands, values, match in BAD if "generate sampler" in commands or
                     ("generate" in commands and "elbo" not in match)]


@pytest.mark.parametrize("commands,values,match", BAD)
def test_each_command_refuses_a_bad_option_with_the_groups_error(commands, values, match):
    for command in commands:
        cls, required = COMMANDS[command]
        with pytest.raises(ValueError, match=match):
            cls(**{**required, **values})


def test_the_group_flags_parse_in_every_command_with_that_commands_defaults():
    demo, = HfArgumentParser(DemoConfig).parse_args_into_dataclasses([])
    sft, = HfArgumentParser(MaskedSFTConfig).parse_args_into_dataclasses(["--output_dir", "/tmp/unused"])
    train, = HfArgumentParser(DiPODConfig).parse_args_into_dataclasses(["--output_dir", "/tmp/unused"])
    assert (demo.elbo_num_samples, demo.elbo_estimator) == (sft.elbo_num_samples, sft.elbo_estimator) == (1, "mc")
    assert (train.elbo_num_samples, train.elbo_estimator) == (2, "antithetic")
    flags = ["--elbo_num_samples", "4", "--elbo_estimator", "stratified", "--dipod_beta", "0.1"]
    demo, = HfArgumentParser(DemoConfig).parse_args_into_dataclasses(flags)
    assert (demo.elbo_num_samples, demo.elbo_estimator, demo.dipod_beta) == (4, "stratified", 0.1)
    fast = ["--kv_cache", "dual", "--cache_refresh_steps", "2", "--confidence_threshold", "0.9"]
    evaluation, = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(["--task", "digit_sort", "--model", "m"]
                                                                             + fast)
    assert evaluation.fast_decoding() == dict(kv_cache="dual", cache_refresh_steps=2, confidence_threshold=0.9)


@pytest.mark.parametrize("values,match", GENERATE_KEYWORDS + [
    (dict(confidence_threshold=0.0), "confidence_threshold must be in"),
    (dict(kv_cache="dual", cache_refresh_steps=0), "cache_refresh_steps must be a positive integer"),
    (dict(kv_cache="prefix", cfg_scale=1.0), "kv_cache does not support classifier-free guidance"),
])
def test_generate_refuses_the_same_values_by_keyword(tiny_lm, values, match):
    with pytest.raises(ValueError, match=match):
        dipod_trl.generate(tiny_lm, torch.ones(1, 3, dtype=torch.long), **{**dict(gen_length=4, block_length=4,
                                                                                    steps=4), **values})
