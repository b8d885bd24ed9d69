"""The install scripts, run by bash: which extras `scripts/install.sh` installs on a CUDA machine (its pip commands
recorded by a stand-in interpreter), and the judge's own environment (`scripts/install_judge.sh --dry-run`)."""

import os
import subprocess
import sys

import pytest

from tests.helpers.processes import check_shell_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")

# A virtual environment whose python records every `-m pip` command, answers with its own prefix (where install.sh
# writes its up-to-date stamp) when asked for it or for the installed package, and runs the version check with the
# real interpreter; it imports nothing.
RECORDING_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then printf '%s\\n' "$*" >> "$PIP_RECORD"; exit 0; fi
if [[ "$2" == *sys.prefix* || "$2" == *"import dipod_trl"* ]]; then cd "$(dirname "$0")/.." && pwd; exit 0; fi
exec "$REAL_PYTHON" "$@"
"""


def run_script(name, *args, **env):
    env = {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", **env}
    return subprocess.run(["bash", os.path.join(SCRIPTS, name), *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("script", ["install.sh", "install_judge.sh"])
def test_install_scripts_pass_bash_syntax_check_and_shellcheck(script):
    check_shell_script(os.path.join(SCRIPTS, script))


@pytest.mark.parametrize("variant, extras", [("cuda", ".[dev,gpu]"), ("cpu", ".[dev]")])
def test_install_adds_the_gpu_extra_on_a_cuda_machine_only(tmp_path, variant, extras):
    venv, record = tmp_path / "venv", tmp_path / "pip.txt"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(RECORDING_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    result = run_script("install.sh", "dev", VENV=str(venv), TORCH_VARIANT=variant, TORCH_SPEC="torch",
                        PIP_RECORD=str(record), REAL_PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    installs = [line for line in record.read_text().splitlines() if " -e " in line]
    assert installs == [f"-m pip install --quiet -e {extras}"]
    # the up-to-date stamp goes into that environment's own prefix
    assert (venv / ".dipod-trl-installed").read_text().endswith(f"-{extras[2:-1]}-torch\n")


def test_judge_install_dry_run_prints_a_vllm_install_into_its_own_environment(tmp_path):
    venv = tmp_path / "judge"
    result = run_script("install_judge.sh", "--dry-run", "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"+ python3 -m venv {venv}" in lines
    assert f"+ {venv}/bin/python -m pip install --quiet vllm==0.33.0" in lines
    assert not venv.exists()  # a dry run creates nothing
    # the trainer's install script hands `judge-server` over, options and all; the environment variables work too
    result = run_script("install.sh", "judge-server", "--dry-run", "--vllm", "vllm==0.34.1", JUDGE_VENV=str(venv))
    assert result.returncode == 0, result.stderr
    assert f"+ {venv}/bin/python -m pip install --quiet vllm==0.34.1" in result.stdout.splitlines()


@pytest.mark.parametrize("args, message", [
    (["--venv"], "--venv needs a path"),
    (["--verbose"], "unknown argument '--verbose'"),
    (["--venv", ".venv"], "is the trainer's environment"),
])
def test_judge_install_refuses_bad_arguments_with_the_usage(args, message):
    result = run_script("install_judge.sh", "--dry-run", *args)
    assert result.returncode != 0 and message in result.stderr
