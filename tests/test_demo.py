"""The demo end to end at a small size: it writes curves.png, summary.json and the checkpoints it reports."""

import json
import os

from dipod_trl.demo import DemoConfig, run_demo


def test_demo_writes_curves_summary_and_checkpoints(tmp_path, capsys):
    config = DemoConfig(output_dir=str(tmp_path), seeds=[0], sft_steps=60, rl_steps=4, num_eval_examples=32)
    summary = run_demo(config)
    assert os.path.getsize(tmp_path / "curves.png") > 10_000
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [("FPO", 0), ("FPO+DiPOD", 0)]
    for run in saved["runs"]:
        assert run["step"] == [1, 3] and len(run["reward"]) == 2  # generation steps (two inner iterations each)
        assert 0.0 <= run["accuracy"] <= 1.0
        assert os.path.isfile(os.path.join(run["path"], "model.safetensors"))
    assert saved["runs"][1]["dipod_beta"] == 0.05 and saved["runs"][0]["dipod_beta"] == 0.0
    assert summary["sft_accuracy"] == saved["sft_accuracy"]
    out = capsys.readouterr().out
    assert "FPO+DiPOD    mean over 1 seeds" in out and "curves.png" in out
