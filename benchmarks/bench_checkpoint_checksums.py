"""What the checkpoint marker's SHA-256 of every file costs: at save (`mark_complete`) and at resume
(`checkpoint_problem`), next to the save itself, on the tiny model's checkpoint and on a bigger file.

    python benchmarks/bench_checkpoint_checksums.py [--mib 1024]

The save is `torch.save` of the tensors plus the flush to disk that `mark_complete` did before checksums existed;
the ratios say how much longer a save and a resume check take with the checksums. Hashing runs at the CPU's SHA-256
rate (one thread per file, up to 8 files at once), so on a sharded multi-GB checkpoint it scales with the files.
"""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from dipod_trl.models import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from dipod_trl.saving.checkpoints import checkpoint_problem, mark_complete  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, tensors: dict, folder: str) -> None:
    os.makedirs(folder)
    path = os.path.join(folder, "weights.pt")

    def save():
        torch.save(tensors, path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())

    save_s = timed(save)
    mark_s = timed(lambda: mark_complete(folder))
    check_s = timed(lambda: checkpoint_problem(folder))
    size = os.path.getsize(path) / 2**20
    print(f"{name}: {size:.1f} MiB; save {save_s:.3f} s, marker with checksums {mark_s:.3f} s "
          f"({mark_s / save_s:.2f} x the save), resume check {check_s:.3f} s ({size / max(check_s, 1e-9):.0f} MiB/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="Size of the bigger file, in MiB.")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    model = build_tiny_model(build_tiny_tokenizer())
    with tempfile.TemporaryDirectory() as root:
        measure("tiny model", dict(model.state_dict()), os.path.join(root, "tiny"))
        big = {"weight": torch.randn(args.mib * 2**18)}  # float32: 4 bytes each
        measure("bigger file", big, os.path.join(root, "big"))


if __name__ == "__main__":
    main()
