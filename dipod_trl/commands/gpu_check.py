"""`python -m dipod_trl.commands.gpu_check` (scripts/gpu_check.sh): the GPU path end to end, offline, in a few minutes.

A LLaDA-8B-shaped model (width 4096, MLP 12288, 32 heads, the full 126,464-token vocabulary) with 2 layers instead of
32 gets random weights, so nothing is downloaded; then, each step timed and its peak GPU memory recorded:

1. bf16 and 4-bit NF4 loading through the recipes' loading path (output head and embeddings kept in bf16);
2. generation with and without the block KV cache;
3. a few training steps of the paper recipe (recipes/paper/fpo_gsm8k.yaml: FPO + DiPOD, QLoRA r=128, its keys as
   written, only model, data and length of run replaced) with its `elbo_grad_chunk_size` and without it, each step's
   peak memory next to docs/memory.md's arithmetic for this model;
4. the same recipe under DeepSpeed ZeRO-2 (recipes/accelerate/zero2.yaml) when more than one GPU is visible;
5. the block diffusion families at their published shapes, 2 layers, full vocabularies: SDAR-8B (dense, Qwen3) and
   LLaDA2.0-mini (mixture of experts: 256 experts of which 8 per token, a shared expert): bf16 and NF4 loading, LoRA
   on the family's declared targets with one optimizer step of the masked-diffusion loss under the block-causal mask,
   and generation.

It writes one JSON report (default gpu_check.json) and exits non-zero when any check failed. `--cpu` runs the same
checks at small shapes on the CPU (bitsandbytes' CPU backend for NF4), so the test suite keeps this script working.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the checkout: dipod_trl/commands/ is two levels down
RECIPE = ROOT / "recipes" / "paper" / "fpo_gsm8k.yaml"
ZERO2 = ROOT / "recipes" / "accelerate" / "zero2.yaml"
# LLaDA-8B's shapes (its published config.json), fewer layers; --cpu: the same architecture, small.
LLADA_8B = dict(d_model=4096, n_heads=32, n_kv_heads=32, mlp_hidden_size=12288, vocab_size=126464,
                embedding_size=126464, max_sequence_length=4096)
SMALL = dict(d_model=64, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=512, embedding_size=512,
             max_sequence_length=512)
# SDAR-8B's and LLaDA2.0-mini's shapes (their published config.json), 2 layers; --cpu: the same architectures, small.
SDAR_8B = dict(hidden_size=4096, intermediate_size=12288, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
               vocab_size=151936, max_position_embeddings=32768)
LLADA2_MINI = dict(hidden_size=2048, intermediate_size=5120, num_attention_heads=16, num_key_value_heads=4,
                   head_dim=128, vocab_size=157184, max_position_embeddings=32768, num_experts=256,
                   num_experts_per_tok=8, n_group=8, topk_group=4, moe_intermediate_size=512, num_shared_experts=1,
                   first_k_dense_replace=1)
BLOCK_SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   vocab_size=512, max_position_embeddings=512)
BLOCK_SMALL_MOE = dict(num_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, moe_intermediate_size=16,
                       num_shared_experts=1, first_k_dense_replace=1)
# What a run on one GPU replaces in the recipe: its model, its data (written here), how long it runs, and logging.
RUN_OVERRIDES = ["--trust_remote_code", "false", "--num_train_examples", "12", "--eval_strategy", "no",
                 "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1", "--disable_tqdm", "true",
                 "--drift_every", "1"]
# --cpu: the recipes/cpu_smoke.sh lengths (bf16 mixed precision needs CUDA; the 4-bit load stays, on bitsandbytes' CPU
# backend).
CPU_OVERRIDES = ["--bf16", "false", "--max_prompt_length", "48", "--max_completion_length", "8", "--block_length", "4",
                 "--diffusion_steps", "4", "--num_generations", "2", "--per_device_train_batch_size", "2",
                 "--gradient_accumulation_steps", "1", "--num_iterations", "2", "--elbo_chunk_size", "2",
                 "--drift_num_orders", "1", "--drift_num_sequences", "1"]


class Report:
    """The checks run so far, each with its outcome, time, peak memory and details; written as one JSON file."""

    def __init__(self, path: str, mode: str):
        self.path, self.data = path, {"mode": mode, "ok": True, "environment": environment(), "checks": []}

    @contextmanager
    def check(self, name: str):
        entry = {"name": name, "ok": False, "details": {}}
        self.data["checks"].append(entry)
        reset_peak()
        start = time.perf_counter()
        try:
            yield entry["details"]
            entry["ok"] = True
        except Exception as error:  # every failure is recorded, and the other checks still run
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["traceback"] = traceback.format_exc(limit=8)
            self.data["ok"] = False
            print(f"gpu_check: {name} FAILED: {entry['error']}", file=sys.stderr)
        finally:
            entry["seconds"] = round(time.perf_counter() - start, 2)
            entry["peak_mib"] = peak_mib()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.write()
        print(f"gpu_check: {name}: {'ok' if entry['ok'] else 'FAILED'} ({entry['seconds']} s)")

    def skip(self, name: str, why: str) -> None:
        self.data["checks"].append({"name": name, "ok": True, "skipped": why})
        self.write()

    def write(self) -> None:
        Path(self.path).write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def environment() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    for package in ("transformers", "trl", "peft", "accelerate", "bitsandbytes", "deepspeed"):
        try:
            info[package] = __import__(package).__version__
        except Exception as error:  # a missing optional package is a fact to report, not a failure here
            info[package] = f"not importable ({type(error).__name__})"
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    return info


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float | None:
    if not torch.cuda.is_available():
        return None  # the CPU allocator keeps no peak
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def memory_arithmetic(shapes: dict, layers: int, *, quantized: bool, lora_r: int, rows: int, tokens: int,
                      completion: int) -> dict:
    """docs/memory.md's arithmetic for this model, in MiB: weights, LoRA with Adam, and the gradient pass's activations
    (about 25 bf16 values per token, layer and width; the float32 log-softmax of the completion and bf16 logits)."""
    d, f, vocab = shapes["d_model"], shapes["mlp_hidden_size"], shapes["embedding_size"]
    linear = layers * (4 * d * d + 3 * d * f)
    embeddings = 2 * vocab * d  # input embeddings and output head, untied, kept in bf16
    weights = linear * 0.5 * 1.03 + embeddings * 2 if quantized else (linear + embeddings) * 2
    lora = layers * lora_r * (3 * 2 * d + d + f) * 16  # q, k, v, up_proj (LLaDA's matches of d1's list); Adam
    per_row = 25 * d * 2 * layers * tokens + completion * vocab * 4 + tokens * vocab * 2
    mib = 2**20
    return {"weights": round(weights / mib, 1), "lora_and_adam": round(lora / mib, 1),
            "activations": round(rows * per_row / mib, 1), "rows": rows, "tokens_per_row": tokens,
            "peak": round((weights + lora + rows * per_row) / mib, 1)}


def build_checkpoint(directory: str, shapes: dict, layers: int) -> dict:
    """Random weights at `shapes` with `layers` layers, saved in bf16 with the built-in tokenizer (its mask, EOS and
    pad ids written into the config, so nothing is downloaded)."""
    from ..models import LLaDAConfig, LLaDAModelLM, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LLaDAConfig(**shapes, n_layers=layers, mask_token_id=tokenizer.mask_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LLaDAModelLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()), "layers": layers, **shapes}


def write_prompts(path: str, n: int = 12) -> None:
    rows = [{"question": f"A shop sells {i + 2} boxes of {i + 5} pens. How many pens?",
             "answer": f"#### {(i + 2) * (i + 5)}"} for i in range(n)]
    Path(path).write_text("\n".join(json.dumps(row) for row in rows) + "\n")


def logits_of(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["Natalia sold clips to 48 of her friends."] * 2, return_tensors="pt")
    ids = batch["input_ids"].to(next(model.parameters()).device)
    ids[:, -8:] = tokenizer.mask_token_id
    with torch.no_grad():
        return model.eval()(ids).logits.float()


def check_loading(report: Report, checkpoint: str, shapes: dict, layers: int, lora_r: int) -> None:
    import bitsandbytes as bnb
    from trl import ModelConfig

    from .model_setup import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with report.check("load_bf16") as details:
        model, tokenizer = load_model_and_tokenizer(
            ModelConfig(model_name_or_path=checkpoint, dtype="bfloat16"), trust_remote_code=False)
        model.to(device)
        bf16_logits = logits_of(model, tokenizer)
        details["footprint_mib"] = round(model.get_memory_footprint() / 2**20, 1)
        details["arithmetic_mib"] = memory_arithmetic(shapes, layers, quantized=False, lora_r=lora_r, rows=0,
                                                      tokens=0, completion=0)["weights"]
        del model
    with report.check("load_nf4") as details:
        nf4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True, dtype="bfloat16")
        model, tokenizer = load_model_and_tokenizer(ModelConfig(model_name_or_path=checkpoint, **nf4),
                                                    trust_remote_code=False)
        quantised = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        head, embeddings = model.model.transformer.ff_out, model.model.transformer.wte
        if len(quantised) != 7 * layers or isinstance(head, bnb.nn.Linear4bit):
            raise AssertionError(f"expected the {7 * layers} block linears in 4-bit and the head in bf16, got "
                                 f"{len(quantised)} 4-bit layers, head {type(head).__name__}")
        if head.weight.dtype != torch.bfloat16 or embeddings.weight.dtype != torch.bfloat16:
            raise AssertionError(f"head {head.weight.dtype}, embeddings {embeddings.weight.dtype}: expected bf16")
        error = (logits_of(model, tokenizer) - bf16_logits).abs().max() / bf16_logits.abs().max()
        details.update(quantised_layers=len(quantised), logits_max_relative_error_vs_bf16=round(error.item(), 4),
                       footprint_mib=round(model.get_memory_footprint() / 2**20, 1),
                       arithmetic_mib=memory_arithmetic(shapes, layers, quantized=True, lora_r=lora_r, rows=0,
                                                        tokens=0, completion=0)["weights"])
        if not error < 0.5:
            raise AssertionError(f"NF4 logits are {error:.3f} (max, relative) from bf16's: quantisation is broken")
        del model


def check_generation(report: Report, checkpoint: str, gen_length: int, block_length: int, steps: int) -> None:
    from .. import generate
    from ..models import load_diffusion_model, load_diffusion_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_diffusion_model(checkpoint, dtype=torch.bfloat16).to(device).eval()
    tokenizer = load_diffusion_tokenizer(checkpoint, padding_side="left")
    prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(4)]
    batch = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, return_dict=True, return_tensors="pt",
                                          padding=True)
    for kv_cache in (None, "dual"):
        with report.check(f"generate_kv_cache_{kv_cache}") as details:
            ids, mask = generate(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                 tokenizer=tokenizer, gen_length=gen_length, block_length=block_length, steps=steps,
                                 kv_cache=kv_cache)
            if ids.shape != (4, gen_length):
                raise AssertionError(f"completions of shape {tuple(ids.shape)}, expected (4, {gen_length})")
            details.update(completion_tokens=int(mask.sum()), gen_length=gen_length, steps=steps)
    del model


def train_steps(report: Report, name: str, argv: list[str], shapes: dict, layers: int) -> None:
    """The recipe through the CLI's own parsing, loading and trainer, each optimizer step's peak memory recorded."""
    from transformers import TrainerCallback

    from ..config import DiPODConfig
    from ..trainer import DiPODTrainer
    from . import cli
    from .lora import diffusion_peft_config
    from .model_setup import load_model_and_tokenizer
    from .reward_resolution import resolve_rewards
    from .task_data import load_datasets

    steps = []

    class StepMemory(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            reset_peak()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            steps.append({"step": state.global_step, "seconds": round(time.perf_counter() - self.start, 2),
                          "peak_mib": peak_mib()})

    def run(model_args, task_args, config, checkpoint):
        train_data, _ = load_datasets(task_args)
        model, tokenizer = load_model_and_tokenizer(model_args, config.trust_remote_code)
        funcs, weights = resolve_rewards(task_args, config.reward_weights, config.reward_nan_policy)
        config.reward_weights = weights
        trainer = DiPODTrainer(model, funcs, args=config, train_dataset=train_data, processing_class=tokenizer,
                               peft_config=diffusion_peft_config(model_args, model), callbacks=[StepMemory()])
        trainer.train()
        return trainer

    with report.check(name) as details:
        trainer = cli._run_recipe("train", argv, DiPODConfig, run)
        args = trainer.args
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        if len(losses) != args.max_steps or not all(torch.isfinite(torch.tensor(losses))):
            raise AssertionError(f"expected {args.max_steps} finite losses, got {losses}")
        rows = args.per_device_train_batch_size * args.elbo_num_samples
        rows = min(rows, args.elbo_grad_chunk_size or rows)
        lora_r = trainer.model.peft_config["default"].r
        adapters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        details.update(losses=losses, steps=steps, elbo_grad_chunk_size=args.elbo_grad_chunk_size, lora_r=lora_r,
                       lora_parameters=adapters, arithmetic_mib=memory_arithmetic(
                           shapes, layers, quantized=True, lora_r=lora_r, rows=rows,
                           tokens=args.max_prompt_length + args.max_completion_length,
                           completion=args.max_completion_length))
        del trainer


def block_model_config(family: str, cpu: bool, layers: int, tokenizer):
    """The SDAR-8B- ("sdar") or LLaDA2.0-mini-shaped ("llada2_moe") config with `layers` layers, the tokenizer's
    special ids; small shapes with `cpu`."""
    from ..models import LLaDA2MoeConfig, SDARConfig

    ids = dict(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, num_hidden_layers=layers)
    if family == "sdar":
        return SDARConfig(**(BLOCK_SMALL if cpu else SDAR_8B), **ids)
    return LLaDA2MoeConfig(**({**BLOCK_SMALL, **BLOCK_SMALL_MOE} if cpu else LLADA2_MINI), **ids)


def check_block_model(report: Report, family: str, work: str, cpu: bool, layers: int) -> None:
    """bf16 and NF4 loading, LoRA with one optimizer step of the masked-diffusion loss under the block-causal mask,
    and generation, for one block diffusion family; each check's peak memory in the report."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from trl import ModelConfig

    from .. import generate
    from ..models import NATIVE_MODELS, block_causal_mask, build_tiny_tokenizer
    from .model_setup import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    checkpoint = os.path.join(work, family)
    with report.check(f"{family}_random_checkpoint") as details:
        tokenizer = build_tiny_tokenizer()
        config = block_model_config(family, cpu, layers, tokenizer)
        torch.manual_seed(0)
        with torch.device(device):
            model = NATIVE_MODELS[family](config).to(torch.bfloat16)
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        details.update(parameters=sum(p.numel() for p in model.parameters()), layers=layers,
                       vocab_size=config.vocab_size)
        del model
    with report.check(f"{family}_load_bf16") as details:
        model, tokenizer = load_model_and_tokenizer(ModelConfig(model_name_or_path=checkpoint, dtype="bfloat16"),
                                                    trust_remote_code=False)
        bf16_logits = logits_of(model.to(device), tokenizer)
        details["footprint_mib"] = round(model.get_memory_footprint() / 2**20, 1)
        del model
    with report.check(f"{family}_load_nf4_lora_train_step") as details:
        nf4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=True, dtype="bfloat16")
        model, tokenizer = load_model_and_tokenizer(ModelConfig(model_name_or_path=checkpoint, **nf4),
                                                    trust_remote_code=False)
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        quantised = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        if set(linear) - set(quantised) != {"lm_head"}:
            raise AssertionError(f"expected every block linear in 4-bit and lm_head in bf16; not 4-bit: "
                                 f"{sorted(set(linear) - set(quantised))}")
        error = (logits_of(model, tokenizer) - bf16_logits).abs().max() / bf16_logits.abs().max()
        model = get_peft_model(model, LoraConfig(r=16, target_modules=list(type(model).lora_target_modules)))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        block = type(model.get_base_model()).diffusion_traits.default_block_length
        length = 2 * block if cpu else 256
        ids = torch.randint(0, 256, (2, length), device=device)
        noisy = torch.where(torch.rand(ids.shape, device=device) < 0.5, tokenizer.mask_token_id, ids)
        reset_peak()
        mask = block_causal_mask(torch.ones(1, length, dtype=torch.bool, device=device), block)
        logits = model(noisy, attention_mask=mask.expand(2, -1, -1, -1)).logits
        masked = noisy == tokenizer.mask_token_id
        loss = torch.nn.functional.cross_entropy(logits[masked].float(), ids[masked])
        loss.backward()
        optimizer.step()
        details.update(quantised_layers=len(quantised), logits_max_relative_error_vs_bf16=round(error.item(), 4),
                       footprint_mib=round(model.get_memory_footprint() / 2**20, 1), loss=loss.item(),
                       tokens=2 * length, peak_mib=peak_mib())
        if not (error < 0.5 and torch.isfinite(loss)):
            raise AssertionError(f"NF4 logits {error:.3f} from bf16's, loss {loss.item()}")
        del model, optimizer
    with report.check(f"{family}_generate") as details:
        model, tokenizer = load_model_and_tokenizer(ModelConfig(model_name_or_path=checkpoint, dtype="bfloat16"),
                                                    trust_remote_code=False)
        tokenizer.padding_side = "left"
        batch = tokenizer([f"What is {i} + {i}?" for i in range(4)], return_tensors="pt", padding=True)
        gen_length = 8 if cpu else 128
        block = type(model).diffusion_traits.default_block_length
        reset_peak()
        ids, mask = generate(model.to(device).eval(), batch["input_ids"].to(device),
                             batch["attention_mask"].to(device), tokenizer=tokenizer, gen_length=gen_length,
                             block_length=min(block, gen_length), steps=gen_length)
        details.update(completion_tokens=int(mask.sum()), gen_length=gen_length, peak_mib=peak_mib())
        del model


def check_zero2(report: Report, argv: list[str]) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        report.skip("train_zero2", f"{gpus} GPU(s) visible; ZeRO-2 needs at least 2")
        return
    with report.check("train_zero2") as details:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO2),
                   "--num_processes", str(gpus), "-m", "dipod_trl", *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=480, cwd=ROOT)
        details.update(processes=gpus, returncode=result.returncode, log_tail=result.stderr[-2000:])
        if result.returncode != 0:
            raise RuntimeError(f"accelerate launch exited with {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="Small shapes on the CPU (what the test suite runs).")
    parser.add_argument("--report", default="gpu_check.json", help="Where the JSON report is written.")
    parser.add_argument("--layers", type=int, default=2, help="Transformer layers (LLaDA-8B has 32).")
    parser.add_argument("--steps", type=int, default=2, help="Optimizer steps per training check.")
    parser.add_argument("--recipe", default=str(RECIPE), help="The recipe trained (default: the paper's FPO gsm8k).")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); check the driver "
                         "(nvidia-smi; CUDA 13 wheels need driver 580+) and CUDA_VISIBLE_DEVICES, or run --cpu.")
    shapes = SMALL if args.cpu else LLADA_8B
    report = Report(args.report, "cpu" if args.cpu else "gpu")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        checkpoint, data = os.path.join(work, "model"), os.path.join(work, "gsm8k.jsonl")
        with report.check("random_checkpoint") as details:
            details.update(build_checkpoint(checkpoint, shapes, args.layers))
        write_prompts(data)
        argv = [args.recipe, "--model_name_or_path", checkpoint, "--dataset_source", data, "--max_steps",
                str(args.steps), *RUN_OVERRIDES, *(CPU_OVERRIDES if args.cpu else [])]
        check_loading(report, checkpoint, shapes, args.layers, lora_r=128)
        check_generation(report, checkpoint, *((8, 4, 4) if args.cpu else (256, 32, 128)))
        train_steps(report, "train_recipe", argv + ["--output_dir", os.path.join(work, "chunked")], shapes,
                    args.layers)
        train_steps(report, "train_recipe_unchunked", argv + ["--elbo_grad_chunk_size", "None", "--output_dir",
                                                              os.path.join(work, "unchunked")], shapes, args.layers)
        check_zero2(report, argv + ["--output_dir", os.path.join(work, "zero2")])
        for family in ("sdar", "llada2_moe"):
            check_block_model(report, family, work, args.cpu, args.layers)
    failed = [c["name"] for c in report.data["checks"] if not c["ok"]]
    print(f"gpu_check: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}; report: {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
