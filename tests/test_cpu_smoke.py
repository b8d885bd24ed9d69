"""recipes/cpu_smoke.sh: the flagship recipe (recipes/gsm8k.yaml, the paper's FPO + DiPOD GSM8K run), as written,
for two optimizer steps on a CPU (no bf16, no 4-bit, no evaluation, tiny lengths, the built-in tiny model), with a
local copy of the task's data."""

import ast
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a training process: about 10 s of CPU, more on a busy machine
def test_cpu_smoke_runs_the_flagship_recipe_for_two_steps(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"Tom has {i} apples and buys 3 more. How many now?", "answer": f"#### {i + 3}"}
            for i in range(8)]
    data.write_text("\n".join(map(json.dumps, rows)))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": ROOT}
    result = subprocess.run(
        ["bash", "recipes/cpu_smoke.sh", "recipes/gsm8k.yaml", "--dataset_source", str(data),
         "--output_dir", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = [ast.literal_eval(match) for match in re.findall(r"\{'loss'.*?\}", result.stdout + result.stderr)]
    assert len(logs) == 2 and all(math.isfinite(float(log["loss"])) for log in logs)
    assert all("dipod/term" in log for log in logs)  # the recipe's objective: FPO with DiPOD's term
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()  # the recipe's LoRA, on the tiny model
    assert "`objective`: `fpo`, `dipod_beta`: 0.05" in (tmp_path / "run" / "README.md").read_text()
