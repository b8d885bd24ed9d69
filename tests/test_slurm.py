"""The SLURM scripts, run by bash with a fake SLURM on PATH (srun runs the command once per node with that node's
SLURM_NODEID; scontrol expands the node list; accelerate records its arguments): what each node launches."""

import os
import re
import shutil
import stat
import subprocess
import sys
import time

import pytest

from dipod_trl.commands.resolved_values import resolved_values
from dipod_trl.saving.checkpoints import mark_complete, resolve_resume
from tests.helpers.processes import check_shell_script

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


@pytest.mark.parametrize("script", ["train.slurm", "train_multinode.slurm", "launch.sh", "judge.slurm"])
def test_slurm_scripts_pass_bash_syntax_check_and_shellcheck(script):
    check_shell_script(os.path.join(SLURM, script))


@pytest.mark.slow  # each node resolves the recipe with the trainer's parser (imports TRL): several seconds a node
def test_multinode_script_launches_one_accelerate_per_node_with_its_rank(tmp_path):
    launched, _ = run_slurm_script(tmp_path, "train_multinode.slurm", 2, "recipes/paper/fpo_gsm8k.yaml",
                                   "--dipod_beta", "0.1", MAIN_PROCESS_PORT="29611", OUTPUT_DIR=str(tmp_path / "out"))
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
    for step in (50, 400, 1000, 2000):  # numeric order, not text order
        (out / f"checkpoint-{step}").mkdir(parents=True)
        if step != 2000:  # checkpoint-2000 was cut short: no completion marker
            mark_complete(str(out / f"checkpoint-{step}"))
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
    mark_complete(str(tmp_path / "dipod" / "checkpoint-300"))
    baseline = tmp_path / "beta0"
    launched, stdout = run_slurm_script(tmp_path, "train.slurm", 1, str(recipe), "--dipod_beta", "0.0",
                                        "--output_dir", str(baseline))
    assert "resuming" not in stdout and "--resume_from_checkpoint" not in launched[0]
    assert trainer_view(launched[0]) == (str(baseline), None)

    # Requeued after its first checkpoint: the baseline resumes from its own directory, not DiPOD's; OUTPUT_DIR in
    # the environment does not override the command line either.
    (baseline / "checkpoint-100").mkdir(parents=True)
    mark_complete(str(baseline / "checkpoint-100"))
    for folder in ("bin", "record"):
        shutil.rmtree(tmp_path / folder)
    launched, stdout = run_slurm_script(tmp_path, "train.slurm", 1, str(recipe), "--dipod_beta", "0.0",
                                        "--output_dir", str(baseline), OUTPUT_DIR=str(tmp_path / "dipod"))
    assert f"resuming from the newest checkpoint in {baseline}" in stdout
    assert trainer_view(launched[0]) == (str(baseline), str(baseline / "checkpoint-100"))


# The judge job and the training job's wait for it: a stand-in vLLM that serves until told to stop (60 s at most;
# the launch it serves resolves its recipe first), a stand-in curl that records what it was asked and answers as
# CURL_FAILS says, an accelerate that records its environment.
FAKE_VLLM = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_DIR/vllm_args"
printf '%s' "${VLLM_API_KEY:-}" > "$RECORD_DIR/vllm_key"
for _ in $(seq 600); do [ -e "$RECORD_DIR/stop" ] && exit 0; sleep 0.1; done
"""
FAKE_CURL = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$RECORD_DIR/curl"
[ -z "${CURL_FAILS:-}" ]
"""
FAKE_ACCELERATE_ENV = """#!/usr/bin/env bash
printf '%s\\n' "${DIPOD_JUDGE_URL:-}" "${DIPOD_JUDGE_API_KEY:-}" > "$RECORD_DIR/accelerate_env"
"""


def judge_setup(tmp_path):
    bin_dir, record, venv_bin = tmp_path / "bin", tmp_path / "record", tmp_path / ".venv-judge" / "bin"
    for folder in (bin_dir, record, venv_bin):
        folder.mkdir(parents=True)
    scripts = {bin_dir / "srun": FAKE_SRUN, bin_dir / "scontrol": FAKE_SCONTROL, bin_dir / "curl": FAKE_CURL,
               bin_dir / "accelerate": FAKE_ACCELERATE_ENV, venv_bin / "vllm": FAKE_VLLM}
    for path, text in scripts.items():
        path.write_text(text)
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin", "RECORD_DIR": str(record),
           "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "gpu-00",
           "JUDGE_URL_FILE": str(tmp_path / "outputs" / "judge_url"), "OUTPUT_DIR": str(tmp_path / "out"),
           "JUDGE_POLL": "1"}
    return env, record


def run_launch(env, **extra):
    start = time.monotonic()
    result = subprocess.run(["bash", os.path.join(SLURM, "launch.sh"), "recipes/tiny.yaml"], env={**env, **extra},
                            capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - start


def test_the_judge_job_requires_a_new_key_each_time_and_hands_it_to_the_training_job_unprinted(tmp_path):
    env, record = judge_setup(tmp_path)
    url_file = tmp_path / "outputs" / "judge_url"
    key_file = tmp_path / "outputs" / "judge_url.key"
    keys = []
    for _ in range(2):  # two judge jobs
        (record / "stop").unlink(missing_ok=True)
        job = subprocess.Popen(["bash", os.path.join(SLURM, "judge.slurm"), "judge-model", "--max-model-len", "4096"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(100):
                if url_file.exists():
                    break
                time.sleep(0.1)
            key = key_file.read_text().strip()
            assert len(key) == 64 and int(key, 16) >= 0  # 32 random bytes
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert (record / "vllm_key").read_text() == key  # vLLM reads VLLM_API_KEY as its --api-key
            vllm_args = (record / "vllm_args").read_text().splitlines()
            assert vllm_args[:6] == ["serve", "judge-model", "--host", "0.0.0.0", "--port", "8000"]
            assert vllm_args[6:] == ["--max-model-len", "4096"] and key not in vllm_args  # not listed by `ps`
            assert url_file.read_text().strip().endswith(":8000/v1")

            launched, _ = run_launch(env)
            assert launched.returncode == 0, launched.stderr
            url, handed = (record / "accelerate_env").read_text().splitlines()
            assert (url, handed) == (url_file.read_text().strip(), key)
            assert key not in launched.stdout + launched.stderr
            assert key not in (record / "curl").read_text()
            assert "/health" in (record / "curl").read_text()  # the readiness check needs no key
        finally:
            (record / "stop").touch()
            output = job.communicate(timeout=30)[0]
        assert job.returncode == 0, output
        assert key not in output
        assert not url_file.exists() and not key_file.exists()  # gone with the job
        keys.append(key)
    assert keys[0] != keys[1]


@pytest.mark.parametrize("url_written", [False, True])
def test_launch_gives_up_on_a_judge_that_never_comes_up(tmp_path, url_written):
    env, record = judge_setup(tmp_path)
    if url_written:  # the file is there, but nothing answers at its address
        (tmp_path / "outputs").mkdir()
        (tmp_path / "outputs" / "judge_url").write_text("http://gpu-07:8000/v1\n")
    result, elapsed = run_launch(env, JUDGE_WAIT="2", CURL_FAILS="1")
    assert result.returncode == 1
    assert 1 <= elapsed < 8  # bash counts whole seconds
    state = "there, but the server at its URL does not answer" if url_written else "not written"
    assert f"no judge came up in 2s: {env['JUDGE_URL_FILE']} is {state}" in result.stderr
    assert "Set JUDGE_WAIT to wait longer" in result.stderr
    assert not (record / "accelerate_env").exists()  # training never started


# A stand-in accelerate that runs the trainer in this process (one process, no launcher), and one that does the same
# but gets SIGTERM from the scheduler while the run writes its first checkpoint's optimizer.pt.
RUN_TRAINER = """#!/usr/bin/env bash
while [ "$1" != "-m" ]; do shift; done  # accelerate's own options
shift 2  # -m dipod_trl
exec python -c "$TRAINER" "$@"
"""
TRAINER = "import sys\nfrom dipod_trl.commands import cli\ncli.main(sys.argv[1:])\n"
TERMINATED_TRAINER = ("import signal, sys\nfrom dipod_trl.commands import cli\n"
                      "from tests.helpers.processes import kill_when_saving\n"
                      "sys.setprofile(kill_when_saving('checkpoint-2', 'optimizer.pt', sig=signal.SIGTERM))\n"
                      "cli.main(sys.argv[1:])\n")


@pytest.mark.slow  # two real tiny runs, each importing TRL
def test_a_job_terminated_during_its_first_checkpoint_starts_afresh_when_requeued(tmp_path):
    from dipod_trl.saving.checkpoints import checkpoint_problem

    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("accelerate", RUN_TRAINER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.path.dirname(sys.executable)}:/usr/bin:/bin", "SLURM_SUBMIT_DIR": ROOT,
           "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_NODELIST": "gpu-00",
           "OUTPUT_DIR": str(out), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    job = ["bash", os.path.join(SLURM, "train.slurm"), "recipes/tiny.yaml", "--model_name_or_path", "tiny",
           "--per_device_train_batch_size", "8", "--num_generations", "4", "--drift_num_orders", "0",
           "--disable_tqdm", "true", "--save_steps", "2", "--max_steps", "3"]

    killed = subprocess.run(job, env={**env, "TRAINER": TERMINATED_TRAINER}, capture_output=True, text=True, cwd=ROOT)
    assert killed.returncode != 0
    assert "did not finish" in checkpoint_problem(str(out / "checkpoint-2"))  # cut short, nothing complete

    requeued = subprocess.run(job, env={**env, "TRAINER": TRAINER}, capture_output=True, text=True, cwd=ROOT)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert re.search(r"holds only what a run cut short before its first complete checkpoint writes \([^)]*"
                     r"checkpoint-2[^)]*\): starting the run afresh", requeued.stderr), requeued.stderr[-3000:]
    assert checkpoint_problem(str(out / "checkpoint-2")) is None and (out / "model.safetensors").is_file()
    with open(out / "checkpoint-2" / "trainer_state.json") as f:
        assert '"global_step": 2' in f.read()
