"""Output directories: a second run into a used output_dir is refused unless it resumes or overwrites, two runs never
write at once, and `--resume_from_checkpoint true` continues from the last checkpoint there (also with LoRA)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dipod_trl.commands import cli
from dipod_trl.commands.control import main as control_main
from tests.helpers.trainers import FAST, TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def train(out, *extra):
    return cli.main(["train", TINY, "--output_dir", str(out), *FAST, *extra])


def test_a_second_run_into_a_used_output_dir_is_refused_unless_it_resumes_or_overwrites(tmp_path):
    first = train(tmp_path, "--max_steps", "1")
    assert first.state.global_step == 1
    saved = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="is not empty .*--resume_from_checkpoint true.*--overwrite_output_dir"):
        train(tmp_path, "--max_steps", "1")
    assert sorted(os.listdir(tmp_path)) == saved  # nothing written by the refused run
    resumed = train(tmp_path, "--max_steps", "2", "--resume_from_checkpoint", "true")
    assert resumed.state.global_step == 2 and os.path.isdir(tmp_path / "checkpoint-2")
    overwritten = train(tmp_path, "--max_steps", "1", "--overwrite_output_dir", "true")
    assert overwritten.state.global_step == 1


def test_a_run_into_an_output_dir_another_run_is_writing_to_stops(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom dipod_trl.commands.output_dir import claim_output_dir\n"
         "with claim_output_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"another run \(process {holder.pid}\) is writing to"):
            train(tmp_path, "--max_steps", "1", "--resume_from_checkpoint", "false")
    finally:
        holder.kill()
        holder.wait()
    assert train(tmp_path, "--max_steps", "1", "--overwrite_output_dir", "true").state.global_step == 1


def test_lora_from_the_command_line_trains_and_resumes_exactly(tmp_path):
    """`--use_peft true` with TRL's default lora_task_type (CAUSAL_LM) and no target modules."""
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "1e-2"]
    full = train(tmp_path / "full", "--max_steps", "3", *lora)
    assert type(full.model).__name__ == "PeftModel"
    adapters = load_file(tmp_path / "full" / "adapter_model.safetensors")
    assert any("lora_B" in name and weights.abs().sum() > 0 for name, weights in adapters.items())
    interrupted = tmp_path / "interrupted"
    train(interrupted, "--max_steps", "3", *lora)
    # As if stopped after the checkpoint at step 1, inside a generation cycle (tiny.yaml: num_iterations 2).
    for name in ("checkpoint-2", "checkpoint-3"):
        shutil.rmtree(interrupted / name)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        os.remove(interrupted / name)
    resumed = train(interrupted, "--max_steps", "3", "--resume_from_checkpoint", "true", *lora)
    assert resumed.state.global_step == 3
    again = load_file(interrupted / "adapter_model.safetensors")
    assert again.keys() == adapters.keys()
    for name, weights in adapters.items():
        assert torch.equal(weights, again[name]), name


def test_a_resume_with_other_lora_adapters_is_refused_naming_them_and_a_new_scale_is_applied_and_recorded(tmp_path):
    lora = ["--use_peft", "true", "--lora_alpha", "8"]
    train(tmp_path, "--max_steps", "1", *lora, "--lora_r", "4")
    resume = ["--max_steps", "2", "--resume_from_checkpoint", "true"]
    with pytest.raises(ValueError, match=r"holds LoRA adapters with r 4 \(this run's: 8\): they cannot load"):
        train(tmp_path, *resume, *lora, "--lora_r", "8")
    with pytest.raises(ValueError, match=r"holds LoRA adapters with target_modules .*layers\.0\.up.* \(this run's: "
                                         r"\[[^]]*qkv[^]]*\]\)"):
        train(tmp_path, *resume, *lora, "--lora_r", "4", "--lora_target_modules", "qkv", "out")
    with pytest.raises(ValueError, match=r"holds LoRA adapters \(r=4\) and this run trains the full model\. Resume "
                                         r"with the run's LoRA settings \(--use_peft true --lora_r 4"):
        train(tmp_path, *resume)
    assert not os.path.exists(tmp_path / "checkpoint-2")
    with pytest.warns(UserWarning, match=r"changed settings: lora\.lora_alpha 8 -> 16\."):
        resumed = train(tmp_path, *resume, "--use_peft", "true", "--lora_alpha", "16", "--lora_r", "4")
    assert resumed.state.global_step == 2
    assert resumed.model.peft_config["default"].lora_alpha == 16
    with open(tmp_path / "dipod_run.json") as f:
        assert json.load(f)["changes"][-1]["changes"] == {"lora.lora_alpha": [8, 16]}


def test_a_resume_with_lora_over_full_weights_is_refused(tmp_path):
    train(tmp_path, "--max_steps", "1")
    with pytest.raises(ValueError, match=r"holds full model weights and this run trains LoRA adapters\. Resume "
                                         r"without use_peft"):
        train(tmp_path, "--max_steps", "2", "--resume_from_checkpoint", "true", "--use_peft", "true")


CONTROL = [os.path.join(ROOT, "recipes", "control", "pendulum.yaml"), "--total_timesteps", "64", "--num_envs", "2",
           "--num_steps", "32", "--num_minibatches", "2", "--update_epochs", "1", "--num_cfm_samples", "4",
           "--eval_episodes", "2", "--save_every", "1"]


def test_control_refuses_a_used_output_dir_and_resumes_from_the_last_checkpoint(tmp_path):
    control_main([*CONTROL, "--output_dir", str(tmp_path)])
    with open(tmp_path / "metrics.jsonl") as f:
        before = f.read()
    with pytest.raises(FileExistsError, match="is not empty"):
        control_main([*CONTROL, "--output_dir", str(tmp_path)])
    with open(tmp_path / "metrics.jsonl") as f:
        assert f.read() == before  # not truncated
    result = control_main([*CONTROL, "--output_dir", str(tmp_path), "--total_timesteps", "128",
                           "--resume_from_checkpoint", "true"])
    assert result["env_steps"] == 128
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["update"] for line in f] == [0, 1, 2]
