"""`dipod eval`: records reused only by the run that wrote them, clear errors, d1/project scoring plans, and the
checkpoint sweep (table, plot, d1's files; resumable; sharded over processes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from dipod_trl.commands import cli
from dipod_trl.evaluation.evaluator import default_output, scoring_plan, summarise
from dipod_trl.evaluation.records import repair_partial_line
from dipod_trl.models import build_tiny_model, build_tiny_tokenizer
from dipod_trl.tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "recipes")
TINY = ["--task", "digit_sort", "--gen_length", "8", "--block_length", "4", "--batch_size", "32"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """`dipod sft recipes/tiny_sft.yaml` saving every 40 steps: checkpoint-40/80/120 and the final model."""
    out = str(tmp_path_factory.mktemp("sft_run"))
    cli.main(["sft", os.path.join(RECIPES, "tiny_sft.yaml"), "--output_dir", out, "--save_strategy", "steps",
              "--save_steps", "40", "--disable_tqdm", "true"])
    return out


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A freshly initialised tiny model: it sorts nothing."""
    out = str(tmp_path_factory.mktemp("untrained"))
    tokenizer = build_tiny_tokenizer()
    build_tiny_model(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lines_of(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_two_models_evaluated_into_one_file_report_their_own_accuracies(sft_run, untrained, tmp_path):
    shared = str(tmp_path / "eval.jsonl")
    trained = cli.main(["eval", "--model", sft_run, *TINY, "--num_examples", "32", "--output", shared])
    other = cli.main(["eval", "--model", untrained, *TINY, "--num_examples", "32", "--output", shared])
    alone = cli.main(["eval", "--model", untrained, *TINY, "--num_examples", "32",
                      "--output", str(tmp_path / "alone.jsonl")])
    assert trained["accuracy"] > 0.3 and alone["accuracy"] == 0.0  # the two models differ, by construction
    assert other == alone  # not the trained model's records
    assert {r["setup"]["model"] for r in lines_of(shared)} == {os.path.abspath(sft_run), os.path.abspath(untrained)}
    # Left to their defaults, the two models' records go to different files, as do two hub ids.
    assert default_output(sft_run, "gsm8k", "test", "k") != default_output(untrained, "gsm8k", "test", "k")
    assert default_output("org/a", "gsm8k", "test", "k") != default_output("org/b", "gsm8k", "test", "k")


def test_other_sampler_settings_do_not_reuse_records(sft_run, tmp_path):
    shared = str(tmp_path / "eval.jsonl")
    greedy = cli.main(["eval", "--model", sft_run, *TINY, "--num_examples", "32", "--output", shared])
    hot = ["--temperature", "3", "--steps", "2"]
    sampled = cli.main(["eval", "--model", sft_run, *TINY, *hot, "--num_examples", "32", "--output", shared])
    fresh = cli.main(["eval", "--model", sft_run, *TINY, *hot, "--num_examples", "32",
                      "--output", str(tmp_path / "fresh.jsonl")])
    assert sampled == fresh and sampled["accuracy"] < greedy["accuracy"] - 0.2
    assert len(lines_of(shared)) == 64  # both runs' records, side by side


def test_a_smaller_num_examples_summarises_only_its_examples_without_generating(sft_run, tmp_path):
    output = str(tmp_path / "eval.jsonl")
    cli.main(["eval", "--model", sft_run, *TINY, "--num_examples", "32", "--output", output])
    records = lines_of(output)
    small = cli.main(["eval", "--model", sft_run, *TINY, "--num_examples", "8", "--output", output])
    assert small["num_examples"] == 8
    assert small["accuracy"] == sum(r["scores"]["project"][0] for r in records[:8]) / 8
    assert len(lines_of(output)) == 32  # nothing generated again


def test_a_partial_last_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"index": 0}\n{"index": 1, "gen')
    repair_partial_line(str(path))
    assert path.read_text() == '{"index": 0}\n'
    repair_partial_line(str(path))  # a whole file stays as it is
    assert path.read_text() == '{"index": 0}\n'


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch_size", "0"], "batch_size must be at least 1"),
        (["--num_generations", "0"], "num_generations must be at least 1"),
        (["--checkpoints", "x"], "either --model .* or --checkpoints"),
        (["--scoring", "d2"], "scoring must be one of"),
        (["--scoring", "d1"], "digit_sort has no d1 scoring"),
        (["--output_dir", "x"], "--output_dir is the folder of a --checkpoints sweep"),
    ],
)
def test_bad_eval_arguments_are_clear_errors(untrained, extra, message):
    with pytest.raises(ValueError, match=message):
        cli.main(["eval", "--model", untrained, *TINY, "--num_examples", "2", *extra])


def test_scoring_plans_use_d1_prompts_and_d1s_cell_weighting():
    sudoku = get_task("sudoku")
    scorers, weights, style = scoring_plan(sudoku, "both", None)
    assert list(scorers) == ["project", "d1"] and style == "d1_eval"
    assert scoring_plan(sudoku, "project", None)[2] == "project"
    assert scoring_plan(sudoku, "both", "project")[2] == "project"
    # d1's Sudoku figure is correct cells over empty cells, summed: 3 of 4 and 0 of 15 make 3/19, not 0.375.
    puzzles = {"a": "1234341221430000", "b": "1000000000000000"}
    records = [{"scores": {"d1": [0.75]}, "weights": {"d1": weights["d1"]({"puzzle": puzzles["a"]})}},
               {"scores": {"d1": [0.0]}, "weights": {"d1": weights["d1"]({"puzzle": puzzles["b"]})}}]
    assert summarise(records, ["d1"], 1)["accuracy_d1"] == pytest.approx((0.75 * 4) / (4 + 15))


def test_checkpoint_sweep_writes_table_plot_and_d1_files_and_resumes_without_loading(sft_run, tmp_path):
    out = str(tmp_path / "sweep")
    argv = ["eval", "--checkpoints", os.path.join(sft_run, "checkpoint-*"), "--task", "digit_sort",
            "--gen_length", "8", "16", "--block_length", "4", "--num_examples", "32", "--batch_size", "32",
            "--output_dir", out]
    rows = cli.main(argv)
    assert [(r["step"], r["gen_length"], r["steps"]) for r in rows] == [
        (s, n, n // 2) for s in (40, 80, 120) for n in (8, 16)
    ]
    with open(os.path.join(out, "summary.csv")) as f:
        table = list(csv.DictReader(f))
    assert [float(r["accuracy_project"]) for r in table] == [r["accuracy_project"] for r in rows]
    best = max(rows[4:], key=lambda r: r["accuracy_project"])  # length 8 and 16 at step 120
    assert "best at gen_length" in open(os.path.join(out, "summary.md")).read()
    with open(os.path.join(out, "accuracy_vs_step.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    name = f"digit_sort_{os.path.basename(sft_run)}_checkpoint-120_8_4_0_generations.json"
    d1_file = json.load(open(os.path.join(out, name)))
    assert d1_file["gen_length"] == 8 and d1_file["diffusion_steps"] == 4 and len(d1_file["generations"]) == 32
    assert set(d1_file["generations"][0]) == {"question", "prompt_input", "generations", "ground_truth"}
    # The sweep's figure for a checkpoint is what `dipod eval --model` gives it.
    single = cli.main(["eval", "--model", os.path.join(sft_run, "checkpoint-120"), *TINY, "--num_examples", "32",
                       "--output", str(tmp_path / "single.jsonl")])
    assert single["accuracy"] == rows[4]["accuracy_project"] and best["accuracy_project"] > 0.3
    single_d1 = json.load(open(tmp_path / "single_generations.json"))  # d1's layout beside the records
    assert single_d1["generations"] == d1_file["generations"]

    def must_not_load(path, trust_remote_code):
        raise AssertionError(f"{path} was loaded again although its records are complete")

    from dipod_trl.commands.eval_arguments import EvalArguments
    from dipod_trl.commands.recipe import parse_recipe
    from dipod_trl.evaluation import run_sweep

    (args,) = parse_recipe([EvalArguments], argv[1:])
    assert run_sweep(args, must_not_load) == rows


@pytest.mark.slow
def test_a_sweep_sharded_over_two_processes_equals_one_process(sft_run, tmp_path):
    common = ["eval", "--checkpoints", os.path.join(sft_run, "checkpoint-80"), os.path.join(sft_run, "checkpoint-120"),
              "--task", "digit_sort", "--gen_length", "8", "--block_length", "4", "--num_examples", "40",
              "--batch_size", "1"]
    # Both sides run one prompt per forward and one thread per process, so that they differ only in how the prompts
    # are sharded: other batch compositions or thread counts change float32 reductions, and with them near-tied
    # greedy choices of a briefly trained model.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    alone = [sys.executable, "-m", "dipod_trl", *common, "--output_dir", str(tmp_path / "one")]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              os.path.join(RECIPES, "accelerate", "cpu2.yaml"), "-m", "dipod_trl", *common,
              "--output_dir", str(tmp_path / "two")]
    for command in (alone, launch):
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (list(csv.DictReader(open(tmp_path / side / "summary.csv"))) for side in ("one", "two"))
    assert len(one) == 2 and [r["accuracy_project"] for r in two] == [r["accuracy_project"] for r in one]
    merged = lines_of(tmp_path / "two" / "records" / f"{os.path.basename(sft_run)}_checkpoint-120_8.jsonl")
    assert [r["index"] for r in merged[:3]] == [0, 2, 4]  # each process generated its own half, then merged
    assert sorted(r["index"] for r in merged) == list(range(40))


def test_a_sweep_over_adapter_only_checkpoints_scores_each_adapter(sft_run, tmp_path):
    """LoRA runs save adapters only: each checkpoint loads as base + its adapters and is scored as itself."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dipod_trl.models import load_diffusion_model

    run = tmp_path / "lora_run"
    for step, seed in ((10, 0), (20, 1)):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "out", "up", "down"], init_lora_weights=False)
        get_peft_model(load_diffusion_model(sft_run), config).save_pretrained(str(run / f"checkpoint-{step}"))
    assert not (run / "checkpoint-10" / "config.json").exists()  # adapters only
    rows = cli.main(["eval", "--checkpoints", str(run / "checkpoint-*"), *TINY, "--num_examples", "24",
                     "--output_dir", str(tmp_path / "sweep")])
    for row in rows:
        single = cli.main(["eval", "--model", row["checkpoint"], *TINY, "--num_examples", "24",
                           "--output", str(tmp_path / f"single_{row['step']}.jsonl")])
        assert single["accuracy"] == row["accuracy_project"]
    generations = [[r["generations"] for r in lines_of(tmp_path / "sweep" / "records" / f"lora_run_checkpoint-{s}_8"
                                                          ".jsonl")] for s in (10, 20)]
    assert generations[0] != generations[1]  # two different adapters, two different sets of completions


def test_d1_subset_draws_d1s_rows_of_countdown_and_sudoku_only(tmp_path):
    import numpy as np

    from dipod_trl.evaluation import d1_subset
    from dipod_trl.tasks import load_task

    puzzles = load_task("sudoku", split="test", num_puzzles=300)
    chosen = d1_subset(puzzles, "sudoku")
    np.random.seed(42)  # d1's eval.py: init_seed(42), then the dataset's np.random.choice
    assert chosen["puzzle"] == [puzzles["puzzle"][i] for i in np.random.choice(300, 256, replace=False)]
    digits = load_task("digit_sort", split="test", num_examples=300)
    assert d1_subset(digits, "digit_sort")["answer"] == digits["answer"]  # d1 draws no subset of other tasks
    with pytest.raises(ValueError, match="d1 draws 256 sudoku rows, but the dataset has 10"):
        d1_subset(puzzles.select(range(10)), "sudoku")
