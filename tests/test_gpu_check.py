"""scripts/gpu_check.sh --cpu: the GPU check's every step at small shapes on the CPU, so that it keeps working where
no GPU is at hand; and a failing check makes the exit status non-zero and is named in the report."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from dipod_trl.commands import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = ["random_checkpoint", "load_bf16", "load_nf4", "generate_kv_cache_None", "generate_kv_cache_dual",
          "train_recipe", "train_recipe_unchunked", "train_zero2"] + [
    f"{family}_{check}" for family in ("sdar", "llada2_moe")
    for check in ("random_checkpoint", "load_bf16", "load_nf4_lora_train_step", "generate")]


@pytest.mark.slow  # one process through every check: about 10 s of CPU, a minute on a busy machine
def test_gpu_check_cpu_mode_passes_every_check_and_writes_its_report(tmp_path):
    report_path = tmp_path / "report.json"
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu", "--report", str(report_path)], cwd=ROOT,
                            env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ROOT},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] and report["mode"] == "cpu" and list(checks) == CHECKS
    assert all(check["ok"] for check in checks.values())
    assert checks["train_zero2"]["skipped"].startswith("0 GPU(s) visible")
    nf4 = checks["load_nf4"]["details"]
    assert nf4["quantised_layers"] == 14 and 0 < nf4["logits_max_relative_error_vs_bf16"] < 0.5
    chunked, unchunked = checks["train_recipe"]["details"], checks["train_recipe_unchunked"]["details"]
    assert (chunked["elbo_grad_chunk_size"], unchunked["elbo_grad_chunk_size"]) == (6, None)  # the recipe's, and off
    assert chunked["lora_r"] == 128 and len(chunked["steps"]) == 2 and all(map(math.isfinite, chunked["losses"]))
    # chunking the gradient pass changes memory, not the numbers
    assert unchunked["losses"] == pytest.approx(chunked["losses"], rel=1e-5)
    assert chunked["arithmetic_mib"]["rows"] == 6 and unchunked["arithmetic_mib"]["rows"] == 8


def test_block_model_configs_have_the_published_shapes_and_full_vocabularies():
    from dipod_trl.models import LLaDA2MoeModelLM, SDARForCausalLM, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    sdar = gpu_check.block_model_config("sdar", False, 2, tokenizer)
    llada2 = gpu_check.block_model_config("llada2_moe", False, 2, tokenizer)
    assert (sdar.hidden_size, sdar.intermediate_size, sdar.num_key_value_heads, sdar.vocab_size) == (4096, 12288, 8,
                                                                                                     151936)
    assert (llada2.num_experts, llada2.num_experts_per_tok, llada2.vocab_size, llada2.rope_dim) == (256, 8, 157184, 64)
    assert sdar.num_hidden_layers == llada2.num_hidden_layers == 2 and sdar.mask_token_id == tokenizer.mask_token_id
    # the parameter count of the 2-layer shapes, from meta tensors (nothing allocated)
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in cls(config).parameters())
                  for name, cls, config in (("sdar", SDARForCausalLM, sdar), ("llada2", LLaDA2MoeModelLM, llada2))}
    assert counts["sdar"] == 2 * 151936 * 4096 + 2 * (4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 12288
                                                      + 2 * 4096 + 2 * 128) + 4096
    attention = 2048 * (16 + 2 * 4) * 128 + 2048 * 2048 + 2 * 128 + 2 * 2048  # qkv, dense, q/k norms, layer norms
    dense_layer = attention + 3 * 2048 * 5120
    moe_layer = attention + 256 * 2048 + 256 * 3 * 2048 * 512 + 3 * 2048 * 512  # router, experts, shared expert
    assert counts["llada2"] == 2 * 157184 * 2048 + dense_layer + moe_layer + 2048
    small = gpu_check.block_model_config("llada2_moe", True, 2, tokenizer)
    assert small.hidden_size == 64 and small.num_experts == 8


def test_memory_arithmetic_reproduces_docs_memory_for_llada_8b():
    # docs/memory.md: 32 layers in bf16 16.0 GB, NF4 5.7 GB, LoRA r=128 with Adam 2.7 GB, 6 rows of 512 tokens
    # without checkpointing 21.7 GB (all in 10^9 bytes)
    full = dict(gpu_check.LLADA_8B)
    bf16 = gpu_check.memory_arithmetic(full, 32, quantized=False, lora_r=128, rows=6, tokens=512, completion=256)
    nf4 = gpu_check.memory_arithmetic(full, 32, quantized=True, lora_r=128, rows=6, tokens=512, completion=256)
    gb = 2**20 / 1e9
    assert round(bf16["weights"] * gb, 1) == 16.0 and round(nf4["weights"] * gb, 1) == 5.7
    assert round(bf16["lora_and_adam"] * gb, 1) == 2.7 and round(bf16["activations"] * gb, 1) == 21.7


@pytest.mark.slow  # builds, loads and generates before the training checks fail: seconds of CPU
def test_a_failing_check_is_reported_and_makes_the_exit_status_non_zero(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    status = gpu_check.main(["--cpu", "--report", str(report_path), "--recipe", str(tmp_path / "missing.yaml")])
    report = json.loads(report_path.read_text())
    failed = [check["name"] for check in report["checks"] if not check["ok"]]
    assert status == 1 and not report["ok"] and failed == ["train_recipe", "train_recipe_unchunked"]
    assert "missing.yaml" in report["checks"][5]["error"]
    assert "FAILED: train_recipe, train_recipe_unchunked" in capsys.readouterr().out
