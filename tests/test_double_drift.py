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
    t_975, t_80 = double_drift.t_quantile(0.975, 8), double_drift.t_quantile(0.80, 8)  # 8 degrees of freedom
    assert (round(t_975, 6), round(t_80, 6)) == (2.306004, 0.888890)  # the t table's values
    assert size == pytest.approx((t_975 + t_80) * math.sqrt(2 / 5), rel=1e-12)

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
    half_width = 4.302653 * statistics.stdev([0.1, 0.3, -0.1]) / math.sqrt(3)  # t_0.975 at 2 degrees of freedom
    assert text.splitlines()[-1] == f"| spg | c | DiPOD 0.05 - base | 3 | 0.100 ± {half_width:.3f} (2/3) |"


def _t_density(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def _simpson(f, a: float, b: float, intervals: int = 4000) -> float:
    h = (b - a) / intervals
    return h / 3 * sum((1 if i in (0, intervals) else 4 if i % 2 else 2) * f(a + i * h) for i in range(intervals + 1))


def test_t_quantile_is_exact_at_closed_forms_table_values_and_fractional_degrees_of_freedom():
    """The t quantile behind every interval, checked against what is known independently of its code: the closed
    forms at 1 and 2 degrees of freedom, the printed table (t_0.975: 12.7062 at 1, 2.228139 at 10, 2.144787 at 14 and
    2.131450 at 15, 1.959964 in the normal limit; t_0.80 0.879058 at 10), and at fractional degrees of freedom the
    density integrated numerically (Simpson's rule) up to the quantile, which must give the probability asked for."""
    q = double_drift.t_quantile
    for p in (0.6, 0.8, 0.9, 0.975, 0.995):
        assert q(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
        assert q(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
        assert q(1 - p, 7.5) == pytest.approx(-q(p, 7.5), rel=1e-14)
    assert round(q(0.975, 1), 4) == 12.7062 and round(q(0.975, 10), 6) == 2.228139
    assert round(q(0.975, 14), 6) == 2.144787 and round(q(0.975, 15), 6) == 2.131450
    assert round(q(0.80, 10), 6) == 0.879058
    assert round(q(0.975, math.inf), 6) == 1.959964 and q(0.975, 1e6) == pytest.approx(1.959966, abs=1e-6)
    for p, df in [(0.975, 14.7), (0.975, 18.0), (0.80, 14.7), (0.975, 3.3), (0.975, 0.7)]:
        t = q(p, df)
        assert 0.5 + _simpson(lambda x, df=df: _t_density(x, df), 0.0, t) == pytest.approx(p, abs=1e-10), (p, df)
    assert 2.131450 < q(0.975, 14.7) < 2.144787  # between the table's 15 and 14 degrees of freedom
    with pytest.raises(ValueError, match="0 < p < 1 and df > 0"):
        q(0.975, 0)


def test_welch_df_is_the_exact_welch_satterthwaite_value_neither_capped_nor_rounded():
    """Samples with sample variances exactly 1 (5 values) and 4 (10 values): standard error sqrt(1/5 + 4/10), and
    Welch-Satterthwaite df (0.2 + 0.4)^2 / (0.2^2/4 + 0.4^2/9) = 12.96 exactly; two samples of 10 with equal spread
    give 18, not the 10 a capped table gives; the interval uses the t quantile at those df."""
    def scaled(n: int, sd: float) -> list[float]:
        raw = list(range(n))
        mean, spread = sum(raw) / n, statistics.stdev(raw)
        return [sd * (x - mean) / spread for x in raw]

    a, b = scaled(5, 1.0), [x + 0.5 for x in scaled(10, 2.0)]
    se, df = double_drift.welch_df(a, b)
    assert se == pytest.approx(math.sqrt(0.6), rel=1e-12) and df == pytest.approx(12.96, rel=1e-12)
    mean, half_width = double_drift.difference(a, b)
    assert mean == pytest.approx(-0.5, abs=1e-12)
    assert half_width == pytest.approx(double_drift.t_quantile(0.975, 12.96) * math.sqrt(0.6), rel=1e-12)
    assert 2.160369 < double_drift.t_quantile(0.975, 12.96) < 2.178813  # between the table's 13 and 12 df
    assert double_drift.welch_df(scaled(10, 1.0), scaled(10, 1.0))[1] == pytest.approx(18.0, rel=1e-12)
    assert double_drift.interval(scaled(12, 1.0))[1] == pytest.approx(2.200985 / math.sqrt(12), rel=1e-6)  # 11 df


def test_the_confirmation_pages_welch_intervals_recompute_from_its_csv():
    """docs/double_drift_confirm.md's DiPOD - base row recomputes from docs/double_drift_confirm.csv with the exact
    Welch degrees of freedom (14.7 to 18 there): the drift gap's interval is -0.541 ± 0.518."""
    rows = list(csv.DictReader(open(os.path.join(double_drift_long.DOCS, "double_drift_confirm.csv"))))
    column = "drift gap (last 25%)"
    base = [float(r[column]) for r in rows if r["method"] == "base"]
    dipod = [float(r[column]) for r in rows if r["method"] == "+DiPOD 0.05"]
    assert len(base) == len(dipod) == 10
    mean, half_width = double_drift.difference(dipod, base)
    assert 14.7 < double_drift.welch_df(dipod, base)[1] < 18
    assert f"{mean:.3f} ± {half_width:.3f}" == "-0.541 ± 0.518"
    page = open(os.path.join(double_drift_long.DOCS, "double_drift_confirm.md")).read()
    assert "| DiPOD 0.05 - base | | 0.011 ± 0.019 | -0.541 ± 0.518 |" in page
