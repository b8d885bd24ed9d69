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
