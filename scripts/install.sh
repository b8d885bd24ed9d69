#!/usr/bin/env bash
# The one install path: `make demo`, `make test`, CI (.ci/run) and the Docker image all run this script.
#   scripts/install.sh [EXTRAS]     e.g. scripts/install.sh dev   (default: dev)
#   scripts/install.sh judge-server  the LLM judge's own vLLM environment instead (scripts/install_judge.sh)
# On a CUDA machine the `gpu` extra (bitsandbytes, for the recipes' 4-bit QLoRA) is added to EXTRAS.
# Environment:
#   VENV=path          virtual environment to create/use (default: .venv; VENV=none installs into the current Python)
#   TORCH_VARIANT=cpu|cuda  which torch 2.13.0 build (default: cuda where `nvidia-smi -L` lists a GPU, cpu elsewhere)
#   TORCH_SPEC=spec    install this torch requirement instead of choosing (e.g. TORCH_SPEC=torch keeps one already
#                      installed)
#   DEPS_ONLY=1        install torch and the dependencies pyproject.toml lists, not the project (needs only
#                      pyproject.toml: the Docker image's dependency layer, cached until they change)
#
# torch 2.13.0 is the version CI tests. PyPI's Linux wheel of it is the CUDA 13 build (torch plus about 3 GB of
# nvidia-* wheels), what a GPU machine wants and a CPU machine does not: there the CPU build `torch==2.13.0+cpu` is
# installed, from a local wheel if pip already finds one (a wheelhouse in pip's find-links, as on the CI machines),
# otherwise from PyTorch's CPU index. macOS and Windows wheels on PyPI are CPU builds already.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = judge-server ]; then
    shift
    exec scripts/install_judge.sh "$@"
fi
EXTRAS="${1:-dev}"
VENV="${VENV:-.venv}"
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
if [ -z "${TORCH_VARIANT:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
        TORCH_VARIANT=cuda
    else
        TORCH_VARIANT=cpu
    fi
fi

if [ "$TORCH_VARIANT" = cuda ] && [[ ",$EXTRAS," != *,gpu,* ]]; then
    EXTRAS="$EXTRAS,gpu"  # QLoRA: the paper recipes load the base model in 4-bit
fi

if [ "$VENV" = "none" ]; then
    PY="${PYTHON:-python3}"
else
    if [ ! -x "$VENV/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "dipod-trl needs Python >= 3.11 (transformers 5 and TRL 1.16 do); $PY is $("$PY" -V 2>&1)." >&2
    echo "Run with PYTHON=python3.11 (or newer), after removing $VENV if it was created with the old one." >&2
    exit 1
fi

# Skip the work when nothing that decides the environment changed since the last successful install.
stamp_key="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$EXTRAS-${TORCH_SPEC:-$TORCH_VARIANT}"
stamp_file="$("$PY" -c 'import sys; print(sys.prefix)')/.dipod-trl-installed"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_key" ]; then
    echo "dipod-trl: environment up to date ($PY)"
    exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
torch_args=("torch==$TORCH_VERSION")
if [ -n "${TORCH_SPEC:-}" ]; then
    torch_args=("$TORCH_SPEC")
elif [ "$TORCH_VARIANT" = cpu ] && [ "$(uname -s)" = Linux ]; then
    torch_args=("torch==$TORCH_VERSION+cpu")
    if ! "$PY" -m pip install --quiet --dry-run --no-deps --no-index "${torch_args[@]}" >/dev/null 2>&1; then
        torch_args+=(--extra-index-url "$TORCH_CPU_INDEX")
    fi
fi
echo "dipod-trl: installing ${torch_args[*]} ($TORCH_VARIANT machine)"
"$PY" -m pip install --quiet "${torch_args[@]}"
if [ "${DEPS_ONLY:-0}" = 1 ]; then
    "$PY" - "$EXTRAS" > "${TMPDIR:-/tmp}/dipod-trl-requirements.txt" <<'PYTHON'
import re, sys, tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras, requirements, todo = set(), list(project["dependencies"]), sys.argv[1].split(",")
while todo:  # extras may name other extras: dipod-trl[control,judge]
    extra = todo.pop()
    if extra and extra not in extras:
        extras.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            own = re.fullmatch(r"dipod-trl\[(.*)\]", requirement)
            todo.extend(own.group(1).split(",")) if own else requirements.append(requirement)
print("\n".join(requirements))
PYTHON
    "$PY" -m pip install --quiet -r "${TMPDIR:-/tmp}/dipod-trl-requirements.txt"
    echo "dipod-trl: dependencies installed in $("$PY" -c 'import sys; print(sys.prefix)') (DEPS_ONLY: not the project)"
    exit 0
fi
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
"$PY" -c "import dipod_trl, reward_models; print('dipod-trl', dipod_trl.__version__, 'installed in', __import__('sys').prefix)"
echo "$stamp_key" > "$stamp_file"
