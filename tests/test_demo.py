"""The demo end to end at a small size: it writes curves.png, summary.json and the checkpoints it reports, for both
parts (the steady recipe, FPO vs FPO + DiPOD, then the drift regime)."""

import json
import os

import pytest

from dipod_trl.commands.demo import DemoConfig, run_demo


def test_demo_writes_curves_summary_and_checkpoints(tmp_path, capsys):
    config = DemoConfig(output_dir=str(tmp_path), seeds=[0], sft_steps=60, generation_batches=2,
                        recipe_generation_batches=3, num_eval_examples=32)
    summary = run_demo(config)
    assert os.path.getsize(tmp_path / "curves.png") > 10_000
    saved = json.loads((tmp_path / "summary.json").read_text())
    base = config.objective.upper()
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [(base, 0), (f"{base}+DiPOD", 0)]
    for run in saved["runs"]:
        # one logged step per generation batch, each optimised for num_iterations steps
        assert run["step"] == [1, 1 + config.num_iterations] and len(run["reward"]) == 2
        assert 0.0 <= run["accuracy"] <= 1.0
        assert os.path.isfile(os.path.join(run["path"], "model.safetensors"))
    assert saved["runs"][1]["dipod_beta"] == config.dipod_beta > 0 and saved["runs"][0]["dipod_beta"] == 0.0
    # the first part: FPO vs FPO + DiPOD with the steady recipe's 2 inner iterations, its checkpoints apart
    assert [(r["method"], r["seed"], r["dipod_beta"]) for r in saved["recipe_runs"]] == [
        ("FPO", 0, 0.0), ("FPO+DiPOD", 0, config.dipod_beta)]
    for run in saved["recipe_runs"]:
        assert run["step"] == [1, 3, 5] and 0.0 <= run["accuracy"] <= 1.0
        assert os.path.isfile(os.path.join(tmp_path, "recipe", os.path.basename(run["path"]), "model.safetensors"))
    assert summary["sft_accuracy"] == saved["sft_accuracy"]
    out = capsys.readouterr().out
    assert f"{base}+DiPOD    mean over 1 seeds" in out and "curves.png" in out
    assert "FPO+DiPOD    held-out accuracy" in out


def test_bad_demo_settings_are_refused_before_any_training():
    with pytest.raises(ValueError, match="objective: the demo compares 'fpo' or 'spg'"):
        DemoConfig(objective="grpo")
    with pytest.raises(ValueError, match="generation_batches must be >= 1"):
        DemoConfig(generation_batches=0)
    with pytest.raises(ValueError, match="recipe_generation_batches must be >= 0"):
        DemoConfig(recipe_generation_batches=-1)
