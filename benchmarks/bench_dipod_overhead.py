"""What DiPOD's self-distillation term costs per update: `dipod_beta=0.05` vs `0`, side by side.

    python benchmarks/bench_dipod_overhead.py [--repeats 200]

The term reuses the ELBO the objective already computes (no extra forward pass): the only extra work is one scalar
in the loss. The last column counts the sequences the model scores in one loss + backward with each setting (a
forward hook): equal counts are the check that DiPOD adds no forward pass. For each objective, one generation
batch of the demo's tiny model on digit_sort (64 completions) is scored and back-propagated `repeats` times with
each setting, alternating, on identical inputs; the ratio compares median times. (Comparing whole training runs
instead would measure how the runs differ, e.g. in completion length.)
"""

import argparse
import statistics
import time

import torch
from _common import tiny_model

from dipod_trl import DiPODConfig, DiPODTrainer
from dipod_trl.tasks.digit_sort import load as load_digit_sort

# Per objective, the settings it needs besides the shared ones.
OBJECTIVES = {"fpo": {}, "diffu_grpo": {}, "spg": {}, "espo": {}, "gdpo": {"elbo_estimator": "quadrature"}}


def update_times(objective: str, repeats: int) -> tuple[dict[float, list[float]], dict[float, int]]:
    from reward_models import exact_match_accuracy

    model, tokenizer = tiny_model(sft_steps=100)  # a model that sorts about half the time: real advantages
    args = DiPODConfig(output_dir="/tmp/dipod-bench-overhead", objective=objective, per_device_train_batch_size=64,
                       num_generations=8, max_completion_length=8, block_length=4, diffusion_steps=8,
                       drift_num_orders=0, report_to="none", seed=0, **OBJECTIVES[objective])
    trainer = DiPODTrainer(model.train(), exact_match_accuracy, args=args, processing_class=tokenizer,
                           train_dataset=load_digit_sort("train", num_examples=64))
    rows = [trainer.train_dataset[i // 8] for i in range(64)]
    inputs = trainer._generate_and_score_completions(rows)
    times = {0.0: [], 0.05: []}
    rows = {0.0: 0, 0.05: 0}  # sequences through the model in one loss + backward
    counting = [None]
    hook = trainer.model.register_forward_hook(
        lambda module, args, kwargs, out: rows.__setitem__(counting[0], rows[counting[0]] + kwargs.get(
            "input_ids", args[0] if args else None).shape[0]) if counting[0] is not None else None, with_kwargs=True)
    for beta in rows:
        trainer.args.dipod_beta, counting[0] = beta, beta
        trainer._compute_loss(trainer.model, inputs).backward()
        trainer.model.zero_grad()
    counting[0] = None
    hook.remove()
    for _ in range(repeats):
        for beta in times:
            trainer.args.dipod_beta = beta
            start = time.perf_counter()
            trainer._compute_loss(trainer.model, inputs).backward()
            times[beta].append(time.perf_counter() - start)
            trainer.model.zero_grad()
    return times, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"loss + backward on one batch of 64 completions, tiny model, digit_sort, {args.repeats} alternating "
          f"repeats per setting; CPU, {torch.get_num_threads()} torch threads")
    print(f"{'objective':<12}{'beta=0 (ms)':>13}{'beta=0.05 (ms)':>16}{'overhead':>10}{'sequences scored':>26}")
    for objective in OBJECTIVES:
        times, rows = update_times(objective, args.repeats)
        base, dipod = statistics.median(times[0.0]), statistics.median(times[0.05])
        print(f"{objective:<12}{base * 1000:>13.2f}{dipod * 1000:>16.2f}{100 * (dipod / base - 1):>+9.1f}%"
              f"{rows[0.0]:>13d} vs {rows[0.05]:>4d}")
    print("target: <= 5%")


if __name__ == "__main__":
    main()
