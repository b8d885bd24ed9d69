"""Memory of one training step, per process: DDP, DeepSpeed ZeRO-2 and ZeRO-3 over two CPU processes, and how the
step's peak grows with the completion length and `elbo_num_samples`, with and without `elbo_grad_chunk_size`.

    python benchmarks/bench_memory.py                  # both tables (the distributed one launches 2 processes x 3)
    python benchmarks/bench_memory.py --skip_distributed     # or --skip_one_process

Model: the tiny masked diffusion LM widened to 4 layers of width 256 (3.3M parameters, 12.6 MiB in float32), so that
weights, gradients and Adam state are large enough to see. Two numbers per run, both from PyTorch's own accounting:

* `resident`: bytes of every live CPU tensor between steps (weights or their shard, gradients, optimizer state,
  DeepSpeed's flat buffers), counted once per storage;
* `step peak`: the highest extra memory during one training step (generation, scoring, loss, backward, optimizer
  step), from the allocations and frees the PyTorch profiler records.

`resident + step peak` bounds what the process needs. The step measured is the second one (Adam's state exists).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile

import torch
from _common import ROOT

WIDE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=256)


def live_tensor_bytes() -> tuple[int, int]:
    """Bytes of all live CPU tensors (each storage once) and of the largest one."""
    storages = {}
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (meta, functional wrappers)
            continue
    return sum(storages.values()), max(storages.values(), default=0)


def profiled_peak(profile) -> int:
    """Highest running sum of the allocations (+) and frees (-) an op made itself, in the order the ops started."""
    events = sorted((e for e in profile.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def measure(completion_length: int, num_samples: int, grad_chunk: int | None, batch: int = 16) -> dict:
    """Train two steps of the wide tiny model in this process (or this process of a launch); measure the second."""
    import warnings

    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging

    from dipod_trl import DiPODConfig, DiPODTrainer
    from dipod_trl.models import build_tiny_model, build_tiny_tokenizer
    from dipod_trl.tasks.digit_sort import load as load_digit_sort

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, **WIDE).train()
    args = DiPODConfig(
        output_dir=tempfile.mkdtemp(), objective="fpo", per_device_train_batch_size=batch, num_generations=8,
        max_completion_length=completion_length, block_length=completion_length // 2, diffusion_steps=4,
        elbo_num_samples=num_samples, elbo_grad_chunk_size=grad_chunk, drift_num_orders=0, max_steps=2,
        report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no", seed=0,
        max_prompt_length=64,
    )
    result = {}

    class Measure(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                gc.collect()
                result["resident"], result["largest"] = live_tensor_bytes()
                self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                      profile_memory=True)
                self.profile.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.profile.__exit__(None, None, None)
                result["step_peak"] = profiled_peak(self.profile)

    def reward(completions, **kwargs):
        return [float(len(c) % 3) for c in completions]

    trainer = DiPODTrainer(model, reward, args=args, processing_class=tokenizer, callbacks=[Measure()],
                           train_dataset=load_digit_sort("train", num_examples=64))
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return result


def mb(n: int) -> str:
    return f"{n / 2**20:8.1f}"


def sweep_one_process():
    print("One process, one training step of FPO (16 completions per step; chunk = 16 rows), step peak in MiB:")
    print(f"{'completion':>10} {'K':>3} {'unchunked':>10} {'chunked':>10} {'ratio':>6}")
    rows = [(32, k) for k in (2, 4, 8, 16)] + [(c, 4) for c in (16, 64, 128)]
    for length, k in rows:
        plain = measure(length, k, None)["step_peak"]
        chunked = measure(length, k, 16)["step_peak"]
        print(f"{length:>10} {k:>3} {mb(plain):>10} {mb(chunked):>10} {plain / chunked:6.2f}", flush=True)


def launch_distributed():
    configs = [("DDP", "cpu2.yaml"), ("ZeRO-2", "cpu2_zero2.yaml"), ("ZeRO-3", "cpu2_zero3.yaml")]
    print("\nTwo CPU processes, completion 32, K=4, 16 completions per process, MiB per process (rank 0 / rank 1):")
    print(f"{'launch':>8} {'resident':>19} {'largest buffer':>19} {'step peak':>19} {'resident + peak':>19}")
    for name, config in configs:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                       os.path.join(ROOT, "recipes", "accelerate", config), os.path.abspath(__file__), "--worker",
                       "--out", out]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name:>8} failed: {done.stderr[-2000:]}")
                continue
            ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in (0, 1)]
        cells = [" /".join(mb(r[key]) for r in ranks) for key in ("resident", "largest", "step_peak")]
        total = " /".join(mb(r["resident"] + r["step_peak"]) for r in ranks)
        print(f"{name:>8} {cells[0]:>19} {cells[1]:>19} {cells[2]:>19} {total:>19}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_distributed", action="store_true")
    parser.add_argument("--skip_one_process", action="store_true")
    parser.add_argument("--worker", action="store_true", help="internal: one process of a distributed launch")
    parser.add_argument("--out", help="internal: where a worker writes its numbers")
    args = parser.parse_args()
    if args.worker:
        result = measure(32, 4, None)
        rank = int(os.environ.get("RANK", "0"))
        with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        return
    torch.set_num_threads(1)
    if not args.skip_one_process:
        sweep_one_process()
    if not args.skip_distributed:
        launch_distributed()


if __name__ == "__main__":
    main()
