#!/usr/bin/env bash
# The one install path: `make demo`, `make test`, CI (.ci/run) and the Docker image all run this script.
#   scripts/install.sh [EXTRAS]     e.g. scripts/install.sh dev   (default: dev)
# Environment:
#   VENV=path        virtual environment to create/use (default: .venv; VENV=none installs into the current Python)
#   TORCH_SPEC=spec  torch requirement installed first (default: torch==2.13.0, a CPU wheel on the build machines;
#                    the CUDA Docker image passes its own). An unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${1:-dev}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ "$VENV" = "none" ]; then
    PY="${PYTHON:-python3}"
else
    if [ ! -x "$VENV/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
fi

# Skip the work when nothing that decides the environment changed since the last successful install.
stamp_key="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$EXTRAS-$TORCH_SPEC"
stamp_file="$("$PY" -c 'import sys; print(sys.prefix)')/.dipod-trl-installed"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_key" ]; then
    echo "dipod-trl: environment up to date ($PY)"
    exit 0
fi

"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "$TORCH_SPEC"
"$PY" -m pip install --quiet -e ".[$EXTRAS]"
"$PY" -c "import dipod_trl, reward_models; print('dipod-trl', dipod_trl.__version__, 'installed in', __import__('sys').prefix)"
echo "$stamp_key" > "$stamp_file"
