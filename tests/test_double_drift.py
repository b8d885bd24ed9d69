"""The long-task drift sweep script end to end on one tiny cell: it runs, resumes without running a finished run
again, and writes every run's values to the CSV, the table into the docs page and the figure."""

import csv
import json
import math
import os
import random
import statistics
import sys

import pytest

from dipod_trl.commands.demo import quarter_mean

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import double_drift  # noqa: E402
import double_drift_long  # noqa: E402

START, END = ("<!-- long table: start (benchmarks/double_drift_long.py writes it) -->", "<!-- long table: end -->")


def sweep(tmp_path, capsys, *args) -> str:
    """The script's main at tiny sizes, its runs in this process; returns what it printed."""
    import torch

    tiny = ["--sft-dir", str(tmp_path / "sft"), "--sft-steps", "1", "--generations", "2", "--batch-size", "8",
            "--drift-sequences", "2", "--drift-every", "1", "--eval-examples", "4", "--seeds", "0",
            "--objectives", "spg", "--learning-rates", "0.0001", "--output-dir", str(tmp_path / "runs"),
            "--docs-dir", str(tmp_path / "docs"), "--workers", "0"]
    threads = torch.get_num_threads()
    try:
        double_drift_long.main([*tiny, *args])
    finally:
        torch.set_num_threads(threads)  # a run sets one thread
    return capsys.readouterr().out


@pytest.mark.slow
def test_long_sweep_runs_a_tiny_cell_resumes_and_summarises(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "double_drift.md"
    page.write_text(f"by hand above\n{START}\nold table\n{END}\nby hand below\n")

    out = sweep(tmp_path, capsys, "--methods", "base")  # as if the sweep had stopped after its first run
    assert "0 of 1 runs already finished" in out and "1 runs to go, on no worker processes" in out
    (base_result,) = (tmp_path / "runs").rglob("run_2_batches.json")
    before = base_result.stat().st_mtime_ns

    out = sweep(tmp_path, capsys, "--methods", "base", "+DiPOD 0.2")
    assert "1 of 2 runs already finished" in out and "1 runs to go, on no worker processes" in out
    assert base_result.stat().st_mtime_ns == before  # the finished run was kept, not run again

    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").rglob("run_2_batches.json"))]
    assert sorted((r["method"], r["dipod_beta"], len(r["reward"])) for r in runs) == [
        ("+DiPOD 0.2", 0.2, 2), ("base", 0.0, 2)]
    rows = list(csv.DictReader(open(tmp_path / "docs" / "double_drift_long.csv")))
    assert len(rows) == 2
    for row in rows:  # the CSV holds each run's own values
        (run,) = [r for r in runs if r["method"] == row["method"]]
        assert float(row["reward (last 25%)"]) == pytest.approx(quarter_mean(run["reward"]), abs=1e-5)
        assert float(row["held-out per-character accuracy"]) == pytest.approx(run["eval_char_accuracy"], abs=1e-5)
        assert float(row["held-out exact match"]) == pytest.approx(run["eval_exact_match"], abs=1e-5)
    assert os.path.getsize(tmp_path / "docs" / "double_drift_long.png") > 10_000
    text = page.read_text()
    assert text.startswith("by hand above\n") and text.endswith(f"{END}\nby hand below\n")
    assert "old table" not in text and "| spg | 4 iters, 2 block_random samples, lr 0.0001 | +DiPOD 0.2 | 1 |" in text
    assert "| objective | cell | comparison | seeds |" in text  # the detectable differences (none at one seed)

    (tmp_path / "docs" / "double_drift_long.csv").unlink()
    out = sweep(tmp_path, capsys, "--summarise-only")  # the whole grid asked for: it summarises what has finished
    assert "runs to go" not in out and "not every method finished" in out
    assert len(list(csv.DictReader(open(tmp_path / "docs" / "double_drift_long.csv")))) == 2

    confirm, main_page = tmp_path / "docs" / "confirm.md", page.read_text()
    confirm.write_text(f"fixed beforehand\n{START}\n(not run yet)\n{END}\n")
    sweep(tmp_path, capsys, "--summarise-only", "--methods", "base", "+DiPOD 0.2", "--docs-name", "confirm",
          "--docs-page", "confirm.md")
    assert "| spg | 4 iters, 2 block_random samples, lr 0.0001 | base | 1 |" in confirm.read_text()
    assert len(list(csv.DictReader(open(tmp_path / "docs" / "confirm.csv")))) == 2
    assert (tmp_path / "docs" / "confirm.png").exists() and page.read_text() == main_page  # the main page untouched


def test_welch_intervals_hold_5_percent_and_the_detectable_difference_is_found_80_percent_of_the_time():
    """Simulated sweeps of 5 + 5 seeds with normal spread: with no true difference the 95% Welch interval excludes 0
    in about 5% of them; with a true difference equal to `detectable_difference` of unit-spread samples, in about
    80% (the power the docs' detectable-effect table claims)."""
    rng = random.Random(0)
    unit = [(x - 3) / statistics.stdev(range(1, 6)) for x in range(1, 6)]  # sample sd exactly 1
    size = double_drift.detectable_difference(unit, unit)
    assert size == pytest.approx((2.306 + 0.889) * math.sqrt(2 / 5), rel=1e-9)  # 8 degrees of freedom

    def rejection_rate(shift: float, trials: int = 4000) -> float:
        rejected = 0
        for _ in range(trials):
            a = [rng.gauss(shift, 1.0) for _ in range(5)]
            b = [rng.gauss(0.0, 1.0) for _ in range(5)]
            mean, half_width = double_drift.difference(a, b)
            rejected += abs(mean) > half_width
        return rejected / trials

    null, power = rejection_rate(0.0), rejection_rate(size)
    print(f"rejections: {null:.3f} with no difference, {power:.3f} at the detectable difference {size:.3f}")
    assert 0.035 < null < 0.065
    assert 0.75 < power < 0.85


def test_the_paired_table_differences_each_seeds_runs_and_counts_where_dipod_is_larger():
    """Three seeds whose DiPOD - base differences are 0.1, 0.3 and -0.1: mean 0.1, 95% t-interval
    4.303 x sd / sqrt(3), DiPOD larger on 2 of 3; a seed without every method is left out."""
    column = {"reward": lambda r: r["value"]}
    base = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.2}
    dipod = {0: 0.6, 1: 0.9, 2: 0.6}
    runs = [{"objective": "spg", "cell": "c", "method": "base", "seed": s, "value": v} for s, v in base.items()]
    runs += [{"objective": "spg", "cell": "c", "method": "+DiPOD 0.05", "seed": s, "value": v}
             for s, v in dipod.items()]
    text = double_drift_long.paired_table(runs, [("spg", "c")], {"base": 0.0, "+DiPOD 0.05": 0.05}, column)
    half_width = 4.303 * statistics.stdev([0.1, 0.3, -0.1]) / math.sqrt(3)
    assert text.splitlines()[-1] == f"| spg | c | DiPOD 0.05 - base | 3 | 0.100 ± {half_width:.3f} (2/3) |"
