#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv and installs recbole-pcl into it.
#   VENV=path      where the environment lives (default .venv)
#   PYTHON=python3 the interpreter that creates it (3.10 or 3.11 for CPU; see README for 3.12/CUDA)
#   TORCH_SPEC     the torch requirement installed first (default torch==2.13.0, the CPU build);
#                  set TORCH_SPEC="" when torch is already installed (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-torch==2.13.0}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.recbole-pcl-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt requirements.txt ] && [ "$stamp" -nt setup.py ]; then
  # Environment is current; refresh our own package only (cheap).
  $PIP install -q --no-deps . && exit 0
fi
if [ -n "$TORCH_SPEC" ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install -q "$TORCH_SPEC"
fi
$PIP install -q -r requirements.txt -r requirements-dev.txt
# recbole 1.2.1 pins ray<=2.6.3; its real requirements are in requirements.txt (with a current Ray).
$PIP install -q --no-deps "recbole==1.2.1"
$PIP install -q --no-deps .
touch "$stamp"
