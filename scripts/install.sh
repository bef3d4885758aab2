#!/usr/bin/env bash
# Installs jax-musicvae with the torch reference and the dev tools into the current Python
# (or the project virtualenv .venv where the system Python is externally managed).
# torch is pinned so that pip takes the CPU build where one is provided locally.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
"$PYTHON" -m pip install --quiet "torch==2.13.0"
"$PYTHON" -m pip install --quiet -e ".[torch,dev]"
