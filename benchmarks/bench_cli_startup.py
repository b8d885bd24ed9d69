"""Wall time of `dipod` commands that should answer at once, for this checkout and, side by side, another one.

    python benchmarks/bench_cli_startup.py                       # this checkout
    python benchmarks/bench_cli_startup.py --baseline ../other   # and another checkout of the project, e.g. main

Each command runs `--repeats` times as `python -m dipod_trl ...` with PYTHONPATH set to the checkout; the table
shows the median seconds. A command that fails in a checkout (such as `--version` before it existed) shows its exit
status instead of a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = (["--help"], ["--version"], ["train", "--help"])


def median_seconds(checkout: str, command: list[str], repeats: int) -> str:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "dipod_trl", *command], env=env, cwd=checkout,
                                capture_output=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            return f"exit {result.returncode}"
    return f"{statistics.median(times):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="Another checkout of the project to time next to this one.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkouts = {"this checkout": ROOT, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"{'command':<22}" + "".join(f"{name:>16}" for name in checkouts))
    for command in COMMANDS:
        cells = [median_seconds(path, command, args.repeats) for path in checkouts.values()]
        print(f"{'dipod ' + ' '.join(command):<22}" + "".join(f"{cell:>16}" for cell in cells))


if __name__ == "__main__":
    main()
